//! The tenant document: everything one pooler needs to serve one tenant, secrets inline.
//!
//! Field names are the `Tenant` custom resource's own (camelCase), so a platform team reads
//! one vocabulary everywhere. Outside Kubernetes these documents are files in a directory;
//! inside, the operator renders them into Secrets.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::time::Duration;

use crate::duration;
use crate::validate::{DocumentError, validate_document};

/// How server connections are shared between clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// A server is held for one transaction at a time.
    #[default]
    Transaction,
    /// A server is held for the whole client session.
    Session,
}

impl PoolMode {
    /// The lowercase name used in documents, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Transaction => "transaction",
            PoolMode::Session => "session",
        }
    }
}

/// The tenant's PostgreSQL server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Upstream {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Database used when a client names none, and where the auth query runs.
    #[serde(default = "default_database")]
    pub database: String,
}

/// A user the pooler knows the password of (Supavisor's `require_user`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserDocument {
    /// Role name, both for clients (before the `.tenant` suffix) and upstream.
    pub name: String,
    /// The role's password: clients prove it with SCRAM, the pooler uses it upstream.
    pub password: String,
    /// Server connections for this user per database; the tenant's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_size: Option<u32>,
    /// Client cap for this user; the tenant's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_clients: Option<u32>,
    /// Pool mode on the pooled port for this user; the tenant's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<PoolMode>,
}

impl std::fmt::Debug for UserDocument {
    /// Never prints the password: documents end up in logs when they fail to load.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserDocument")
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .field("pool_size", &self.pool_size)
            .field("max_clients", &self.max_clients)
            .field("mode", &self.mode)
            .finish()
    }
}

/// Lets any role log in with its own PostgreSQL password, read from `pg_authid` by an auth user.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthQuery {
    /// The role that runs the query.
    pub user: String,
    /// Its password.
    pub password: String,
    /// SQL returning `(rolname, rolpassword)` for `$1`.
    #[serde(default = "default_auth_query")]
    pub query: String,
}

impl std::fmt::Debug for AuthQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthQuery")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("query", &self.query)
            .finish()
    }
}

/// One tenant, as the pooler loads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantDocument {
    /// What clients write after the last dot of their user name, or in `options=reference=`.
    pub external_id: String,
    /// The tenant's PostgreSQL server.
    pub upstream: Upstream,
    /// Pool mode on the pooled port.
    #[serde(default)]
    pub mode: PoolMode,
    /// Server connections per (user, database) unless the user says otherwise.
    #[serde(default = "default_pool_size")]
    pub default_pool_size: u32,
    /// Client cap per user unless the user says otherwise; also the tenant-wide cap.
    #[serde(default = "default_max_clients")]
    pub default_max_clients: u32,
    /// Users with passwords known to the pooler.
    #[serde(default)]
    pub users: Vec<UserDocument>,
    /// Authentication through the upstream's own `pg_authid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_query: Option<AuthQuery>,
    /// Client networks allowed in.
    #[serde(default = "default_allow_list")]
    pub allow_list: Vec<IpNet>,
    /// Refuse clients without TLS.
    #[serde(default)]
    pub require_tls: bool,
    /// Close clients idle (outside a transaction) for this long; off when absent.
    #[serde(
        default,
        with = "duration::optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub client_idle_timeout: Option<Duration>,
    /// How long a client waits for a server connection before it gets an error.
    #[serde(default = "default_checkout_timeout", with = "duration::required")]
    pub checkout_timeout: Duration,
    /// Just-in-time access through a remote API.
    #[serde(default)]
    pub use_jit: bool,
    /// The JIT API's URL (required with `useJit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jit_api_url: Option<String>,
}

impl TenantDocument {
    /// Parses a YAML or JSON document (JSON is YAML) and validates it.
    pub fn parse(text: &str) -> Result<Self, DocumentError> {
        let document: TenantDocument =
            serde_yaml_ng::from_str(text).map_err(|e| DocumentError::Parse(e.to_string()))?;
        validate_document(&document).map_err(DocumentError::Invalid)?;
        Ok(document)
    }

    /// Renders the document as YAML (what the operator writes into a Secret).
    pub fn to_yaml(&self) -> Result<String, DocumentError> {
        serde_yaml_ng::to_string(self).map_err(|e| DocumentError::Parse(e.to_string()))
    }

    /// The user entry named `name`, if the tenant lists it.
    pub fn user(&self, name: &str) -> Option<&UserDocument> {
        self.users.iter().find(|u| u.name == name)
    }
}

fn default_port() -> u16 {
    5432
}
fn default_database() -> String {
    "postgres".into()
}
fn default_pool_size() -> u32 {
    15
}
fn default_max_clients() -> u32 {
    1000
}
fn default_checkout_timeout() -> Duration {
    Duration::from_secs(60)
}
/// Everyone, as in Supavisor; platform teams narrow it per tenant.
pub fn default_allow_list() -> Vec<IpNet> {
    ["0.0.0.0/0", "::/0"]
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect()
}
/// Reads the role's verifier through a function the auth user may call, or `pg_authid` directly.
pub fn default_auth_query() -> String {
    "SELECT rolname, rolpassword FROM pg_catalog.pg_authid WHERE rolname = $1".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str =
        "externalId: acme\nupstream: {host: db.local}\nusers: [{name: u, password: p}]\n";

    #[test]
    fn minimal_document_gets_defaults() {
        let doc = TenantDocument::parse(MINIMAL).expect("valid");
        assert_eq!(doc.upstream.port, 5432);
        assert_eq!(doc.upstream.database, "postgres");
        assert_eq!(doc.mode, PoolMode::Transaction);
        assert_eq!(doc.default_pool_size, 15);
        assert_eq!(doc.default_max_clients, 1000);
        assert_eq!(doc.allow_list.len(), 2);
        assert_eq!(doc.checkout_timeout, Duration::from_secs(60));
        assert_eq!(doc.client_idle_timeout, None);
    }

    #[test]
    fn full_yaml_document_parses() {
        let text = r#"
externalId: acme_1
upstream: {host: 127.0.0.1, port: 6000, database: app}
mode: session
defaultPoolSize: 4
defaultMaxClients: 50
users:
  - {name: app, password: secret, poolSize: 2, maxClients: 10, mode: transaction}
authQuery: {user: auth, password: pw}
allowList: ["10.0.0.0/8", "::1/128"]
requireTls: false
clientIdleTimeout: 30s
checkoutTimeout: 500ms
"#;
        let doc = TenantDocument::parse(text).expect("valid");
        assert_eq!(doc.mode, PoolMode::Session);
        assert_eq!(doc.user("app").and_then(|u| u.pool_size), Some(2));
        assert_eq!(doc.client_idle_timeout, Some(Duration::from_secs(30)));
        assert_eq!(doc.checkout_timeout, Duration::from_millis(500));
        assert!(
            doc.auth_query
                .as_ref()
                .is_some_and(|a| a.query.contains("$1"))
        );
    }

    #[test]
    fn json_documents_parse_and_round_trip() {
        let text =
            r#"{"externalId":"t","upstream":{"host":"h"},"users":[{"name":"u","password":"p"}]}"#;
        let doc = TenantDocument::parse(text).expect("valid");
        let again = TenantDocument::parse(&doc.to_yaml().expect("yaml")).expect("round trip");
        assert_eq!(doc, again);
    }

    #[test]
    fn unknown_fields_and_bad_types_are_refused() {
        let err = TenantDocument::parse("externalId: t\nupstream: {host: h}\npoolsize: 3\n");
        assert!(
            matches!(err, Err(DocumentError::Parse(ref m)) if m.contains("poolsize")),
            "{err:?}"
        );
        let err = TenantDocument::parse("externalId: t\nupstream: {host: h}\nmode: statement\n");
        assert!(matches!(err, Err(DocumentError::Parse(_))), "{err:?}");
        let err = TenantDocument::parse("externalId: t\nupstream: {host: h}\nallowList: [nope]\n");
        assert!(matches!(err, Err(DocumentError::Parse(_))), "{err:?}");
    }

    #[test]
    fn debug_output_hides_passwords() {
        let doc = TenantDocument::parse(
            "externalId: t\nupstream: {host: h}\nusers: [{name: u, password: hunter2}]\nauthQuery: {user: a, password: hunter3}\n",
        )
        .expect("valid");
        let printed = format!("{doc:?}");
        assert!(
            !printed.contains("hunter2") && !printed.contains("hunter3"),
            "{printed}"
        );
    }
}
