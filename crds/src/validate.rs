//! Checks a tenant document beyond what its types say, with messages a person understands.
//!
//! The CRD schema repeats these rules for `kubectl apply`; the pooler re-checks because a
//! document can also come from a hand-written file.

use crate::document::TenantDocument;

/// Why a document could not be loaded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DocumentError {
    /// Not YAML/JSON, or fields of the wrong type or unknown.
    #[error("cannot parse tenant document: {0}")]
    Parse(String),
    /// Well-formed but breaks a rule.
    #[error("invalid tenant document: {}", join(.0))]
    Invalid(Vec<ValidationError>),
}

fn join(errors: &[ValidationError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// One broken rule, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The field's path, as written in the document (`users[1].name`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// PostgreSQL's NAMEDATALEN - 1.
pub const MAX_NAME_BYTES: usize = 63;

/// True for `^[A-Za-z0-9_-]{1,63}$`: the external id clients type after the dot.
pub fn is_valid_external_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_NAME_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// True for a role or database name PostgreSQL would accept from a startup packet.
pub fn is_valid_pg_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_BYTES && !name.chars().any(|c| c.is_control())
}

/// Checks every rule and reports all broken ones at once.
pub fn validate_document(doc: &TenantDocument) -> Result<(), Vec<ValidationError>> {
    let mut errors = Vec::new();
    let mut fail = |field: String, message: &str| {
        errors.push(ValidationError {
            field,
            message: message.to_string(),
        })
    };
    if !is_valid_external_id(&doc.external_id) {
        fail(
            "externalId".into(),
            "must be 1 to 63 characters of letters, digits, '_' or '-'",
        );
    }
    if doc.upstream.host.trim().is_empty() {
        fail("upstream.host".into(), "must not be empty");
    }
    if doc.upstream.port == 0 {
        fail("upstream.port".into(), "must be between 1 and 65535");
    }
    if !is_valid_pg_name(&doc.upstream.database) {
        fail(
            "upstream.database".into(),
            "must be 1 to 63 bytes without control characters",
        );
    }
    if doc.default_pool_size == 0 {
        fail("defaultPoolSize".into(), "must be at least 1");
    }
    let mut seen = std::collections::HashSet::new();
    for (i, user) in doc.users.iter().enumerate() {
        if !is_valid_pg_name(&user.name) {
            fail(
                format!("users[{i}].name"),
                "must be 1 to 63 bytes without control characters",
            );
        }
        if !seen.insert(user.name.as_str()) {
            fail(format!("users[{i}].name"), "is listed twice");
        }
        if user.password.is_empty() {
            fail(format!("users[{i}].password"), "must not be empty");
        }
        if user.pool_size == Some(0) {
            fail(format!("users[{i}].poolSize"), "must be at least 1");
        }
    }
    if let Some(aq) = &doc.auth_query {
        if !is_valid_pg_name(&aq.user) {
            fail("authQuery.user".into(), "must be a valid role name");
        }
        if !aq.query.contains("$1") {
            fail(
                "authQuery.query".into(),
                "must use $1 for the role name being looked up",
            );
        }
    }
    if doc.users.is_empty() && doc.auth_query.is_none() {
        fail(
            "users".into(),
            "the tenant needs at least one user or an authQuery, or nobody can log in",
        );
    }
    if doc.allow_list.is_empty() {
        fail(
            "allowList".into(),
            "must not be empty (use [\"0.0.0.0/0\", \"::/0\"] to allow everyone)",
        );
    }
    if doc.checkout_timeout.is_zero() {
        fail("checkoutTimeout".into(), "must be greater than zero");
    }
    match (&doc.use_jit, &doc.jit_api_url) {
        (true, None) => fail("jitApiUrl".into(), "is required when useJit is true"),
        (_, Some(url)) if !(url.starts_with("http://") || url.starts_with("https://")) => {
            fail("jitApiUrl".into(), "must be an http:// or https:// URL")
        }
        _ => {}
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(text: &str) -> Vec<ValidationError> {
        match TenantDocument::parse(text) {
            Err(DocumentError::Invalid(errors)) => errors,
            other => panic!("expected validation errors, got {other:?}"),
        }
    }

    #[test]
    fn external_id_rules() {
        assert!(is_valid_external_id("acme_prod-1"));
        assert!(!is_valid_external_id(""));
        assert!(!is_valid_external_id("a.b"));
        assert!(!is_valid_external_id(&"x".repeat(64)));
    }

    #[test]
    fn reports_every_broken_rule_with_its_field() {
        let errors = parse_err(
            "externalId: 'bad id'\nupstream: {host: '', port: 0}\ndefaultPoolSize: 0\nusers: [{name: a, password: ''}, {name: a, password: x, poolSize: 0}]\nuseJit: true\ncheckoutTimeout: 0\nallowList: []\n",
        );
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        for expected in [
            "externalId",
            "upstream.host",
            "upstream.port",
            "defaultPoolSize",
            "users[0].password",
            "users[1].name",
            "users[1].poolSize",
            "jitApiUrl",
            "checkoutTimeout",
            "allowList",
        ] {
            assert!(
                fields.contains(&expected),
                "missing {expected} in {fields:?}"
            );
        }
    }

    #[test]
    fn jit_url_must_be_http() {
        let errors = parse_err(
            "externalId: t\nupstream: {host: h}\nusers: [{name: u, password: p}]\nuseJit: true\njitApiUrl: ftp://x\n",
        );
        assert_eq!(errors[0].field, "jitApiUrl");
    }

    #[test]
    fn a_tenant_without_any_login_path_is_refused() {
        let errors = parse_err("externalId: t\nupstream: {host: h}\n");
        assert_eq!(errors[0].field, "users");
    }
}
