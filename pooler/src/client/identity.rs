//! Who a client is, from its startup parameters: user, tenant, database, settings.

use pgfleet_crds::validate::is_valid_pg_name;

use crate::errors::ClientError;
use crate::protocol::startup::parse_options;

/// A client's identity as its startup packet states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// Role name (without the tenant suffix).
    pub user: String,
    /// Tenant external id.
    pub tenant: String,
    /// Database asked for; `None` means the tenant's default.
    pub database: Option<String>,
    /// `search_path` from `options` (or a top-level startup key).
    pub search_path: Option<String>,
    /// `application_name`, reported back to the client.
    pub application_name: Option<String>,
}

/// Finds the tenant in Supavisor's order: `options` `reference=<id>`, then the user name split
/// at its last dot. Other `options` settings are dropped, never forwarded.
pub fn identify(params: &[(String, String)]) -> Result<ClientIdentity, ClientError> {
    let get = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let raw_user =
        get("user").ok_or_else(|| ClientError::StartupMessage(":missing_user".into()))?;
    let options = get("options").map(parse_options).unwrap_or_default();
    let option = |k: &str| {
        options
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };

    let (user, tenant) = match option("reference") {
        Some(reference) => (raw_user.to_string(), reference),
        None => match raw_user.rsplit_once('.') {
            Some((user, tenant)) if !user.is_empty() && !tenant.is_empty() => {
                (user.to_string(), tenant.to_string())
            }
            _ => return Err(ClientError::NoIdentifier),
        },
    };
    // libpq sends the user name as the database when none is given: that means "default".
    let database = get("database")
        .filter(|d| !d.is_empty() && *d != raw_user)
        .map(str::to_string);
    if !is_valid_pg_name(&user) || database.as_deref().is_some_and(|d| !is_valid_pg_name(d)) {
        return Err(ClientError::InvalidUserInfo);
    }
    let search_path = option("search_path").or_else(|| get("search_path").map(str::to_string));
    Ok(ClientIdentity {
        user,
        tenant,
        database,
        search_path: search_path.filter(|s| !s.is_empty()),
        application_name: get("application_name").map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn user_dot_tenant_splits_at_the_last_dot() {
        let id =
            identify(&params(&[("user", "first.last.acme"), ("database", "app")])).expect("ok");
        assert_eq!(
            (id.user.as_str(), id.tenant.as_str()),
            ("first.last", "acme")
        );
        assert_eq!(id.database.as_deref(), Some("app"));
    }

    #[test]
    fn reference_option_wins_and_keeps_the_user_whole() {
        for opts in ["-c reference=acme", "--reference=acme", "reference=acme"] {
            let id = identify(&params(&[("user", "app.x"), ("options", opts)])).expect("ok");
            assert_eq!(
                (id.user.as_str(), id.tenant.as_str()),
                ("app.x", "acme"),
                "{opts}"
            );
        }
    }

    #[test]
    fn search_path_is_kept_and_other_options_are_dropped() {
        let id = identify(&params(&[
            ("user", "u.t"),
            ("options", "-c search_path=a,b -c work_mem=1GB"),
        ]))
        .expect("ok");
        assert_eq!(id.search_path.as_deref(), Some("a,b"));
    }

    #[test]
    fn default_database_is_the_tenants() {
        let id = identify(&params(&[("user", "u.t"), ("database", "u.t")])).expect("ok");
        assert_eq!(id.database, None);
    }

    #[test]
    fn errors() {
        assert!(matches!(
            identify(&params(&[("database", "d")])),
            Err(ClientError::StartupMessage(_))
        ));
        assert!(matches!(
            identify(&params(&[("user", "plain")])),
            Err(ClientError::NoIdentifier)
        ));
        assert!(matches!(
            identify(&params(&[("user", "u.")])),
            Err(ClientError::NoIdentifier)
        ));
        let long = format!("{}.t", "x".repeat(64));
        assert!(matches!(
            identify(&params(&[("user", &long)])),
            Err(ClientError::InvalidUserInfo)
        ));
        assert!(matches!(
            identify(&params(&[("user", "u.t"), ("database", "bad\u{1}db")])),
            Err(ClientError::InvalidUserInfo)
        ));
    }
}
