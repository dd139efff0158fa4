//! The Secret that carries a tenant document to the poolers of its fleet.
//!
//! It lives in the **fleet's** namespace (the only namespace the poolers may read), whichever
//! namespace the Tenant is in; the fleet's poolers find it by the `pgfleet.io/fleet` label. A
//! cross-namespace owner reference is not allowed, so these Secrets carry none: the Tenant's
//! finalizer deletes its Secret, and the labels let the controller prune orphans.
//!
//! # Naming
//!
//! `pgfleet-tenant-<namespace>-<name>-<hash>`, where `<hash>` is 16 hex digits of a SHA-256 of
//! `<namespace>/<name>`. The hash is always there, not only when the name is too long, because
//! the readable part alone is ambiguous: Tenant `team/a-prod` and Tenant `team-a/prod` would
//! both be `pgfleet-tenant-team-a-prod`, and in a fleet shared by both namespaces one tenant's
//! document would overwrite the other's. With the hash, two Tenants share a Secret name only
//! through a SHA-256 collision on 64 bits. Long names truncate the readable part (never the
//! hash) to fit the 253 characters of a Secret name.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use pgfleet_crds::{Tenant, TenantDocument};
use sha2::{Digest, Sha256};

use super::error::RenderError;
use super::meta::{LABEL_FLEET, LABEL_MANAGED_BY, MANAGED_BY};

/// The data key holding the document, as YAML.
pub const TENANT_DOCUMENT_KEY: &str = "tenant.yaml";
/// Label and annotation: the Tenant's name. The label is shortened (with a hash) for names over
/// the 63 characters a label value allows; the annotation always holds the full name.
pub const LABEL_TENANT: &str = "pgfleet.io/tenant";
/// Label: the Tenant's namespace.
pub const LABEL_TENANT_NAMESPACE: &str = "pgfleet.io/tenant-namespace";
/// Annotation: the Tenant's `metadata.generation` the document was rendered from.
pub const ANNOTATION_TENANT_GENERATION: &str = "pgfleet.io/tenant-generation";

const NAME_PREFIX: &str = "pgfleet-tenant-";
/// The most characters of a Secret name (a DNS subdomain).
const MAX_NAME: usize = 253;
/// The most characters of a label value.
const MAX_LABEL_VALUE: usize = 63;
/// Hex digits of the disambiguating hash.
const HASH_DIGITS: usize = 16;

/// Where a Tenant's document goes: the namespace and name of its fleet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetKey {
    /// The fleet's namespace: `spec.fleetRef.namespace`, else the Tenant's.
    pub namespace: String,
    /// The fleet's name.
    pub name: String,
}

impl FleetKey {
    /// The fleet a Tenant references.
    pub fn of(tenant: &Tenant) -> Result<Self, RenderError> {
        let tenant_namespace = tenant_namespace(tenant)?;
        Ok(FleetKey {
            namespace: tenant
                .spec
                .fleet_ref
                .namespace
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| tenant_namespace.to_string()),
            name: tenant.spec.fleet_ref.name.clone(),
        })
    }
}

/// The name of the Secret holding the document of Tenant `namespace/name` (see the module
/// documentation).
pub fn tenant_document_secret_name(namespace: &str, name: &str) -> String {
    let hash = short_hash(&format!("{namespace}/{name}"));
    let room = MAX_NAME - NAME_PREFIX.len() - 1 - HASH_DIGITS;
    let readable = format!("{namespace}-{name}");
    let readable = truncate_dns(&readable, room);
    format!("{NAME_PREFIX}{readable}-{hash}")
}

/// The label selector of every tenant-document Secret of fleet `fleet` (in the fleet's
/// namespace).
pub fn tenant_documents_selector(fleet: &str) -> String {
    format!("{LABEL_FLEET}={fleet},{LABEL_TENANT}")
}

/// The Secret carrying `document`, rendered from `tenant`, into the namespace of the Tenant's
/// fleet.
pub fn tenant_document_secret(
    tenant: &Tenant,
    document: &TenantDocument,
) -> Result<Secret, RenderError> {
    let name = tenant_name(tenant)?;
    let namespace = tenant_namespace(tenant)?;
    let fleet = FleetKey::of(tenant)?;
    let yaml = document.to_yaml()?;

    let labels = BTreeMap::from([
        (LABEL_FLEET.to_string(), fleet.name.clone()),
        (LABEL_TENANT.to_string(), label_value(name)),
        (LABEL_TENANT_NAMESPACE.to_string(), namespace.to_string()),
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
    ]);
    let mut annotations = BTreeMap::from([(LABEL_TENANT.to_string(), name.to_string())]);
    if let Some(generation) = tenant.metadata.generation {
        annotations.insert(
            ANNOTATION_TENANT_GENERATION.to_string(),
            generation.to_string(),
        );
    }

    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(tenant_document_secret_name(namespace, name)),
            namespace: Some(fleet.namespace),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        // `data`, not `stringData`: stringData is write-only, so server-side apply would see
        // a difference on every reconcile.
        data: Some(BTreeMap::from([(
            TENANT_DOCUMENT_KEY.to_string(),
            ByteString(yaml.into_bytes()),
        )])),
        ..Secret::default()
    })
}

fn tenant_namespace(tenant: &Tenant) -> Result<&str, RenderError> {
    required_meta(tenant.metadata.namespace.as_deref(), "namespace")
}

/// The Tenant's name, which every rendered object derives from.
pub(crate) fn tenant_name(tenant: &Tenant) -> Result<&str, RenderError> {
    required_meta(tenant.metadata.name.as_deref(), "name")
}

fn required_meta<'a>(value: Option<&'a str>, field: &'static str) -> Result<&'a str, RenderError> {
    value
        .filter(|v| !v.is_empty())
        .ok_or(RenderError::MissingMetadata(field))
}

/// The Tenant's name as a label value: itself when it fits in 63 characters, else a prefix and
/// a hash (Tenant names are DNS subdomains, so only the length can be wrong).
fn label_value(name: &str) -> String {
    if name.len() <= MAX_LABEL_VALUE {
        return name.to_string();
    }
    let room = MAX_LABEL_VALUE - 1 - HASH_DIGITS;
    format!("{}-{}", truncate_dns(name, room), short_hash(name))
}

/// The first `max` characters of a DNS name, without the trailing '-' or '.' a cut can leave
/// (a label may not end with either, and `-` follows).
fn truncate_dns(text: &str, max: usize) -> &str {
    // DNS names are ASCII, so byte and character positions agree; `get` guards the rest.
    let cut = text.get(..max.min(text.len())).unwrap_or(text);
    cut.trim_end_matches(['-', '.'])
}

fn short_hash(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .take(HASH_DIGITS / 2)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::tenant_document::{ResolvedSecrets, render_tenant_document};
    use crate::resources::test_support::tenant;

    const SPEC: &str = "upstream: {host: db.internal}\nusers: [{name: app, passwordSecretRef: {name: s, key: password}}]\n";

    fn resolved() -> ResolvedSecrets {
        ResolvedSecrets {
            user_passwords: BTreeMap::from([("app".to_string(), "pw".to_string())]),
            ..ResolvedSecrets::default()
        }
    }

    fn is_dns_subdomain(name: &str) -> bool {
        name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    }

    fn is_label_value(value: &str) -> bool {
        value.len() <= 63
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && value
                .bytes()
                .next()
                .is_none_or(|b| b.is_ascii_alphanumeric())
            && value
                .bytes()
                .last()
                .is_none_or(|b| b.is_ascii_alphanumeric())
    }

    #[test]
    fn short_names_are_readable_with_a_hash() {
        let name = tenant_document_secret_name("team-a", "acme");
        assert!(name.starts_with("pgfleet-tenant-team-a-acme-"), "{name}");
        assert_eq!(name.len(), "pgfleet-tenant-team-a-acme-".len() + 16);
        assert!(is_dns_subdomain(&name));
        assert_eq!(
            name,
            tenant_document_secret_name("team-a", "acme"),
            "stable"
        );
    }

    #[test]
    fn ambiguous_pairs_get_different_names() {
        let a = tenant_document_secret_name("team", "a-prod");
        let b = tenant_document_secret_name("team-a", "prod");
        assert_ne!(a, b);
        assert!(a.starts_with("pgfleet-tenant-team-a-prod-"));
        assert!(b.starts_with("pgfleet-tenant-team-a-prod-"));
    }

    #[test]
    fn long_names_are_truncated_to_a_valid_secret_name() {
        let namespace = "n".repeat(63);
        let long = format!("{}.{}.{}", "a".repeat(100), "b".repeat(100), "c".repeat(51));
        assert_eq!(long.len(), 253);
        let name = tenant_document_secret_name(&namespace, &long);
        assert_eq!(name.len(), 253);
        assert!(is_dns_subdomain(&name), "{name}");
        // Names that differ only past the cut still differ.
        let other = format!("{}.{}.{}", "a".repeat(100), "b".repeat(100), "d".repeat(51));
        assert_ne!(name, tenant_document_secret_name(&namespace, &other));

        // A cut landing on '.' or '-' does not leave it dangling before the hash.
        for cut_char in ['.', '-'] {
            let room = 253 - NAME_PREFIX.len() - 1 - 16;
            // "ns-" + name: put `cut_char` right at the last kept position.
            let head = "x".repeat(room - 3 - 1);
            let name = format!("{head}{cut_char}{}", "y".repeat(40));
            let secret = tenant_document_secret_name("ns", &name);
            assert!(is_dns_subdomain(&secret), "{secret}");
            assert!(!secret.contains(".-") && !secret.contains("--"), "{secret}");
        }
    }

    #[test]
    fn secret_carries_the_document() {
        let t = tenant(
            "acme",
            "team-a",
            &format!("fleetRef: {{name: edge, namespace: db}}\n{SPEC}"),
        );
        let doc = render_tenant_document(&t, &resolved(), 2).expect("renders");
        let secret = tenant_document_secret(&t, &doc).expect("builds");
        assert_eq!(
            secret.metadata.name,
            Some(tenant_document_secret_name("team-a", "acme"))
        );
        assert_eq!(
            secret.metadata.namespace.as_deref(),
            Some("db"),
            "the fleet's namespace"
        );
        let labels = secret.metadata.labels.clone().expect("labels");
        assert_eq!(labels["pgfleet.io/fleet"], "edge");
        assert_eq!(labels["pgfleet.io/tenant"], "acme");
        assert_eq!(labels["pgfleet.io/tenant-namespace"], "team-a");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "pgfleet-operator");
        let annotations = secret.metadata.annotations.clone().expect("annotations");
        assert_eq!(annotations["pgfleet.io/tenant-generation"], "3");
        assert_eq!(annotations["pgfleet.io/tenant"], "acme");
        assert_eq!(secret.metadata.owner_references, None);
        assert_eq!(secret.type_.as_deref(), Some("Opaque"));
        assert_eq!(secret.string_data, None);

        let data = secret.data.expect("data");
        assert_eq!(data.len(), 1);
        let text = std::str::from_utf8(&data["tenant.yaml"].0).expect("utf-8");
        let parsed = TenantDocument::parse(text).expect("the pooler loads it");
        assert_eq!(parsed, doc);
    }

    #[test]
    fn the_fleet_defaults_to_the_tenants_namespace() {
        let t = tenant("acme", "team-a", SPEC);
        assert_eq!(
            FleetKey::of(&t).expect("key"),
            FleetKey {
                namespace: "team-a".into(),
                name: "default".into()
            }
        );
        let doc = render_tenant_document(&t, &resolved(), 1).expect("renders");
        let secret = tenant_document_secret(&t, &doc).expect("builds");
        assert_eq!(secret.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(
            secret.metadata.labels.expect("labels")["pgfleet.io/fleet"],
            "default"
        );
    }

    #[test]
    fn long_tenant_names_get_a_valid_label_and_the_full_annotation() {
        let long = format!("{}.example.com", "t".repeat(80));
        let t = tenant(&long, "team-a", &format!("externalId: acme\n{SPEC}"));
        let doc = render_tenant_document(&t, &resolved(), 1).expect("renders");
        let secret = tenant_document_secret(&t, &doc).expect("builds");
        let label = &secret.metadata.labels.expect("labels")["pgfleet.io/tenant"];
        assert!(is_label_value(label), "{label}");
        assert_eq!(label.len(), 63);
        assert_eq!(
            secret.metadata.annotations.expect("annotations")["pgfleet.io/tenant"],
            long
        );
        assert!(is_dns_subdomain(&secret.metadata.name.expect("name")));
    }

    #[test]
    fn selector_picks_the_fleets_documents() {
        assert_eq!(
            tenant_documents_selector("edge"),
            "pgfleet.io/fleet=edge,pgfleet.io/tenant"
        );
    }

    #[test]
    fn needs_name_and_namespace() {
        let t = tenant("acme", "team-a", SPEC);
        let doc = render_tenant_document(&t, &resolved(), 1).expect("renders");
        let mut no_ns = t.clone();
        no_ns.metadata.namespace = None;
        assert_eq!(
            tenant_document_secret(&no_ns, &doc),
            Err(RenderError::MissingMetadata("namespace"))
        );
        let mut no_name = t;
        no_name.metadata.name = None;
        assert_eq!(
            tenant_document_secret(&no_name, &doc),
            Err(RenderError::MissingMetadata("name"))
        );
    }
}
