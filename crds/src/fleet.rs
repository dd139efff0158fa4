//! The `PoolerFleet` custom resource (`pgfleet.io/v1alpha1`): a Deployment of poolers behind a
//! Service, serving the tenants that reference it.
//!
//! The operator owns the fleet's children (ServiceAccount, Role and RoleBinding, Deployment,
//! Service, PodDisruptionBudget). The scale subresource lets `kubectl scale` and a
//! HorizontalPodAutoscaler drive `spec.replicas`.

use k8s_openapi::api::core::v1::{
    Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::schema::{add_item_rule, add_rule, conditions, string_enum};
use crate::tenant::{DNS_1123_LABEL, DNS_1123_SUBDOMAIN};

/// A fleet of pgfleet poolers: a Deployment behind a Service, serving the tenants that
/// reference it.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "pgfleet.io",
    version = "v1alpha1",
    kind = "PoolerFleet",
    plural = "poolerfleets",
    shortname = "pgf",
    category = "pgfleet",
    namespaced,
    status = "PoolerFleetStatus",
    derive = "PartialEq",
    doc = "A fleet of pgfleet connection poolers (a Deployment behind a Service) serving the Tenants that reference it.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    validation = kube::core::Rule::new(
        "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 52"
    ).message(
        "a PoolerFleet name must start with a lowercase letter, contain only lowercase letters, digits and '-', and be at most 52 characters, because it names the fleet's Service and Deployment"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Desired pooler replicas"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Ready pooler replicas"
    ),
    printcolumn(
        name = "Tenants",
        type_ = "integer",
        json_path = ".status.tenants",
        description = "Tenants the fleet serves"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PoolerFleetSpec {
    /// Pooler pods. Tenants' poolSize and maxClients are fleet-wide totals the operator splits
    /// across ready replicas, so scaling never multiplies upstream connections.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0))]
    pub replicas: i32,

    /// The pooler image; the operator's default (its own version) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", length(min = 1, max = 1024))]
    pub image: Option<String>,

    /// CPU and memory for each pooler container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "ResourceRequirements")]
    pub resources: Option<ResourceRequirements>,

    /// Container ports: session (always session mode), pooled (each tenant's mode) and admin
    /// (HTTP: /healthz, /readyz, /metrics, /status).
    #[serde(default)]
    pub ports: FleetPorts,

    /// The fleet's Service, which clients connect to.
    #[serde(default)]
    pub service: FleetService,

    /// Server certificate for client TLS. Without it the fleet accepts only clear-text clients,
    /// so tenants with requireTls or useJit cannot log in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "FleetTls")]
    pub tls: Option<FleetTls>,

    /// The fleet's PodDisruptionBudget. When absent the operator keeps minAvailable 1 while
    /// replicas > 1, and creates none for a single replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "PodDisruptionBudgetSpec")]
    pub pod_disruption_budget: Option<PodDisruptionBudgetSpec>,

    /// Node labels the pooler pods must run on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations of the pooler pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Affinity of the pooler pods. When absent the operator prefers spreading replicas across
    /// nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Affinity")]
    pub affinity: Option<Affinity>,

    /// Topology spread constraints of the pooler pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,

    /// Namespaces whose Tenants may use this fleet besides its own: [] (the default) means the
    /// fleet's namespace only, ["*"] means every namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 256),
        inner(length(min = 1, max = 63)),
        transform = allowed_namespaces_rules
    )]
    pub allowed_tenant_namespaces: Vec<String>,

    /// Seconds a pooler has to drain (let busy clients finish) when its pod stops.
    #[serde(default = "default_termination_grace_period_seconds")]
    #[schemars(range(min = 0))]
    pub termination_grace_period_seconds: i64,
}

/// The container ports of every pooler.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.session != self.pooled && self.session != self.admin && self.pooled != self.admin",
        "message": "the session, pooled and admin ports must all differ"
    }
]))]
pub struct FleetPorts {
    /// PostgreSQL port where every client gets session mode.
    #[serde(default = "default_session_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub session: i32,
    /// PostgreSQL port in each tenant's (or user's) pool mode.
    #[serde(default = "default_pooled_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub pooled: i32,
    /// HTTP port for probes, metrics and status.
    #[serde(default = "default_admin_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub admin: i32,
}

impl Default for FleetPorts {
    fn default() -> Self {
        FleetPorts {
            session: default_session_port(),
            pooled: default_pooled_port(),
            admin: default_admin_port(),
        }
    }
}

/// The fleet's Service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FleetService {
    /// "ClusterIP", "NodePort" or "LoadBalancer".
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Annotations for the Service (e.g. for a cloud load balancer).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// How the fleet's Service is exposed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ServiceType {
    /// Reachable inside the cluster only.
    #[default]
    ClusterIP,
    /// Also on a port of every node.
    NodePort,
    /// Through the cloud's load balancer.
    LoadBalancer,
}

impl ServiceType {
    /// The Kubernetes Service `type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

impl JsonSchema for ServiceType {
    fn schema_name() -> Cow<'static, str> {
        "ServiceType".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        string_enum(&["ClusterIP", "NodePort", "LoadBalancer"])
    }
}

/// Client TLS for the fleet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FleetTls {
    /// A kubernetes.io/tls Secret (keys tls.crt and tls.key) in the fleet's namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_1123_SUBDOMAIN))]
    pub secret_name: String,
}

/// The fleet's PodDisruptionBudget.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodDisruptionBudgetSpec {
    /// Pods that must stay available during voluntary disruptions: a number or a percentage
    /// ("50%"). 0 disables the budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "IntOrString", transform = min_available_rule)]
    pub min_available: Option<IntOrString>,
}

/// What the operator observed about a fleet.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolerFleetStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pooler pods that exist (the scale subresource's status replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Pooler pods that are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// The label selector of the fleet's pods, for the scale subresource (and so for an HPA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Tenants the fleet serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenants: Option<i32>,
    /// "Ready" (every desired pooler replica runs the current pod template and is ready) and
    /// "Available" (at least one replica is ready, so the fleet accepts clients).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions")]
    pub conditions: Vec<Condition>,
}

/// Condition type: every desired pooler replica runs the current pod template and is ready.
pub const CONDITION_READY: &str = "Ready";
/// Condition type: at least one pooler replica is ready, so the fleet accepts clients.
pub const CONDITION_AVAILABLE: &str = "Available";

/// The entry of `allowedTenantNamespaces` that admits every namespace.
pub const ALL_NAMESPACES: &str = "*";

impl PoolerFleetSpec {
    /// Whether a Tenant in `tenant_namespace` may use this fleet, which lives in
    /// `fleet_namespace`.
    pub fn admits_namespace(&self, fleet_namespace: &str, tenant_namespace: &str) -> bool {
        tenant_namespace == fleet_namespace
            || self
                .allowed_tenant_namespaces
                .iter()
                .any(|n| n == ALL_NAMESPACES || n == tenant_namespace)
    }
}

fn allowed_namespaces_rules(schema: &mut Schema) {
    add_item_rule(
        schema,
        &format!("self == '*' || self.matches('{DNS_1123_LABEL}')"),
        "each allowedTenantNamespaces entry must be a namespace name or \"*\"",
    );
    add_rule(
        schema,
        "!('*' in self) || size(self) == 1",
        "allowedTenantNamespaces: \"*\" already allows every namespace and cannot be combined with names",
    );
}

fn min_available_rule(schema: &mut Schema) {
    // An explicit null is pruned rather than stored, so the rule never meets one.
    schema.insert("nullable".into(), false.into());
    add_rule(
        schema,
        // `self == string(self)` holds only for a string (CEL equality across types is false);
        // it stands in for `type(self) == string`, which kube-cel cannot evaluate in our tests.
        "self == string(self) ? self.matches('^([0-9]|[1-9][0-9]|100)%$') : self >= 0",
        "minAvailable must be a number of pods (0 or more) or a percentage from 0% to 100%, such as \"50%\"",
    );
}

fn default_replicas() -> i32 {
    2
}
fn default_session_port() -> i32 {
    5432
}
fn default_pooled_port() -> i32 {
    6543
}
fn default_admin_port() -> i32 {
    8080
}
fn default_termination_grace_period_seconds() -> i64 {
    30
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;
    use kube::Resource;

    #[test]
    fn names_and_scope() {
        assert_eq!(PoolerFleet::kind(&()), "PoolerFleet");
        assert_eq!(PoolerFleet::plural(&()), "poolerfleets");
        assert_eq!(PoolerFleet::crd_name(), "poolerfleets.pgfleet.io");
        assert_eq!(PoolerFleet::shortnames(), &["pgf"]);
    }

    #[test]
    fn empty_spec_gets_the_documented_defaults() {
        let spec: PoolerFleetSpec = serde_yaml_ng::from_str("{}").expect("parses");
        assert_eq!(spec.replicas, 2);
        assert_eq!(spec.ports, FleetPorts::default());
        assert_eq!(
            (spec.ports.session, spec.ports.pooled, spec.ports.admin),
            (5432, 6543, 8080)
        );
        assert_eq!(spec.service.type_, ServiceType::ClusterIP);
        assert_eq!(spec.termination_grace_period_seconds, 30);
        assert!(spec.allowed_tenant_namespaces.is_empty());
        assert!(spec.tls.is_none() && spec.pod_disruption_budget.is_none());
    }

    #[test]
    fn tenant_namespaces() {
        let mut spec: PoolerFleetSpec = serde_yaml_ng::from_str("{}").expect("parses");
        assert!(spec.admits_namespace("db", "db"));
        assert!(!spec.admits_namespace("db", "team-a"));
        spec.allowed_tenant_namespaces = vec!["team-a".into()];
        assert!(spec.admits_namespace("db", "team-a"));
        assert!(!spec.admits_namespace("db", "team-b"));
        spec.allowed_tenant_namespaces = vec![ALL_NAMESPACES.into()];
        assert!(spec.admits_namespace("db", "team-b"));
    }

    #[test]
    fn service_type_names() {
        for t in [
            ServiceType::ClusterIP,
            ServiceType::NodePort,
            ServiceType::LoadBalancer,
        ] {
            assert_eq!(serde_json::to_value(t).expect("serializes"), t.as_str());
        }
    }
}
