//! How the pooler proves itself to the upstream for one pool's role.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::auth::scram::{ScramKeys, ScramSecret};

/// Derived SCRAM keys for one salt and iteration count, so PBKDF2 runs once per pool.
#[derive(Clone)]
pub struct DerivedKeys {
    /// The server's salt these keys were derived with.
    pub salt: Vec<u8>,
    /// The server's iteration count.
    pub iterations: u32,
    /// ClientKey and ServerKey.
    pub keys: ScramKeys,
}

/// Credentials for logging in upstream as a pool's role.
pub enum UpstreamCredentials {
    /// The password is known (tenant `users[]`): SCRAM, MD5 or cleartext all work.
    Password {
        /// The role's password.
        password: Arc<str>,
        /// SCRAM keys derived from it for the upstream's salt, cached.
        derived: Mutex<Option<DerivedKeys>>,
    },
    /// The password is unknown (`authQuery`): SCRAM with the ClientKey recovered from the last
    /// successful client login. Only SCRAM works, and only once a client has logged in.
    Passthrough {
        /// The role's verifier from `pg_authid` and the recovered ClientKey.
        keys: Mutex<Option<(Arc<ScramSecret>, [u8; 32])>>,
    },
}

impl UpstreamCredentials {
    /// Credentials from a known password.
    pub fn password(password: Arc<str>) -> Self {
        UpstreamCredentials::Password {
            password,
            derived: Mutex::new(None),
        }
    }

    /// Credentials that wait for a client's recovered ClientKey.
    pub fn passthrough() -> Self {
        UpstreamCredentials::Passthrough {
            keys: Mutex::new(None),
        }
    }

    /// Stores the keys recovered from a client's SCRAM proof (no-op for password credentials).
    pub fn set_passthrough(&self, secret: Arc<ScramSecret>, client_key: [u8; 32]) {
        if let UpstreamCredentials::Passthrough { keys } = self {
            *keys.lock() = Some((secret, client_key));
        }
    }
}
