//! Rendering a `Tenant` into the tenant document every pooler of its fleet loads.
//!
//! The document is the `Tenant`'s spec with its Secrets resolved (passwords inline) and its
//! fleet-wide budgets divided per replica. The controller reads the Secrets, this module does
//! the rest, so what the poolers see is a pure function of the Tenant, its Secrets and the
//! fleet's ready replicas.
//!
//! # Fleet-wide budgets
//!
//! `defaultPoolSize`, `users[].poolSize`, `defaultMaxClients` and `users[].maxClients` are totals
//! for the fleet. Each replica gets `floor(total / replicas)`, at least 1, so the upstream never
//! sees more than `poolSize` connections per (user, database) unless replicas outnumber it. The
//! controller re-renders when the ready replica count changes. Two cases:
//!
//! - `replicas` 0 (nothing ready yet) counts as 1: the first pod to become ready gets the whole
//!   budget, which is right when it is the only one.
//! - a `maxClients` of 0 stays 0: it means "refuse every client", and rounding it up to 1 would
//!   let one client per replica in.

use std::collections::BTreeMap;
use std::time::Duration;

use ipnet::IpNet;
use pgfleet_crds::document::default_auth_query;
use pgfleet_crds::duration::parse_duration;
use pgfleet_crds::{
    AuthQuery, Tenant, TenantDocument, TlsMode, Upstream, UserDocument, validate::validate_document,
};

use super::error::RenderError;

/// The key of `authQuery.userSecretRef` holding the auth user's role name.
pub const AUTH_USER_USERNAME_KEY: &str = "username";
/// The key of `authQuery.userSecretRef` holding the auth user's password.
pub const AUTH_USER_PASSWORD_KEY: &str = "password";

/// The auth user's credentials, from the `username` and `password` keys of
/// `authQuery.userSecretRef`.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthUserCredentials {
    /// The role that runs the auth query.
    pub username: String,
    /// Its password.
    pub password: String,
}

impl std::fmt::Debug for AuthUserCredentials {
    /// Never prints the password: errors and traces end up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthUserCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// What the controller read from a Tenant's Secrets (all in the Tenant's namespace).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ResolvedSecrets {
    /// Each user's password, by user name (`spec.users[].passwordSecretRef`).
    pub user_passwords: BTreeMap<String, String>,
    /// The auth user, when `spec.authQuery` is set.
    pub auth_user: Option<AuthUserCredentials>,
    /// The PEM CA bundle of `spec.upstream.tls.caSecretRef`. Tenant documents have no field for
    /// it yet (nor for the TLS mode), so it is not rendered; see
    /// [`RenderError::UpstreamTlsUnsupported`].
    pub upstream_ca: Option<String>,
}

impl std::fmt::Debug for ResolvedSecrets {
    /// Lists which users have passwords, never the passwords.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedSecrets")
            .field(
                "user_passwords",
                &self.user_passwords.keys().collect::<Vec<_>>(),
            )
            .field("auth_user", &self.auth_user)
            .field("upstream_ca", &self.upstream_ca.as_ref().map(|_| "<pem>"))
            .finish()
    }
}

/// Renders `tenant` for one replica of a fleet with `replicas` ready replicas.
///
/// The result passes the tenant document's own validation (the same the pooler runs on load),
/// so a document the operator writes is never one the poolers refuse.
pub fn render_tenant_document(
    tenant: &Tenant,
    resolved: &ResolvedSecrets,
    replicas: u32,
) -> Result<TenantDocument, RenderError> {
    let name = super::tenant_secret::tenant_name(tenant)?;
    let spec = &tenant.spec;

    if spec.upstream.tls.mode != TlsMode::Disable {
        return Err(RenderError::UpstreamTlsUnsupported {
            mode: tls_mode_name(spec.upstream.tls.mode).into(),
        });
    }
    let port = u16::try_from(spec.upstream.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| RenderError::invalid("spec.upstream.port", "must be between 1 and 65535"))?;

    let default_pool_size = pool_share(spec.default_pool_size, replicas, "spec.defaultPoolSize")?;
    let default_max_clients =
        clients_share(spec.default_max_clients, replicas, "spec.defaultMaxClients")?;

    let users = spec
        .users
        .iter()
        .enumerate()
        .map(|(i, user)| {
            let password = resolved.user_passwords.get(&user.name).ok_or_else(|| {
                RenderError::MissingUserPassword {
                    user: user.name.clone(),
                }
            })?;
            Ok(UserDocument {
                name: user.name.clone(),
                password: password.clone(),
                pool_size: user
                    .pool_size
                    .map(|n| pool_share(n, replicas, &format!("spec.users[{i}].poolSize")))
                    .transpose()?,
                max_clients: user
                    .max_clients
                    .map(|n| clients_share(n, replicas, &format!("spec.users[{i}].maxClients")))
                    .transpose()?,
                mode: user.mode,
            })
        })
        .collect::<Result<Vec<_>, RenderError>>()?;

    let auth_query = match &spec.auth_query {
        None => None,
        Some(aq) => {
            let creds = resolved
                .auth_user
                .as_ref()
                .ok_or(RenderError::MissingAuthUser)?;
            Some(AuthQuery {
                user: creds.username.clone(),
                password: creds.password.clone(),
                query: aq.query.clone().unwrap_or_else(default_auth_query),
            })
        }
    };

    let allow_list = spec
        .allow_list
        .iter()
        .enumerate()
        .map(|(i, cidr)| {
            cidr.trim().parse::<IpNet>().map_err(|_| {
                RenderError::invalid(
                    format!("spec.allowList[{i}]"),
                    format!("{cidr:?} is not a CIDR such as 10.0.0.0/8 or 2001:db8::/32"),
                )
            })
        })
        .collect::<Result<Vec<_>, RenderError>>()?;

    let client_idle_timeout = spec
        .client_idle_timeout
        .as_deref()
        .map(|text| duration(text, "spec.clientIdleTimeout"))
        .transpose()?
        .filter(|d| !d.is_zero());
    let checkout_timeout = duration(&spec.checkout_timeout, "spec.checkoutTimeout")?;

    let document = TenantDocument {
        external_id: spec.effective_external_id(name).to_string(),
        upstream: Upstream {
            host: spec.upstream.host.clone(),
            port,
            database: spec.upstream.database.clone(),
        },
        mode: spec.mode,
        default_pool_size,
        default_max_clients,
        users,
        auth_query,
        allow_list,
        require_tls: spec.require_tls,
        client_idle_timeout,
        checkout_timeout,
        use_jit: spec.use_jit,
        jit_api_url: spec.jit_api_url.clone(),
    };
    validate_document(&document)
        .map_err(|errors| RenderError::Document(pgfleet_crds::DocumentError::Invalid(errors)))?;
    Ok(document)
}

/// One replica's share of a fleet-wide total: `floor(total / replicas)`, at least 1, with 0
/// replicas counted as 1.
pub fn per_replica(total: u32, replicas: u32) -> u32 {
    (total / replicas.max(1)).max(1)
}

/// A pool size's share; pool sizes are at least 1.
fn pool_share(total: i32, replicas: u32, field: &str) -> Result<u32, RenderError> {
    match u32::try_from(total) {
        Ok(n) if n >= 1 => Ok(per_replica(n, replicas)),
        _ => Err(RenderError::invalid(field, "must be at least 1")),
    }
}

/// A client cap's share; 0 (refuse every client) stays 0.
fn clients_share(total: i32, replicas: u32, field: &str) -> Result<u32, RenderError> {
    match u32::try_from(total) {
        Ok(0) => Ok(0),
        Ok(n) => Ok(per_replica(n, replicas)),
        Err(_) => Err(RenderError::invalid(field, "must be 0 or more")),
    }
}

fn duration(text: &str, field: &str) -> Result<Duration, RenderError> {
    parse_duration(text).map_err(|message| RenderError::invalid(field, message))
}

fn tls_mode_name(mode: TlsMode) -> &'static str {
    match mode {
        TlsMode::Disable => "disable",
        TlsMode::Require => "require",
        TlsMode::VerifyCa => "verify-ca",
        TlsMode::VerifyFull => "verify-full",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::test_support::tenant;
    use pgfleet_crds::{DocumentError, PoolMode};

    const SPEC: &str = r#"
upstream: {host: db.internal, port: 6432, database: app}
mode: session
defaultPoolSize: 20
defaultMaxClients: 500
users:
  - {name: app, passwordSecretRef: {name: app-pw, key: password}, poolSize: 9, maxClients: 0, mode: transaction}
  - {name: report, passwordSecretRef: {name: report-pw, key: pw}}
allowList: ["10.0.0.0/8", "2001:db8::/32"]
requireTls: true
clientIdleTimeout: 10m
checkoutTimeout: 500ms
useJit: true
jitApiUrl: https://jit.example/v1
"#;

    fn secrets() -> ResolvedSecrets {
        ResolvedSecrets {
            user_passwords: BTreeMap::from([
                ("app".to_string(), "app-secret".to_string()),
                ("report".to_string(), "report-secret".to_string()),
            ]),
            auth_user: Some(AuthUserCredentials {
                username: "pgfleet_auth".into(),
                password: "auth-secret".into(),
            }),
            upstream_ca: None,
        }
    }

    #[test]
    fn renders_every_field() {
        let doc = render_tenant_document(&tenant("acme", "team-a", SPEC), &secrets(), 1)
            .expect("renders");
        assert_eq!(doc.external_id, "acme");
        assert_eq!(doc.upstream.host, "db.internal");
        assert_eq!(doc.upstream.port, 6432);
        assert_eq!(doc.upstream.database, "app");
        assert_eq!(doc.mode, PoolMode::Session);
        assert_eq!((doc.default_pool_size, doc.default_max_clients), (20, 500));
        let app = doc.user("app").expect("app");
        assert_eq!(app.password, "app-secret");
        assert_eq!(app.pool_size, Some(9));
        assert_eq!(app.max_clients, Some(0));
        assert_eq!(app.mode, Some(PoolMode::Transaction));
        let report = doc.user("report").expect("report");
        assert_eq!(report.password, "report-secret");
        assert_eq!(
            (report.pool_size, report.max_clients, report.mode),
            (None, None, None)
        );
        assert_eq!(doc.auth_query, None, "no authQuery in the spec");
        assert_eq!(
            doc.allow_list,
            vec![
                "10.0.0.0/8".parse::<IpNet>().expect("cidr"),
                "2001:db8::/32".parse::<IpNet>().expect("cidr"),
            ]
        );
        assert!(doc.require_tls && doc.use_jit);
        assert_eq!(doc.jit_api_url.as_deref(), Some("https://jit.example/v1"));
        assert_eq!(doc.client_idle_timeout, Some(Duration::from_secs(600)));
        assert_eq!(doc.checkout_timeout, Duration::from_millis(500));
    }

    #[test]
    fn external_id_defaults_to_the_name() {
        let t = tenant("acme", "team-a", SPEC);
        let doc = render_tenant_document(&t, &secrets(), 1).expect("renders");
        assert_eq!(doc.external_id, "acme");
        let t = tenant(
            "acme.example.com",
            "team-a",
            &format!("externalId: acme_prod\n{SPEC}"),
        );
        let doc = render_tenant_document(&t, &secrets(), 1).expect("renders");
        assert_eq!(doc.external_id, "acme_prod");
    }

    #[test]
    fn the_document_parses_back_and_validates() {
        let doc = render_tenant_document(&tenant("acme", "team-a", SPEC), &secrets(), 3)
            .expect("renders");
        let yaml = doc.to_yaml().expect("yaml");
        let parsed = TenantDocument::parse(&yaml).expect("the pooler would load it");
        assert_eq!(parsed, doc);
        assert!(validate_document(&parsed).is_ok());
    }

    #[test]
    fn budgets_are_split_across_replicas() {
        let doc = render_tenant_document(&tenant("acme", "team-a", SPEC), &secrets(), 3)
            .expect("renders");
        assert_eq!(doc.default_pool_size, 6, "floor(20 / 3)");
        assert_eq!(doc.default_max_clients, 166, "floor(500 / 3)");
        let app = doc.user("app").expect("app");
        assert_eq!(app.pool_size, Some(3), "floor(9 / 3)");
        assert_eq!(
            app.max_clients,
            Some(0),
            "0 refuses everyone, on every replica"
        );
    }

    #[test]
    fn budget_edge_cases() {
        // No ready replica yet: as if one.
        assert_eq!(per_replica(20, 0), 20);
        assert_eq!(per_replica(20, 1), 20);
        // More replicas than connections: one each.
        assert_eq!(per_replica(3, 10), 1);
        assert_eq!(per_replica(1, 1000), 1);
        // Exact and inexact division.
        assert_eq!(per_replica(20, 4), 5);
        assert_eq!(per_replica(20, 6), 3);

        let doc = render_tenant_document(&tenant("acme", "team-a", SPEC), &secrets(), 0)
            .expect("renders");
        assert_eq!((doc.default_pool_size, doc.default_max_clients), (20, 500));
        let doc = render_tenant_document(&tenant("acme", "team-a", SPEC), &secrets(), 50)
            .expect("renders");
        assert_eq!(doc.default_pool_size, 1);
        assert_eq!(doc.default_max_clients, 10);
        assert_eq!(doc.user("app").and_then(|u| u.pool_size), Some(1));
        let doc = render_tenant_document(&tenant("acme", "team-a", SPEC), &secrets(), 1000)
            .expect("renders");
        assert_eq!(doc.default_max_clients, 1, "at least 1 while not 0");
    }

    #[test]
    fn tenant_wide_zero_max_clients_stays_zero() {
        let spec = SPEC.replace("defaultMaxClients: 500", "defaultMaxClients: 0");
        let t = tenant("acme", "team-a", &spec);
        let doc = render_tenant_document(&t, &secrets(), 4).expect("renders");
        assert_eq!(doc.default_max_clients, 0);
    }

    #[test]
    fn auth_query_uses_the_resolved_auth_user() {
        let t = tenant(
            "acme",
            "team-a",
            "upstream: {host: h}\nauthQuery: {userSecretRef: {name: auth}}\n",
        );
        let doc = render_tenant_document(&t, &secrets(), 1).expect("renders");
        let aq = doc.auth_query.expect("auth query");
        assert_eq!(aq.user, "pgfleet_auth");
        assert_eq!(aq.password, "auth-secret");
        assert_eq!(aq.query, default_auth_query());
        assert!(doc.users.is_empty());

        let t = tenant(
            "acme",
            "team-a",
            "upstream: {host: h}\nauthQuery: {userSecretRef: {name: auth}, query: 'SELECT * FROM f($1)'}\n",
        );
        let doc = render_tenant_document(&t, &secrets(), 1).expect("renders");
        assert_eq!(
            doc.auth_query.expect("auth query").query,
            "SELECT * FROM f($1)"
        );

        let missing = ResolvedSecrets {
            auth_user: None,
            ..secrets()
        };
        assert_eq!(
            render_tenant_document(&t, &missing, 1),
            Err(RenderError::MissingAuthUser)
        );
    }

    #[test]
    fn a_missing_password_names_the_user() {
        let mut resolved = secrets();
        resolved.user_passwords.remove("report");
        assert_eq!(
            render_tenant_document(&tenant("acme", "team-a", SPEC), &resolved, 1),
            Err(RenderError::MissingUserPassword {
                user: "report".into()
            })
        );
    }

    #[test]
    fn upstream_tls_is_refused_rather_than_silently_dropped() {
        for mode in ["require", "verify-ca", "verify-full"] {
            let t = tenant(
                "acme",
                "team-a",
                &format!(
                    "upstream: {{host: h, tls: {{mode: {mode}}}}}\nusers: [{{name: app, passwordSecretRef: {{name: s, key: k}}}}]\n"
                ),
            );
            assert_eq!(
                render_tenant_document(&t, &secrets(), 1),
                Err(RenderError::UpstreamTlsUnsupported { mode: mode.into() })
            );
        }
    }

    #[test]
    fn what_the_schema_should_have_refused_is_reported_by_field() {
        let field_of = |yaml: &str| match render_tenant_document(
            &tenant("acme", "team-a", yaml),
            &secrets(),
            1,
        ) {
            Err(RenderError::InvalidField { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        };
        let users = "users: [{name: app, passwordSecretRef: {name: s, key: k}}]\n";
        assert_eq!(
            field_of(&format!("upstream: {{host: h, port: 70000}}\n{users}")),
            "spec.upstream.port"
        );
        assert_eq!(
            field_of(&format!(
                "upstream: {{host: h}}\ndefaultPoolSize: 0\n{users}"
            )),
            "spec.defaultPoolSize"
        );
        assert_eq!(
            field_of(&format!(
                "upstream: {{host: h}}\ndefaultMaxClients: -1\n{users}"
            )),
            "spec.defaultMaxClients"
        );
        assert_eq!(
            field_of(
                "upstream: {host: h}\nusers: [{name: app, passwordSecretRef: {name: s, key: k}, poolSize: -2}]\n"
            ),
            "spec.users[0].poolSize"
        );
        assert_eq!(
            field_of(&format!(
                "upstream: {{host: h}}\nallowList: [everyone]\n{users}"
            )),
            "spec.allowList[0]"
        );
        assert_eq!(
            field_of(&format!(
                "upstream: {{host: h}}\ncheckoutTimeout: soon\n{users}"
            )),
            "spec.checkoutTimeout"
        );
        assert_eq!(
            field_of(&format!(
                "upstream: {{host: h}}\nclientIdleTimeout: 5x\n{users}"
            )),
            "spec.clientIdleTimeout"
        );
    }

    #[test]
    fn document_rules_are_checked_too() {
        // The schema's CEL rules refuse these; a Tenant that bypassed them still cannot produce
        // a document the poolers would reject.
        let t = tenant(
            "acme",
            "team-a",
            "upstream: {host: h}\nuseJit: true\nusers: [{name: app, passwordSecretRef: {name: s, key: k}}]\n",
        );
        match render_tenant_document(&t, &secrets(), 1) {
            Err(RenderError::Document(DocumentError::Invalid(errors))) => {
                assert_eq!(errors[0].field, "jitApiUrl");
            }
            other => panic!("expected a document error, got {other:?}"),
        }
        let t = tenant("not a valid id", "team-a", SPEC);
        assert!(matches!(
            render_tenant_document(&t, &secrets(), 1),
            Err(RenderError::Document(_))
        ));
        let mut resolved = secrets();
        resolved.user_passwords.insert("app".into(), String::new());
        assert!(matches!(
            render_tenant_document(&tenant("acme", "team-a", SPEC), &resolved, 1),
            Err(RenderError::Document(_))
        ));
    }

    #[test]
    fn zero_idle_timeout_means_off() {
        let t = tenant(
            "acme",
            "team-a",
            "upstream: {host: h}\nclientIdleTimeout: 0s\nusers: [{name: app, passwordSecretRef: {name: s, key: k}}]\n",
        );
        let doc = render_tenant_document(&t, &secrets(), 1).expect("renders");
        assert_eq!(doc.client_idle_timeout, None);
    }

    #[test]
    fn needs_a_name() {
        let mut t = tenant("acme", "team-a", SPEC);
        t.metadata.name = None;
        assert_eq!(
            render_tenant_document(&t, &secrets(), 1),
            Err(RenderError::MissingMetadata("name"))
        );
    }

    #[test]
    fn debug_output_hides_secrets() {
        let mut resolved = secrets();
        resolved.upstream_ca = Some("-----BEGIN CERTIFICATE-----".into());
        let printed = format!("{resolved:?}");
        for secret in ["app-secret", "report-secret", "auth-secret", "BEGIN"] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(printed.contains("app") && printed.contains("pgfleet_auth"));
    }
}
