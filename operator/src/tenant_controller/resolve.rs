//! Resolving a Tenant's Secret references (all in the Tenant's namespace).
//!
//! [`secret_references`] lists what a spec references (also used to map Secret events back to
//! Tenants); [`fetch_secrets`] reads those Secrets from the API server; [`resolve`] turns them
//! into [`ResolvedSecrets`] or the first [`Rejection`], naming the Secret, key and field.
//!
//! Values are used verbatim (no trimming: a password may end in whitespace), but must be
//! UTF-8, non-empty and free of NUL bytes (PostgreSQL's protocol cannot carry them); a CA bundle
//! must contain a PEM certificate.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use pgfleet_crds::TenantSpec;

use super::Error;
use super::status::Rejection;
use crate::resources::tenant_document::{AUTH_USER_PASSWORD_KEY, AUTH_USER_USERNAME_KEY};
use crate::resources::{AuthUserCredentials, ResolvedSecrets};

/// What a Secret key is used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// The password of `spec.users[index]`.
    UserPassword(usize),
    /// The auth user's role name (`authQuery.userSecretRef`, key `username`).
    AuthUsername,
    /// The auth user's password (`authQuery.userSecretRef`, key `password`).
    AuthPassword,
    /// The upstream CA bundle (`upstream.tls.caSecretRef`).
    UpstreamCa,
}

/// One Secret key a Tenant needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretReference {
    /// The Secret's name (in the Tenant's namespace).
    pub secret: String,
    /// The key.
    pub key: String,
    /// The field that references it, for messages.
    pub field: String,
    /// What the value is for.
    pub purpose: Purpose,
}

/// Every Secret key `spec` references, in spec order (users, auth query, upstream CA).
pub fn secret_references(spec: &TenantSpec) -> Vec<SecretReference> {
    let mut refs = Vec::new();
    for (i, user) in spec.users.iter().enumerate() {
        refs.push(SecretReference {
            secret: user.password_secret_ref.name.clone(),
            key: user.password_secret_ref.key.clone(),
            field: format!("spec.users[{i}].passwordSecretRef (user {:?})", user.name),
            purpose: Purpose::UserPassword(i),
        });
    }
    if let Some(aq) = &spec.auth_query {
        for (key, purpose) in [
            (AUTH_USER_USERNAME_KEY, Purpose::AuthUsername),
            (AUTH_USER_PASSWORD_KEY, Purpose::AuthPassword),
        ] {
            refs.push(SecretReference {
                secret: aq.user_secret_ref.name.clone(),
                key: key.to_string(),
                field: "spec.authQuery.userSecretRef".to_string(),
                purpose,
            });
        }
    }
    if let Some(ca) = &spec.upstream.tls.ca_secret_ref {
        refs.push(SecretReference {
            secret: ca.name.clone(),
            key: ca.key.clone(),
            field: "spec.upstream.tls.caSecretRef".to_string(),
            purpose: Purpose::UpstreamCa,
        });
    }
    refs
}

/// The names of the Secrets `spec` references.
pub fn referenced_secret_names(spec: &TenantSpec) -> BTreeSet<String> {
    secret_references(spec)
        .into_iter()
        .map(|r| r.secret)
        .collect()
}

/// Whether `spec` references the Secret `name` (of the Tenant's namespace).
pub fn references_secret(spec: &TenantSpec, name: &str) -> bool {
    spec.users
        .iter()
        .any(|u| u.password_secret_ref.name == name)
        || spec
            .auth_query
            .as_ref()
            .is_some_and(|aq| aq.user_secret_ref.name == name)
        || spec
            .upstream
            .tls
            .ca_secret_ref
            .as_ref()
            .is_some_and(|ca| ca.name == name)
}

/// The Secrets' data as read: `None` for a Secret that does not exist.
pub type FetchedSecrets = BTreeMap<String, Option<BTreeMap<String, Vec<u8>>>>;

/// Reads every Secret `spec` references from `namespace`. A missing Secret is `None`; any other
/// API error fails the reconcile (and is retried), since it says nothing about the Tenant.
pub async fn fetch_secrets(
    client: &Client,
    namespace: &str,
    spec: &TenantSpec,
) -> Result<FetchedSecrets, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut fetched = FetchedSecrets::new();
    for name in referenced_secret_names(spec) {
        let secret = api
            .get_opt(&name)
            .await
            .map_err(Error::kube(format!("reading Secret {namespace}/{name}")))?;
        let data = secret.map(|s| {
            s.data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect()
        });
        fetched.insert(name, data);
    }
    Ok(fetched)
}

/// Resolves every reference of `spec` from `fetched` (Secrets of `namespace`), or returns the
/// first problem in spec order.
pub fn resolve(
    namespace: &str,
    spec: &TenantSpec,
    fetched: &FetchedSecrets,
) -> Result<ResolvedSecrets, Rejection> {
    let mut resolved = ResolvedSecrets::default();
    let mut auth_username = None;
    let mut auth_password = None;
    for reference in secret_references(spec) {
        let value = value_of(namespace, &reference, fetched)?;
        match reference.purpose {
            Purpose::UserPassword(i) => {
                let name = spec
                    .users
                    .get(i)
                    .map(|u| u.name.clone())
                    .unwrap_or_default();
                resolved.user_passwords.insert(name, value);
            }
            Purpose::AuthUsername => auth_username = Some(value),
            Purpose::AuthPassword => auth_password = Some(value),
            Purpose::UpstreamCa => {
                if !value.contains("-----BEGIN CERTIFICATE-----") {
                    return Err(invalid(
                        namespace,
                        &reference,
                        "does not hold a PEM certificate (-----BEGIN CERTIFICATE-----)",
                    ));
                }
                resolved.upstream_ca = Some(value);
            }
        }
    }
    if let (Some(username), Some(password)) = (auth_username, auth_password) {
        resolved.auth_user = Some(AuthUserCredentials { username, password });
    }
    Ok(resolved)
}

fn value_of(
    namespace: &str,
    reference: &SecretReference,
    fetched: &FetchedSecrets,
) -> Result<String, Rejection> {
    let secret = format!("{namespace}/{}", reference.secret);
    let Some(Some(data)) = fetched.get(&reference.secret) else {
        return Err(Rejection::SecretNotFound {
            secret,
            field: reference.field.clone(),
        });
    };
    let Some(bytes) = data.get(&reference.key) else {
        return Err(Rejection::SecretKeyNotFound {
            secret,
            key: reference.key.clone(),
            field: reference.field.clone(),
        });
    };
    let Ok(text) = String::from_utf8(bytes.clone()) else {
        return Err(invalid(namespace, reference, "is not UTF-8 text"));
    };
    if text.is_empty() {
        return Err(invalid(namespace, reference, "is empty"));
    }
    if text.contains('\0') {
        return Err(invalid(namespace, reference, "contains a NUL byte"));
    }
    Ok(text)
}

fn invalid(namespace: &str, reference: &SecretReference, problem: &str) -> Rejection {
    Rejection::InvalidSecret {
        secret: format!("{namespace}/{}", reference.secret),
        key: reference.key.clone(),
        problem: format!("({}) {problem}", reference.field),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> TenantSpec {
        serde_yaml_ng::from_str(yaml).expect("spec parses")
    }

    const FULL: &str = r#"
upstream: {host: h, tls: {mode: verify-full, caSecretRef: {name: ca, key: ca.crt}}}
users:
  - {name: app, passwordSecretRef: {name: pw, key: app}}
  - {name: report, passwordSecretRef: {name: pw, key: report}}
authQuery: {userSecretRef: {name: auth}}
"#;

    fn fetched(entries: &[(&str, &[(&str, &str)])]) -> FetchedSecrets {
        entries
            .iter()
            .map(|(name, data)| {
                (
                    name.to_string(),
                    Some(
                        data.iter()
                            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                            .collect(),
                    ),
                )
            })
            .collect()
    }

    fn all() -> FetchedSecrets {
        fetched(&[
            ("pw", &[("app", "app-secret"), ("report", "report secret ")]),
            (
                "auth",
                &[("username", "pgfleet_auth"), ("password", "auth-secret")],
            ),
            ("ca", &[("ca.crt", "-----BEGIN CERTIFICATE-----\nMII\n")]),
        ])
    }

    #[test]
    fn references_are_listed_in_spec_order() {
        let s = spec(FULL);
        let refs = secret_references(&s);
        let listed: Vec<(&str, &str)> = refs
            .iter()
            .map(|r| (r.secret.as_str(), r.key.as_str()))
            .collect();
        assert_eq!(
            listed,
            [
                ("pw", "app"),
                ("pw", "report"),
                ("auth", "username"),
                ("auth", "password"),
                ("ca", "ca.crt")
            ]
        );
        assert_eq!(
            referenced_secret_names(&s).into_iter().collect::<Vec<_>>(),
            ["auth", "ca", "pw"]
        );
        for name in ["pw", "auth", "ca"] {
            assert!(references_secret(&s, name), "{name}");
        }
        assert!(!references_secret(&s, "other"));
    }

    #[test]
    fn resolves_every_reference_verbatim() {
        let resolved = resolve("team-a", &spec(FULL), &all()).expect("resolves");
        assert_eq!(resolved.user_passwords["app"], "app-secret");
        assert_eq!(
            resolved.user_passwords["report"], "report secret ",
            "not trimmed"
        );
        let auth = resolved.auth_user.expect("auth user");
        assert_eq!(
            (auth.username.as_str(), auth.password.as_str()),
            ("pgfleet_auth", "auth-secret")
        );
        assert!(resolved.upstream_ca.expect("ca").starts_with("-----BEGIN"));
    }

    #[test]
    fn the_first_problem_names_secret_key_and_field() {
        let s = spec(FULL);
        let mut missing = all();
        missing.insert("pw".into(), None);
        assert_eq!(
            resolve("team-a", &s, &missing),
            Err(Rejection::SecretNotFound {
                secret: "team-a/pw".into(),
                field: "spec.users[0].passwordSecretRef (user \"app\")".into(),
            })
        );
        // Never fetched counts as missing too.
        missing.remove("pw");
        assert!(matches!(
            resolve("team-a", &s, &missing),
            Err(Rejection::SecretNotFound { .. })
        ));

        let no_key = {
            let mut f = all();
            f.extend(fetched(&[("auth", &[("username", "u")])]));
            f
        };
        assert_eq!(
            resolve("team-a", &s, &no_key),
            Err(Rejection::SecretKeyNotFound {
                secret: "team-a/auth".into(),
                key: "password".into(),
                field: "spec.authQuery.userSecretRef".into(),
            })
        );

        for (value, problem) in [("", "is empty"), ("a\0b", "NUL")] {
            let mut f = all();
            f.extend(fetched(&[("pw", &[("app", value), ("report", "x")])]));
            match resolve("team-a", &s, &f) {
                Err(Rejection::InvalidSecret {
                    secret,
                    key,
                    problem: p,
                }) => {
                    assert_eq!((secret.as_str(), key.as_str()), ("team-a/pw", "app"));
                    assert!(p.contains(problem), "{p}");
                }
                other => panic!("expected InvalidSecret, got {other:?}"),
            }
        }
        let mut f = all();
        f.insert(
            "pw".into(),
            Some(BTreeMap::from([
                ("app".to_string(), vec![0xff, 0xfe]),
                ("report".to_string(), b"x".to_vec()),
            ])),
        );
        assert!(matches!(
            resolve("team-a", &s, &f),
            Err(Rejection::InvalidSecret { problem, .. }) if problem.contains("UTF-8")
        ));

        let mut f = all();
        f.extend(fetched(&[("ca", &[("ca.crt", "not a certificate")])]));
        assert!(matches!(
            resolve("team-a", &s, &f),
            Err(Rejection::InvalidSecret { key, .. }) if key == "ca.crt"
        ));
    }

    #[test]
    fn a_spec_without_references_resolves_to_nothing() {
        let s = spec("upstream: {host: h}\nauthQuery: {userSecretRef: {name: auth}}\n");
        assert_eq!(
            referenced_secret_names(&s).into_iter().collect::<Vec<_>>(),
            ["auth"]
        );
        let s = spec("upstream: {host: h}\n");
        assert!(secret_references(&s).is_empty());
        assert_eq!(
            resolve("team-a", &s, &FetchedSecrets::new()),
            Ok(ResolvedSecrets::default())
        );
    }
}
