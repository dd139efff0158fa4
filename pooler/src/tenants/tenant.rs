//! One loaded tenant: its document plus what the pooler derives from it once per load.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pgfleet_crds::{PoolMode, TenantDocument, UserDocument};

use crate::auth::scram::ScramSecret;
use crate::pool::PoolConfig;
use crate::server::UpstreamCredentials;

/// A `users[]` entry with its SCRAM verifier derived once (PBKDF2 never runs per login).
pub struct TenantUser {
    /// The entry as written.
    pub doc: UserDocument,
    /// Verifier for client logins, from a random salt.
    pub verifier: Arc<ScramSecret>,
    /// Upstream credentials; the same `Arc` across reloads while the password is unchanged,
    /// so pools keep their connections.
    pub credentials: Arc<UpstreamCredentials>,
}

/// An auth-query result, cached per role.
#[derive(Clone)]
pub struct CachedSecret {
    /// `None` when the role does not exist or has no password.
    pub secret: Option<SecretKind>,
    /// When it was fetched.
    pub fetched: Instant,
}

/// What `rolpassword` held.
#[derive(Clone)]
pub enum SecretKind {
    /// A SCRAM-SHA-256 verifier: usable.
    Scram(Arc<ScramSecret>),
    /// An MD5 hash: refused with a clear error.
    Md5,
    /// Something else (plain text or unknown): refused.
    Unsupported,
}

/// State that outlives reloads of the same tenant: client counts and auth-query caches.
#[derive(Default)]
pub struct TenantRuntime {
    /// Clients logged in or logging in.
    pub clients: AtomicU32,
    /// Clients per user.
    pub user_clients: Mutex<HashMap<String, u32>>,
    /// Auth-query secrets per role.
    pub secrets: Mutex<HashMap<String, CachedSecret>>,
    /// Passthrough credentials per auth-query role (the recovered ClientKey lives here).
    pub passthrough: Mutex<HashMap<String, Arc<UpstreamCredentials>>>,
}

impl TenantRuntime {
    /// The passthrough credentials for an auth-query role, created on first use.
    pub fn passthrough_credentials(&self, role: &str) -> Arc<UpstreamCredentials> {
        Arc::clone(
            self.passthrough
                .lock()
                .entry(role.to_string())
                .or_insert_with(|| Arc::new(UpstreamCredentials::passthrough())),
        )
    }
}

/// Auth-query settings with the auth user's credentials.
pub struct AuthQuerySettings {
    /// The auth user.
    pub user: String,
    /// Its credentials (shared across reloads while unchanged).
    pub credentials: Arc<UpstreamCredentials>,
    /// The SQL.
    pub query: String,
}

/// How long an auth-query secret is trusted before a login re-fetches it.
pub const SECRET_TTL: Duration = Duration::from_secs(30);
/// A wrong password re-fetches the secret at most this often per role (password rotation).
pub const SECRET_REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(2);

/// One loaded tenant.
pub struct Tenant {
    /// External id.
    pub id: Arc<str>,
    /// The document.
    pub doc: TenantDocument,
    /// Content hash of the document: equal revisions mean nothing changed.
    pub revision: u64,
    /// `users[]` by name.
    pub users: HashMap<String, TenantUser>,
    /// Auth query, if configured.
    pub auth_query: Option<AuthQuerySettings>,
    /// Upstream host, shared by pool configs.
    pub host: Arc<str>,
    /// State kept across reloads.
    pub runtime: Arc<TenantRuntime>,
}

/// The content hash of a document.
pub fn revision_of(doc: &TenantDocument) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(doc).unwrap_or_default().hash(&mut h);
    h.finish()
}

impl Tenant {
    /// Builds a tenant, reusing what `previous` derived for unchanged passwords. Runs PBKDF2 for
    /// new passwords: call it on a blocking thread.
    pub fn build(
        doc: TenantDocument,
        previous: Option<&Tenant>,
        runtime: Arc<TenantRuntime>,
    ) -> Tenant {
        let users = doc
            .users
            .iter()
            .map(|u| {
                let reused = previous
                    .and_then(|p| p.users.get(&u.name))
                    .filter(|old| old.doc.password == u.password);
                let (verifier, credentials) = match reused {
                    Some(old) => (Arc::clone(&old.verifier), Arc::clone(&old.credentials)),
                    None => (
                        Arc::new(ScramSecret::generate(&u.password)),
                        Arc::new(UpstreamCredentials::password(Arc::from(
                            u.password.as_str(),
                        ))),
                    ),
                };
                let user = TenantUser {
                    doc: u.clone(),
                    verifier,
                    credentials,
                };
                (u.name.clone(), user)
            })
            .collect();
        let auth_query = doc.auth_query.as_ref().map(|aq| {
            let credentials = previous
                .and_then(|p| p.auth_query.as_ref())
                .filter(|old| {
                    old.user == aq.user && old.credentials_password() == Some(aq.password.as_str())
                })
                .map(|old| Arc::clone(&old.credentials))
                .unwrap_or_else(|| {
                    Arc::new(UpstreamCredentials::password(Arc::from(
                        aq.password.as_str(),
                    )))
                });
            AuthQuerySettings {
                user: aq.user.clone(),
                credentials,
                query: aq.query.clone(),
            }
        });
        if previous
            .is_some_and(|p| p.doc.upstream != doc.upstream || p.doc.auth_query != doc.auth_query)
        {
            runtime.secrets.lock().clear();
        }
        Tenant {
            id: Arc::from(doc.external_id.as_str()),
            revision: revision_of(&doc),
            host: Arc::from(doc.upstream.host.as_str()),
            users,
            auth_query,
            doc,
            runtime,
        }
    }

    /// The pool mode for `user` on the pooled port.
    pub fn mode_for(&self, user: &str) -> PoolMode {
        self.users
            .get(user)
            .and_then(|u| u.doc.mode)
            .unwrap_or(self.doc.mode)
    }

    /// The client cap for `user`.
    pub fn max_clients_for(&self, user: &str) -> u32 {
        self.users
            .get(user)
            .and_then(|u| u.doc.max_clients)
            .unwrap_or(self.doc.default_max_clients)
    }

    /// True when `user` may try to log in: listed, or any role with an auth query.
    pub fn knows_user(&self, user: &str) -> bool {
        self.users.contains_key(user) || self.auth_query.is_some()
    }

    /// Pool settings for `user`, or `None` if the user can no longer log in.
    pub fn pool_config(&self, user: &str) -> Option<PoolConfig> {
        let (size, credentials) = match self.users.get(user) {
            Some(u) => (
                u.doc.pool_size.unwrap_or(self.doc.default_pool_size),
                Arc::clone(&u.credentials),
            ),
            None if self.auth_query.is_some() => (
                self.doc.default_pool_size,
                self.runtime.passthrough_credentials(user),
            ),
            None => return None,
        };
        Some(PoolConfig {
            host: Arc::clone(&self.host),
            port: self.doc.upstream.port,
            size,
            checkout_timeout: self.doc.checkout_timeout,
            credentials,
        })
    }
}

impl AuthQuerySettings {
    fn credentials_password(&self) -> Option<&str> {
        match &*self.credentials {
            UpstreamCredentials::Password { password, .. } => Some(password),
            UpstreamCredentials::Passthrough { .. } => None,
        }
    }
}
