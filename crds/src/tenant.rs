//! The `Tenant` custom resource (`pgfleet.io/v1alpha1`): one PostgreSQL database served by a
//! pooler fleet, as a platform team declares it.
//!
//! The schema refuses bad specs at `kubectl apply` with messages a person understands (OpenAPI
//! constraints where they suffice, CEL rules for the rest); the operator re-checks what the
//! schema cannot see (Secret contents, conflicts between tenants) and reports it in `status`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

use crate::document::PoolMode;
use crate::schema::{add_item_rule, add_rule, conditions, string_enum};

/// The API group of pgfleet's resources.
pub const GROUP: &str = "pgfleet.io";
/// The API version of pgfleet's resources.
pub const VERSION: &str = "v1alpha1";

/// `^[A-Za-z0-9_-]{1,63}$`, as a CEL string literal's content.
const EXTERNAL_ID_PATTERN: &str = "^[A-Za-z0-9_-]{1,63}$";
/// Durations with units: `500ms`, `30s`, `5m`, `1h`, `1m30s`.
const DURATION_PATTERN: &str = "^([0-9]{1,9}(ms|s|m|h))+$";

/// Message shown when a duration field is not a duration.
const DURATION_MESSAGE: &str = "must be a duration with units, such as 500ms, 30s, 5m or 1h30m";

/// A tenant: a PostgreSQL database reached through a pooler fleet.
///
/// Clients connect to the fleet's Service as `<user>.<externalId>`; the operator renders this
/// spec, with secrets resolved, into a tenant document every pooler of the fleet loads.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "pgfleet.io",
    version = "v1alpha1",
    kind = "Tenant",
    plural = "tenants",
    shortname = "pgt",
    category = "pgfleet",
    namespaced,
    status = "TenantStatus",
    derive = "PartialEq",
    doc = "A tenant: a PostgreSQL database that a pgfleet pooler fleet serves to its clients as <user>.<externalId>.",
    selectable = ".spec.fleetRef.name",
    validation = kube::core::Rule::new(
        "has(self.spec.externalId) || self.metadata.name.matches('^[A-Za-z0-9_-]{1,63}$')"
    ).message(
        "metadata.name is not a valid tenant id (only letters, digits, '_' and '-', at most 63 characters): set spec.externalId"
    ),
    printcolumn(
        name = "Mode",
        type_ = "string",
        json_path = ".spec.mode",
        description = "Pool mode on the fleet's pooled port"
    ),
    printcolumn(
        name = "Pool",
        type_ = "integer",
        json_path = ".spec.defaultPoolSize",
        description = "Server connections per (user, database), fleet-wide"
    ),
    printcolumn(
        name = "JIT",
        type_ = "boolean",
        json_path = ".spec.useJit",
        description = "Just-in-time access through a remote API"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Rendered and served by an available fleet"
    ),
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        json_path = ".status.endpoint",
        description = "Connection string to use"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!self.useJit || has(self.jitApiUrl)",
        "message": "jitApiUrl is required when useJit is true",
        "fieldPath": ".jitApiUrl",
        "reason": "FieldValueRequired"
    },
    {
        "rule": "(has(self.users) && size(self.users) > 0) || has(self.authQuery)",
        "message": "users or authQuery must be set, or nobody can log in",
        "fieldPath": ".users",
        "reason": "FieldValueRequired"
    }
]))]
pub struct TenantSpec {
    /// What clients write after the dot in `user.tenant` (or in `options=reference=<id>`):
    /// 1 to 63 letters, digits, '_' or '-', unique within the fleet. Defaults to metadata.name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", length(max = 63), transform = external_id_rule)]
    pub external_id: Option<String>,

    /// The PoolerFleet that serves this tenant. Defaults to the fleet named "default" in the
    /// tenant's namespace.
    #[serde(default)]
    pub fleet_ref: FleetRef,

    /// The tenant's PostgreSQL server.
    pub upstream: UpstreamSpec,

    /// Pool mode on the fleet's pooled port: "transaction" (a server connection is held for one
    /// transaction) or "session" (for the whole client session). The session port is always
    /// session mode.
    #[serde(default)]
    pub mode: PoolMode,

    /// Server connections per (user, database) for the whole fleet; the operator splits it
    /// across the fleet's ready replicas (at least 1 each).
    #[serde(default = "default_pool_size")]
    #[schemars(range(min = 1, max = 10000))]
    pub default_pool_size: i32,

    /// Client connections allowed per user, and for the tenant as a whole, across the fleet.
    /// 0 refuses every client.
    #[serde(default = "default_max_clients")]
    #[schemars(range(min = 0, max = 1000000))]
    pub default_max_clients: i32,

    /// Users whose passwords the pooler knows (from Secrets). Names are unique.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 256),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])
    )]
    pub users: Vec<TenantUser>,

    /// Lets any role log in with its own PostgreSQL password, looked up in the upstream's
    /// pg_authid by a dedicated auth user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "AuthQuerySpec")]
    pub auth_query: Option<AuthQuerySpec>,

    /// Just-in-time access: TLS clients may log in with a personal access token or JWT that the
    /// pooler checks against jitApiUrl on every login.
    #[serde(default)]
    pub use_jit: bool,

    /// The JIT API (an http:// or https:// URL) the pooler POSTs tokens to. Required with useJit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", length(max = 2048), transform = jit_api_url_rule)]
    pub jit_api_url: Option<String>,

    /// Client networks (CIDRs) allowed in. Defaults to everyone.
    #[serde(default = "default_allow_list")]
    #[schemars(
        length(min = 1, max = 64),
        inner(length(max = 64)),
        transform = allow_list_rule
    )]
    pub allow_list: Vec<String>,

    /// Refuse clients that do not use TLS.
    #[serde(default)]
    pub require_tls: bool,

    /// Close clients idle outside a transaction for this long (e.g. "10m"). Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", length(max = 32), transform = client_idle_timeout_rule)]
    pub client_idle_timeout: Option<String>,

    /// How long a client waits for a server connection before it gets an error.
    #[serde(default = "default_checkout_timeout")]
    #[schemars(length(max = 32), transform = checkout_timeout_rule)]
    pub checkout_timeout: String,
}

/// A reference to the PoolerFleet serving a tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FleetRef {
    /// The PoolerFleet's name.
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_1035_LABEL))]
    pub name: String,
    /// The PoolerFleet's namespace; the tenant's own when absent. The fleet must list the
    /// tenant's namespace in allowedTenantNamespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", length(min = 1, max = 63), regex(pattern = DNS_1123_LABEL))]
    pub namespace: Option<String>,
}

impl Default for FleetRef {
    fn default() -> Self {
        FleetRef {
            name: "default".into(),
            namespace: None,
        }
    }
}

/// The tenant's PostgreSQL server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamSpec {
    /// Host name or IP address.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^\S+$"))]
    pub host: String,
    /// TCP port.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Database used when a client names none, and where the auth query runs.
    #[serde(default = "default_database")]
    #[schemars(length(min = 1, max = 63))]
    pub database: String,
    /// TLS towards the server.
    #[serde(default)]
    pub tls: UpstreamTls,
}

/// TLS towards the tenant's PostgreSQL server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamTls {
    /// "disable", "require" (encrypt, no certificate check), "verify-ca" (the server's
    /// certificate chains to a trusted CA) or "verify-full" (and its name matches host), as in
    /// libpq's sslmode.
    #[serde(default)]
    pub mode: TlsMode,
    /// A Secret key holding the PEM CA certificate(s) to trust for verify-ca and verify-full;
    /// the pooler's built-in trust roots when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "SecretKeyRef")]
    pub ca_secret_ref: Option<SecretKeyRef>,
}

/// How the pooler protects its connections to the upstream (libpq's `sslmode` names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Plain TCP.
    #[default]
    Disable,
    /// TLS without checking the server's certificate.
    Require,
    /// TLS with a certificate that chains to a trusted CA.
    VerifyCa,
    /// TLS with a trusted certificate whose name matches the host.
    VerifyFull,
}

impl JsonSchema for TlsMode {
    fn schema_name() -> Cow<'static, str> {
        "TlsMode".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        string_enum(&["disable", "require", "verify-ca", "verify-full"])
    }
}

impl JsonSchema for PoolMode {
    fn schema_name() -> Cow<'static, str> {
        "PoolMode".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        string_enum(&["transaction", "session"])
    }
}

/// A user whose password the pooler knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantUser {
    /// The PostgreSQL role, as clients write it before ".<externalId>" and as the pooler logs in
    /// upstream.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// The Secret key holding the role's password (in the tenant's namespace).
    pub password_secret_ref: SecretKeyRef,
    /// Server connections per database for this user, fleet-wide; defaultPoolSize when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "i32", range(min = 1, max = 10000))]
    pub pool_size: Option<i32>,
    /// Client connections for this user, fleet-wide; defaultMaxClients when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "i32", range(min = 0, max = 1000000))]
    pub max_clients: Option<i32>,
    /// Pool mode on the pooled port for this user; the tenant's mode when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "PoolMode")]
    pub mode: Option<PoolMode>,
}

/// A key of a Secret in the tenant's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_1123_SUBDOMAIN))]
    pub name: String,
    /// The key within the Secret.
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY))]
    pub key: String,
}

/// A Secret in the tenant's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_1123_SUBDOMAIN))]
    pub name: String,
}

/// Authentication through the upstream's own pg_authid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthQuerySpec {
    /// A Secret with the keys "username" and "password": the role that runs the query, which
    /// must be allowed to read role passwords (e.g. through a SECURITY DEFINER function).
    pub user_secret_ref: SecretRef,
    /// SQL returning (rolname, rolpassword) for the role named by $1. Defaults to reading
    /// pg_catalog.pg_authid directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", length(min = 1, max = 4096), transform = auth_query_rule)]
    pub query: Option<String>,
}

/// What the operator observed about a tenant.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// "Accepted" (spec and Secrets resolved) and "Ready" (rendered, and the fleet available).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions")]
    pub conditions: Vec<Condition>,
    /// The connection string clients use, e.g.
    /// postgresql://<user>.acme@default.db.svc:6543/postgres.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The fleet serving the tenant, as <namespace>/<name>.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<String>,
}

/// The condition type set when the spec and its Secrets resolved.
pub const CONDITION_ACCEPTED: &str = "Accepted";
/// The condition type set when the tenant is rendered and its fleet is available.
pub const CONDITION_READY: &str = "Ready";

/// RFC 1123 label: namespaces.
pub(crate) const DNS_1123_LABEL: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// RFC 1035 label: names that become Service names (fleets).
pub(crate) const DNS_1035_LABEL: &str = "^[a-z]([-a-z0-9]*[a-z0-9])?$";
/// RFC 1123 subdomain: Secret names.
pub(crate) const DNS_1123_SUBDOMAIN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A Secret data key.
const SECRET_KEY: &str = r"^[-._a-zA-Z0-9]+$";

fn external_id_rule(schema: &mut Schema) {
    add_rule(
        schema,
        &format!("self.matches('{EXTERNAL_ID_PATTERN}')"),
        "externalId must be 1 to 63 letters, digits, '_' or '-' (clients write it after the dot in user.tenant)",
    );
}

fn jit_api_url_rule(schema: &mut Schema) {
    add_rule(
        schema,
        "(self.startsWith('http://') || self.startsWith('https://')) && isURL(self) && url(self).getHostname() != ''",
        "jitApiUrl must be an http:// or https:// URL with a host, such as https://api.example.com/v1/jit",
    );
}

fn allow_list_rule(schema: &mut Schema) {
    add_item_rule(
        schema,
        "isCIDR(self)",
        "each allowList entry must be a CIDR, such as 10.0.0.0/8, 192.168.1.7/32 or 2001:db8::/32",
    );
}

fn client_idle_timeout_rule(schema: &mut Schema) {
    add_rule(
        schema,
        &format!("self.matches('{DURATION_PATTERN}')"),
        &format!("clientIdleTimeout {DURATION_MESSAGE}"),
    );
}

fn checkout_timeout_rule(schema: &mut Schema) {
    add_rule(
        schema,
        &format!("self.matches('{DURATION_PATTERN}')"),
        &format!("checkoutTimeout {DURATION_MESSAGE}"),
    );
    add_rule(
        schema,
        "!self.matches('^(0+(ms|s|m|h))+$')",
        "checkoutTimeout must be greater than zero",
    );
}

fn auth_query_rule(schema: &mut Schema) {
    add_rule(
        schema,
        "self.contains('$1')",
        "authQuery.query must use $1 for the name of the role being looked up",
    );
}

fn default_pool_size() -> i32 {
    15
}
fn default_max_clients() -> i32 {
    1000
}
fn default_port() -> i32 {
    5432
}
fn default_database() -> String {
    "postgres".into()
}
fn default_allow_list() -> Vec<String> {
    vec!["0.0.0.0/0".into(), "::/0".into()]
}
fn default_checkout_timeout() -> String {
    "60s".into()
}

impl TenantSpec {
    /// The id clients use for this tenant: `externalId`, or the object's name when absent.
    pub fn effective_external_id<'a>(&'a self, name: &'a str) -> &'a str {
        self.external_id.as_deref().unwrap_or(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;
    use kube::Resource;

    #[test]
    fn names_and_scope() {
        assert_eq!(Tenant::group(&()), GROUP);
        assert_eq!(Tenant::version(&()), VERSION);
        assert_eq!(Tenant::kind(&()), "Tenant");
        assert_eq!(Tenant::plural(&()), "tenants");
        assert_eq!(Tenant::crd_name(), "tenants.pgfleet.io");
        assert_eq!(Tenant::shortnames(), &["pgt"]);
    }

    #[test]
    fn minimal_spec_gets_the_documented_defaults() {
        let spec: TenantSpec = serde_yaml_ng::from_str(
            "upstream: {host: db.example}\nusers: [{name: app, passwordSecretRef: {name: s, key: password}}]\n",
        )
        .expect("parses");
        assert_eq!(spec.fleet_ref, FleetRef::default());
        assert_eq!(spec.fleet_ref.name, "default");
        assert_eq!(spec.upstream.port, 5432);
        assert_eq!(spec.upstream.database, "postgres");
        assert_eq!(spec.upstream.tls.mode, TlsMode::Disable);
        assert_eq!(spec.mode, PoolMode::Transaction);
        assert_eq!(spec.default_pool_size, 15);
        assert_eq!(spec.default_max_clients, 1000);
        assert_eq!(spec.allow_list, ["0.0.0.0/0", "::/0"]);
        assert_eq!(spec.checkout_timeout, "60s");
        assert!(!spec.use_jit && !spec.require_tls);
        assert_eq!(spec.client_idle_timeout, None);
        assert_eq!(spec.effective_external_id("acme"), "acme");
    }

    #[test]
    fn absent_options_are_not_serialized() {
        let spec: TenantSpec = serde_yaml_ng::from_str(
            "upstream: {host: h}\nauthQuery: {userSecretRef: {name: auth}}\n",
        )
        .expect("parses");
        let json = serde_json::to_value(&spec).expect("serializes");
        for absent in ["externalId", "jitApiUrl", "clientIdleTimeout", "users"] {
            assert!(json.get(absent).is_none(), "{absent} should be omitted");
        }
        assert!(json["authQuery"].get("query").is_none());
        assert!(json["upstream"]["tls"].get("caSecretRef").is_none());
    }

    #[test]
    fn tls_modes_use_libpq_names() {
        for (text, mode) in [
            ("disable", TlsMode::Disable),
            ("require", TlsMode::Require),
            ("verify-ca", TlsMode::VerifyCa),
            ("verify-full", TlsMode::VerifyFull),
        ] {
            let parsed: TlsMode = serde_json::from_value(text.into()).expect("known mode");
            assert_eq!(parsed, mode);
            assert_eq!(serde_json::to_value(mode).expect("serializes"), text);
        }
    }
}
