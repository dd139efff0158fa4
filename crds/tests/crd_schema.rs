//! The generated CustomResourceDefinitions: names, columns, subresources, a structural schema,
//! and the admission behaviour a user sees at `kubectl apply`.
//!
//! Admission is approximated here without an API server: schema defaults are applied, then a
//! small OpenAPI checker (type, enum, bounds, pattern, required, unknown fields, list-map keys)
//! and kube-cel (the Kubernetes CEL libraries, client-side) run against the object. A real
//! kube-apiserver accepting these CRDs is tested elsewhere.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::core::cel::{CompiledSchema, ScopeContext, Validator, analyze_rule, compile_schema};
use pgfleet_crds::{PoolMode, PoolerFleet, Tenant, TlsMode};
use regex::Regex;
use serde::Deserialize;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Helpers

fn schema_of(crd: &CustomResourceDefinition) -> Value {
    let version = &crd.spec.versions[0];
    let schema = version
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("CRD has an openAPIV3Schema");
    serde_json::to_value(schema).expect("schema serializes")
}

/// The schema node at `path`: property names separated by dots, `[]` for array items.
fn node<'a>(schema: &'a Value, path: &str) -> &'a Value {
    let mut current = schema;
    for segment in path.split('.').filter(|s| !s.is_empty()) {
        let (name, items) = match segment.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (segment, false),
        };
        if !name.is_empty() {
            current = current
                .get("properties")
                .and_then(|p| p.get(name))
                .unwrap_or_else(|| panic!("no property {name:?} on the way to {path}"));
        }
        if items {
            current = current
                .get("items")
                .unwrap_or_else(|| panic!("{name} in {path} has no items"));
        }
    }
    current
}

/// The (rule, message) pairs at a schema node.
fn rules(schema: &Value, path: &str) -> Vec<(String, String)> {
    node(schema, path)
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .map(|rules| {
            rules
                .iter()
                .map(|r| {
                    (
                        r["rule"].as_str().unwrap_or_default().to_string(),
                        r["message"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn assert_rule(schema: &Value, path: &str, rule_part: &str, message: &str) {
    let found = rules(schema, path);
    assert!(
        found
            .iter()
            .any(|(r, m)| r.contains(rule_part) && m.contains(message)),
        "no rule containing {rule_part:?} with message {message:?} at {path}; found {found:#?}"
    );
}

/// Applies schema defaults, then checks the object as the API server would: OpenAPI first,
/// then CEL. Returns every error message.
fn admit(crd: &CustomResourceDefinition, object: &Value) -> Result<(), Vec<String>> {
    let schema = schema_of(crd);
    let defaulted = kube::core::cel::apply_defaults(&schema, object);
    let mut errors = Vec::new();
    check_openapi(&schema, &defaulted, "", &mut errors);
    if let Err(cel) = Validator::new().validate(&schema, &defaulted, None) {
        errors.extend(cel.iter().map(ToString::to_string));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Asserts the object is refused and one error contains `expected`.
fn refused(crd: &CustomResourceDefinition, object: &Value, expected: &str) {
    match admit(crd, object) {
        Ok(()) => panic!("accepted, but expected an error containing {expected:?}:\n{object:#}"),
        Err(errors) => assert!(
            errors.iter().any(|e| e.contains(expected)),
            "expected an error containing {expected:?}, got {errors:#?}"
        ),
    }
}

fn accepted(crd: &CustomResourceDefinition, object: &Value) {
    if let Err(errors) = admit(crd, object) {
        panic!("refused: {errors:#?}\n{object:#}");
    }
}

/// A small OpenAPI v3 (structural subset) checker with apiserver-like messages.
fn check_openapi(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let at = |p: &str| {
        if p.is_empty() {
            "<root>".to_string()
        } else {
            p.to_string()
        }
    };
    if value.is_null() {
        if schema.get("nullable") != Some(&json!(true)) {
            errors.push(format!("{}: Invalid value: null", at(path)));
        }
        return;
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array)
        && !values.contains(value)
    {
        errors.push(format!(
            "{}: Unsupported value: {value}: supported values: {}",
            at(path),
            values
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if schema.get("x-kubernetes-int-or-string") == Some(&json!(true)) {
        if !(value.is_i64() || value.is_string()) {
            errors.push(format!("{}: must be an integer or a string", at(path)));
        }
        return;
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let Some(object) = value.as_object() else {
                errors.push(format!("{}: Invalid value: must be an object", at(path)));
                return;
            };
            for required in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !object.contains_key(required) {
                    errors.push(format!("{}: Required value", join(path, required)));
                }
            }
            for (key, child) in object {
                if path.is_empty() && ["apiVersion", "kind", "metadata"].contains(&key.as_str()) {
                    continue;
                }
                let child_path = join(path, key);
                if let Some(child_schema) = schema.get("properties").and_then(|p| p.get(key)) {
                    check_openapi(child_schema, child, &child_path, errors);
                } else if let Some(additional) =
                    schema.get("additionalProperties").filter(|a| a.is_object())
                {
                    check_openapi(additional, child, &child_path, errors);
                } else {
                    errors.push(format!("{child_path}: unknown field"));
                }
            }
        }
        Some("array") => {
            let Some(items) = value.as_array() else {
                errors.push(format!("{}: Invalid value: must be an array", at(path)));
                return;
            };
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && (items.len() as u64) < min
            {
                errors.push(format!("{}: should have at least {min} items", at(path)));
            }
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && (items.len() as u64) > max
            {
                errors.push(format!(
                    "{}: Too many: must have at most {max} items",
                    at(path)
                ));
            }
            if schema.get("x-kubernetes-list-type") == Some(&json!("map")) {
                let keys: Vec<&str> = schema["x-kubernetes-list-map-keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let mut seen = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let key: Vec<&Value> = keys.iter().map(|k| &item[*k]).collect();
                    if seen.contains(&key) {
                        errors.push(format!("{path}[{i}]: Duplicate value"));
                    }
                    seen.push(key);
                }
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check_openapi(item_schema, item, &format!("{path}[{i}]"), errors);
                }
            }
        }
        Some("string") => {
            let Some(text) = value.as_str() else {
                errors.push(format!("{}: Invalid value: must be a string", at(path)));
                return;
            };
            let length = text.chars().count() as u64;
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && length < min
            {
                errors.push(format!("{}: should be at least {min} chars long", at(path)));
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && length > max
            {
                errors.push(format!(
                    "{}: Too long: may not be more than {max}",
                    at(path)
                ));
            }
            if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
                let re = Regex::new(pattern).expect("pattern compiles");
                if !re.is_match(text) {
                    errors.push(format!("{}: should match '{pattern}'", at(path)));
                }
            }
        }
        Some("integer") => {
            let Some(number) = value.as_i64() else {
                errors.push(format!("{}: Invalid value: must be an integer", at(path)));
                return;
            };
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && (number as f64) < min
            {
                errors.push(format!(
                    "{}: Invalid value: {number}: should be greater than or equal to {min}",
                    at(path)
                ));
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && (number as f64) > max
            {
                errors.push(format!(
                    "{}: Invalid value: {number}: should be less than or equal to {max}",
                    at(path)
                ));
            }
        }
        Some("boolean") if !value.is_boolean() => {
            errors.push(format!("{}: Invalid value: must be a boolean", at(path)));
        }
        _ => {}
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

// ---------------------------------------------------------------------------------------------
// Samples

const TENANT_YAML: &str = r#"
apiVersion: pgfleet.io/v1alpha1
kind: Tenant
metadata:
  name: acme
  namespace: apps
spec:
  externalId: acme_prod
  fleetRef: {name: main, namespace: db}
  upstream:
    host: acme-db.apps.svc
    port: 5433
    database: app
    tls:
      mode: verify-full
      caSecretRef: {name: acme-db-ca, key: ca.crt}
  mode: session
  defaultPoolSize: 20
  defaultMaxClients: 500
  users:
    - name: app
      passwordSecretRef: {name: acme-app, key: password}
      poolSize: 10
      maxClients: 200
      mode: transaction
    - name: reporting
      passwordSecretRef: {name: acme-reporting, key: password}
  authQuery:
    userSecretRef: {name: acme-auth}
    query: SELECT rolname, rolpassword FROM pgbouncer.get_auth($1)
  useJit: true
  jitApiUrl: https://api.example.com/v1/jit
  allowList: ["10.0.0.0/8", "192.168.1.7/32", "2001:db8::/32"]
  requireTls: true
  clientIdleTimeout: 10m
  checkoutTimeout: 1m30s
status:
  observedGeneration: 3
  conditions:
    - type: Ready
      status: "True"
      reason: Rendered
      message: served by db/main
      lastTransitionTime: "2026-01-02T03:04:05Z"
      observedGeneration: 3
  endpoint: postgresql://app.acme_prod@main.db.svc:6543/app
  fleet: db/main
"#;

const FLEET_YAML: &str = r#"
apiVersion: pgfleet.io/v1alpha1
kind: PoolerFleet
metadata:
  name: main
  namespace: db
spec:
  replicas: 3
  image: ghcr.io/pgfleet/pooler:0.1.0
  resources:
    requests: {cpu: 500m, memory: 256Mi}
    limits: {memory: 1Gi}
  ports: {session: 5432, pooled: 6543, admin: 8080}
  service:
    type: LoadBalancer
    annotations: {service.beta.kubernetes.io/aws-load-balancer-type: nlb}
  tls: {secretName: main-pooler-tls}
  podDisruptionBudget: {minAvailable: 2}
  nodeSelector: {pool: poolers}
  tolerations:
    - {key: dedicated, operator: Equal, value: poolers, effect: NoSchedule}
  affinity:
    podAntiAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 100
          podAffinityTerm:
            topologyKey: kubernetes.io/hostname
            labelSelector: {matchLabels: {pgfleet.io/fleet: main}}
  topologySpreadConstraints:
    - maxSkew: 1
      topologyKey: topology.kubernetes.io/zone
      whenUnsatisfiable: ScheduleAnyway
      labelSelector: {matchLabels: {pgfleet.io/fleet: main}}
  allowedTenantNamespaces: [apps, analytics]
  terminationGracePeriodSeconds: 60
status:
  observedGeneration: 2
  replicas: 3
  readyReplicas: 3
  selector: app.kubernetes.io/name=pgfleet-pooler,pgfleet.io/fleet=main
  tenants: 12
  conditions:
    - type: Available
      status: "True"
      reason: MinimumReplicasAvailable
      message: 3 of 3 replicas ready
      lastTransitionTime: "2026-01-02T03:04:05Z"
"#;

fn yaml(text: &str) -> Value {
    serde_yaml_ng::from_str(text).expect("valid YAML")
}

/// A minimal valid Tenant, to break one field at a time.
fn tenant(spec: Value) -> Value {
    json!({
        "apiVersion": "pgfleet.io/v1alpha1",
        "kind": "Tenant",
        "metadata": {"name": "acme", "namespace": "apps"},
        "spec": spec,
    })
}

fn minimal_tenant_spec() -> Value {
    json!({
        "upstream": {"host": "db.example"},
        "users": [{"name": "app", "passwordSecretRef": {"name": "app-pw", "key": "password"}}],
    })
}

/// `minimal_tenant_spec` with `field` set to `value`.
fn tenant_with(field: &str, value: Value) -> Value {
    let mut spec = minimal_tenant_spec();
    spec[field] = value;
    tenant(spec)
}

fn fleet(spec: Value) -> Value {
    json!({
        "apiVersion": "pgfleet.io/v1alpha1",
        "kind": "PoolerFleet",
        "metadata": {"name": "main", "namespace": "db"},
        "spec": spec,
    })
}

// ---------------------------------------------------------------------------------------------
// Names, columns, subresources

#[test]
fn tenant_crd_names() {
    let crd = Tenant::crd();
    assert_eq!(crd.metadata.name.as_deref(), Some("tenants.pgfleet.io"));
    assert_eq!(crd.spec.group, "pgfleet.io");
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.kind, "Tenant");
    assert_eq!(crd.spec.names.plural, "tenants");
    assert_eq!(crd.spec.names.singular.as_deref(), Some("tenant"));
    assert_eq!(crd.spec.names.short_names, Some(vec!["pgt".to_string()]));
    assert_eq!(crd.spec.names.categories, Some(vec!["pgfleet".to_string()]));
    assert_eq!(crd.spec.versions.len(), 1);
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(version.served && version.storage);
}

#[test]
fn fleet_crd_names() {
    let crd = PoolerFleet::crd();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("poolerfleets.pgfleet.io")
    );
    assert_eq!(crd.spec.group, "pgfleet.io");
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.kind, "PoolerFleet");
    assert_eq!(crd.spec.names.plural, "poolerfleets");
    assert_eq!(crd.spec.names.short_names, Some(vec!["pgf".to_string()]));
    assert_eq!(crd.spec.names.categories, Some(vec!["pgfleet".to_string()]));
    assert_eq!(crd.spec.versions[0].name, "v1alpha1");
}

fn columns(crd: &CustomResourceDefinition) -> Vec<(String, String, String)> {
    crd.spec.versions[0]
        .additional_printer_columns
        .as_ref()
        .expect("print columns")
        .iter()
        .map(|c| (c.name.to_uppercase(), c.type_.clone(), c.json_path.clone()))
        .collect()
}

#[test]
fn tenant_print_columns() {
    let expected = [
        ("MODE", "string", ".spec.mode"),
        ("POOL", "integer", ".spec.defaultPoolSize"),
        ("JIT", "boolean", ".spec.useJit"),
        (
            "READY",
            "string",
            ".status.conditions[?(@.type==\"Ready\")].status",
        ),
        ("ENDPOINT", "string", ".status.endpoint"),
        ("AGE", "date", ".metadata.creationTimestamp"),
    ];
    let found = columns(&Tenant::crd());
    let found: Vec<(&str, &str, &str)> = found
        .iter()
        .map(|(n, t, p)| (n.as_str(), t.as_str(), p.as_str()))
        .collect();
    assert_eq!(found, expected);
}

#[test]
fn fleet_print_columns() {
    let expected = [
        ("REPLICAS", "integer", ".spec.replicas"),
        ("READY", "integer", ".status.readyReplicas"),
        ("TENANTS", "integer", ".status.tenants"),
        ("AGE", "date", ".metadata.creationTimestamp"),
    ];
    let found = columns(&PoolerFleet::crd());
    let found: Vec<(&str, &str, &str)> = found
        .iter()
        .map(|(n, t, p)| (n.as_str(), t.as_str(), p.as_str()))
        .collect();
    assert_eq!(found, expected);
}

#[test]
fn print_columns_point_at_fields_of_the_schema() {
    for crd in pgfleet_crds::crds() {
        let schema = schema_of(&crd);
        for (name, _, path) in columns(&crd) {
            if path.starts_with(".metadata.") {
                continue;
            }
            // ".status.conditions[?(@.type==\"Ready\")].status" -> "status.conditions[].status"
            let simple = path
                .trim_start_matches('.')
                .replace("[?(@.type==\"Ready\")]", "[]");
            let _ = node(&schema, &simple); // panics when the path is not in the schema
            let _ = name;
        }
    }
}

#[test]
fn tenant_has_a_status_subresource_and_no_scale() {
    let crd = Tenant::crd();
    let subresources = crd.spec.versions[0]
        .subresources
        .as_ref()
        .expect("subresources");
    assert!(subresources.status.is_some());
    assert!(subresources.scale.is_none());
}

#[test]
fn fleet_has_status_and_scale_subresources_with_a_label_selector() {
    let crd = PoolerFleet::crd();
    let subresources = crd.spec.versions[0]
        .subresources
        .as_ref()
        .expect("subresources");
    assert!(subresources.status.is_some());
    let scale = subresources.scale.as_ref().expect("scale subresource");
    assert_eq!(scale.spec_replicas_path, ".spec.replicas");
    assert_eq!(scale.status_replicas_path, ".status.replicas");
    assert_eq!(
        scale.label_selector_path.as_deref(),
        Some(".status.selector")
    );
    // The paths exist with the types the scale subresource needs.
    let schema = schema_of(&crd);
    assert_eq!(node(&schema, "spec.replicas")["type"], "integer");
    assert_eq!(node(&schema, "status.replicas")["type"], "integer");
    assert_eq!(node(&schema, "status.selector")["type"], "string");
}

#[test]
fn tenants_are_selectable_by_fleet() {
    let crd = Tenant::crd();
    let fields = crd.spec.versions[0]
        .selectable_fields
        .as_ref()
        .expect("selectable fields");
    assert_eq!(fields[0].json_path, ".spec.fleetRef.name");
    assert_eq!(
        node(&schema_of(&crd), "spec.fleetRef.name")["type"],
        "string"
    );
}

// ---------------------------------------------------------------------------------------------
// Structural schema

fn structural_problems(schema: &Value, path: &str, problems: &mut Vec<String>) {
    let Some(object) = schema.as_object() else {
        problems.push(format!("{path}: schema is not an object"));
        return;
    };
    for forbidden in [
        "$ref",
        "$schema",
        "$defs",
        "definitions",
        "oneOf",
        "anyOf",
        "allOf",
        "not",
        "const",
        "examples",
    ] {
        if object.contains_key(forbidden) {
            problems.push(format!("{path}: unsupported {forbidden}"));
        }
    }
    let int_or_string = schema.get("x-kubernetes-int-or-string") == Some(&json!(true));
    let preserve = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    match schema.get("type") {
        Some(Value::String(t)) => {
            if !["object", "array", "string", "integer", "number", "boolean"].contains(&t.as_str())
            {
                problems.push(format!("{path}: unknown type {t}"));
            }
        }
        Some(other) => problems.push(format!("{path}: type must be one string, not {other}")),
        None if int_or_string || preserve => {}
        None => problems.push(format!("{path}: no type")),
    }
    if schema.get("type") == Some(&json!("object")) {
        let has_properties = object.contains_key("properties");
        let has_additional = schema
            .get("additionalProperties")
            .is_some_and(Value::is_object);
        if !(has_properties || has_additional || preserve) {
            problems.push(format!(
                "{path}: object without properties, additionalProperties or x-kubernetes-preserve-unknown-fields"
            ));
        }
        if has_properties && has_additional {
            problems.push(format!(
                "{path}: properties and additionalProperties are mutually exclusive"
            ));
        }
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = required.as_str().unwrap_or_default();
            if schema.get("properties").and_then(|p| p.get(name)).is_none() {
                problems.push(format!("{path}: required {name} is not a property"));
            }
        }
    }
    if schema.get("type") == Some(&json!("array"))
        && !schema.get("items").is_some_and(Value::is_object)
    {
        problems.push(format!("{path}: array without an items schema"));
    }
    if schema.get("x-kubernetes-list-type") == Some(&json!("map")) {
        let items = &schema["items"];
        let keys = schema["x-kubernetes-list-map-keys"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if keys.is_empty() {
            problems.push(format!("{path}: list-type map without list-map-keys"));
        }
        for key in keys {
            let key = key.as_str().unwrap_or_default();
            let required = items["required"]
                .as_array()
                .is_some_and(|r| r.contains(&json!(key)));
            let defaulted = items["properties"][key].get("default").is_some();
            if !(required || defaulted) {
                problems.push(format!(
                    "{path}: map key {key} is neither required nor defaulted"
                ));
            }
            if items["properties"][key]["type"] == "object"
                || items["properties"][key]["type"] == "array"
            {
                problems.push(format!("{path}: map key {key} must be a scalar"));
            }
        }
    }
    for rule in schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if rule["rule"].as_str().is_none_or(str::is_empty) {
            problems.push(format!("{path}: CEL rule without a rule"));
        }
        if rule["message"].as_str().is_none_or(str::is_empty) {
            problems.push(format!(
                "{path}: CEL rule {} without a message",
                rule["rule"]
            ));
        }
    }
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, child) in properties {
            structural_problems(child, &join(path, name), problems);
        }
    }
    if let Some(items) = schema.get("items") {
        structural_problems(items, &format!("{path}[]"), problems);
    }
    if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
        structural_problems(additional, &format!("{path}{{}}"), problems);
    }
}

#[test]
fn schemas_are_structural() {
    for crd in pgfleet_crds::crds() {
        let mut problems = Vec::new();
        structural_problems(&schema_of(&crd), "", &mut problems);
        assert!(
            problems.is_empty(),
            "{}: {problems:#?}",
            crd.spec.names.kind
        );
    }
}

/// The API server refuses a CRD whose defaults do not validate against their own schema.
fn check_defaults(schema: &Value, path: &str, problems: &mut Vec<String>) {
    if let Some(default) = schema.get("default") {
        let mut errors = Vec::new();
        check_openapi(schema, default, path, &mut errors);
        problems.extend(errors);
    }
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, child) in properties {
            check_defaults(child, &join(path, name), problems);
        }
    }
    if let Some(items) = schema.get("items") {
        check_defaults(items, &format!("{path}[]"), problems);
    }
}

#[test]
fn defaults_validate_against_their_schema() {
    for crd in pgfleet_crds::crds() {
        let mut problems = Vec::new();
        check_defaults(&schema_of(&crd), "", &mut problems);
        assert!(problems.is_empty(), "{problems:#?}");
    }
}

/// Formats kube-apiserver 1.36 recognizes; any other draws an "unrecognized format" warning at
/// `kubectl apply` of the CRD.
const RECOGNIZED_FORMATS: &[&str] = &[
    "int32",
    "int64",
    "float",
    "double",
    "byte",
    "date",
    "date-time",
    "duration",
    "password",
    "uri",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uuid",
];

fn unrecognized_formats(schema: &Value, path: &str, found: &mut Vec<String>) {
    if let Some(format) = schema.get("format").and_then(Value::as_str)
        && !RECOGNIZED_FORMATS.contains(&format)
    {
        found.push(format!("{path}: {format}"));
    }
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, child) in properties {
            unrecognized_formats(child, &join(path, name), found);
        }
    }
    if let Some(items) = schema.get("items") {
        unrecognized_formats(items, &format!("{path}[]"), found);
    }
    if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
        unrecognized_formats(additional, &format!("{path}{{}}"), found);
    }
}

#[test]
fn only_recognized_formats() {
    for crd in pgfleet_crds::crds() {
        let mut found = Vec::new();
        unrecognized_formats(&schema_of(&crd), "", &mut found);
        assert!(found.is_empty(), "{found:#?}");
    }
}

fn compile_problems(compiled: &CompiledSchema, path: &str, problems: &mut Vec<String>) {
    for result in &compiled.validations {
        match result {
            Err(e) => problems.push(format!("{path}: {e:?}")),
            Ok(rule) => {
                for warning in analyze_rule(&rule.rule.rule, compiled, ScopeContext::CrdValidation)
                {
                    problems.push(format!("{path}: {}: {}", warning.rule, warning.message));
                }
            }
        }
    }
    for (name, child) in &compiled.properties {
        compile_problems(child, &join(path, name), problems);
    }
    if let Some(items) = &compiled.items {
        compile_problems(items, &format!("{path}[]"), problems);
    }
    if let Some(additional) = &compiled.additional_properties {
        compile_problems(additional, &format!("{path}{{}}"), problems);
    }
}

#[test]
fn cel_rules_compile_with_bounded_cost() {
    for crd in pgfleet_crds::crds() {
        let compiled = compile_schema(&schema_of(&crd));
        let mut problems = Vec::new();
        compile_problems(&compiled, "", &mut problems);
        assert!(problems.is_empty(), "{problems:#?}");
    }
}

#[test]
fn strings_under_cel_rules_are_bounded() {
    // The API server estimates each rule's cost from maxLength/maxItems: every string or list a
    // rule reads must be bounded.
    let tenant = schema_of(&Tenant::crd());
    for path in [
        "spec.externalId",
        "spec.jitApiUrl",
        "spec.allowList[]",
        "spec.clientIdleTimeout",
        "spec.checkoutTimeout",
        "spec.authQuery.query",
    ] {
        assert!(
            node(&tenant, path).get("maxLength").is_some(),
            "{path} has no maxLength"
        );
    }
    assert_eq!(node(&tenant, "spec.allowList")["maxItems"], 64);
    let fleet = schema_of(&PoolerFleet::crd());
    assert!(node(&fleet, "spec.allowedTenantNamespaces")["maxItems"].is_u64());
    assert!(node(&fleet, "spec.allowedTenantNamespaces[]")["maxLength"].is_u64());
}

// ---------------------------------------------------------------------------------------------
// Validation rules, enums, minimums and defaults, as written in the schema

#[test]
fn tenant_cel_rules_and_messages() {
    let s = schema_of(&Tenant::crd());
    assert_rule(
        &s,
        "spec",
        "!self.useJit || has(self.jitApiUrl)",
        "jitApiUrl is required when useJit is true",
    );
    assert_rule(
        &s,
        "spec",
        "has(self.authQuery)",
        "users or authQuery must be set",
    );
    assert_rule(
        &s,
        "spec.jitApiUrl",
        "https://",
        "must be an http:// or https:// URL",
    );
    assert_rule(&s, "spec.allowList[]", "isCIDR(self)", "must be a CIDR");
    assert_rule(
        &s,
        "spec.externalId",
        "^[A-Za-z0-9_-]{1,63}$",
        "externalId must be 1 to 63 letters, digits, '_' or '-'",
    );
    assert_rule(&s, "", "self.metadata.name", "set spec.externalId");
    assert_rule(
        &s,
        "spec.clientIdleTimeout",
        "matches",
        "clientIdleTimeout must be a duration",
    );
    assert_rule(
        &s,
        "spec.checkoutTimeout",
        "matches",
        "checkoutTimeout must be a duration",
    );
    assert_rule(
        &s,
        "spec.checkoutTimeout",
        "!self.matches",
        "must be greater than zero",
    );
    assert_rule(&s, "spec.authQuery.query", "$1", "must use $1");
}

#[test]
fn fleet_cel_rules_and_messages() {
    let s = schema_of(&PoolerFleet::crd());
    assert_rule(
        &s,
        "spec.ports",
        "self.session != self.pooled",
        "must all differ",
    );
    assert_rule(
        &s,
        "spec.allowedTenantNamespaces",
        "'*'",
        "cannot be combined",
    );
    assert_rule(
        &s,
        "spec.allowedTenantNamespaces[]",
        "matches",
        "namespace name",
    );
    assert_rule(
        &s,
        "spec.podDisruptionBudget.minAvailable",
        "self == string(self)",
        "percentage",
    );
    assert_rule(&s, "", "self.metadata.name", "at most 52 characters");
}

#[test]
fn modes_are_enums() {
    let s = schema_of(&Tenant::crd());
    assert_eq!(
        node(&s, "spec.mode")["enum"],
        json!(["transaction", "session"])
    );
    assert_eq!(
        node(&s, "spec.users[].mode")["enum"],
        json!(["transaction", "session"])
    );
    assert_eq!(
        node(&s, "spec.upstream.tls.mode")["enum"],
        json!(["disable", "require", "verify-ca", "verify-full"])
    );
    let f = schema_of(&PoolerFleet::crd());
    assert_eq!(
        node(&f, "spec.service.type")["enum"],
        json!(["ClusterIP", "NodePort", "LoadBalancer"])
    );
}

#[test]
fn sizes_have_minimums() {
    let s = schema_of(&Tenant::crd());
    for (path, min) in [
        ("spec.defaultPoolSize", 1.0),
        ("spec.defaultMaxClients", 0.0),
        ("spec.users[].poolSize", 1.0),
        ("spec.users[].maxClients", 0.0),
        ("spec.upstream.port", 1.0),
    ] {
        assert_eq!(node(&s, path)["minimum"], json!(min), "{path}");
    }
    assert_eq!(node(&s, "spec.upstream.port")["maximum"], json!(65535.0));
    let f = schema_of(&PoolerFleet::crd());
    for (path, min) in [
        ("spec.replicas", 0.0),
        ("spec.terminationGracePeriodSeconds", 0.0),
        ("spec.ports.session", 1.0),
        ("spec.ports.pooled", 1.0),
        ("spec.ports.admin", 1.0),
    ] {
        assert_eq!(node(&f, path)["minimum"], json!(min), "{path}");
    }
}

#[test]
fn documented_defaults() {
    let s = schema_of(&Tenant::crd());
    for (path, default) in [
        ("spec.fleetRef", json!({"name": "default"})),
        ("spec.upstream.port", json!(5432)),
        ("spec.upstream.database", json!("postgres")),
        ("spec.upstream.tls.mode", json!("disable")),
        ("spec.mode", json!("transaction")),
        ("spec.defaultPoolSize", json!(15)),
        ("spec.defaultMaxClients", json!(1000)),
        ("spec.useJit", json!(false)),
        ("spec.requireTls", json!(false)),
        ("spec.allowList", json!(["0.0.0.0/0", "::/0"])),
        ("spec.checkoutTimeout", json!("60s")),
    ] {
        assert_eq!(node(&s, path)["default"], default, "{path}");
    }
    for absent in [
        "spec.externalId",
        "spec.clientIdleTimeout",
        "spec.jitApiUrl",
        "spec.users",
    ] {
        assert!(node(&s, absent).get("default").is_none(), "{absent}");
    }
    let f = schema_of(&PoolerFleet::crd());
    for (path, default) in [
        ("spec.replicas", json!(2)),
        ("spec.ports.session", json!(5432)),
        ("spec.ports.pooled", json!(6543)),
        ("spec.ports.admin", json!(8080)),
        ("spec.service.type", json!("ClusterIP")),
        ("spec.terminationGracePeriodSeconds", json!(30)),
    ] {
        assert_eq!(node(&f, path)["default"], default, "{path}");
    }
}

#[test]
fn conditions_merge_by_type() {
    for crd in pgfleet_crds::crds() {
        let s = schema_of(&crd);
        let conditions = node(&s, "status.conditions");
        assert_eq!(conditions["x-kubernetes-list-type"], "map");
        assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
        assert_eq!(node(&s, "status.conditions[].type")["type"], "string");
    }
    let s = schema_of(&Tenant::crd());
    assert_eq!(
        node(&s, "spec.users")["x-kubernetes-list-map-keys"],
        json!(["name"])
    );
}

// ---------------------------------------------------------------------------------------------
// What `kubectl apply` accepts and refuses

#[test]
fn sample_resources_are_accepted() {
    accepted(&Tenant::crd(), &yaml(TENANT_YAML));
    accepted(&PoolerFleet::crd(), &yaml(FLEET_YAML));
    accepted(&Tenant::crd(), &tenant(minimal_tenant_spec()));
    accepted(
        &Tenant::crd(),
        &tenant(json!({
            "upstream": {"host": "db"},
            "authQuery": {"userSecretRef": {"name": "auth"}},
        })),
    );
    accepted(&PoolerFleet::crd(), &fleet(json!({})));
}

#[test]
fn a_bad_cidr_is_refused() {
    let crd = Tenant::crd();
    for bad in ["10.0.0.0/33", "10.0.0.1", "example.com/8", "fe80::/129", ""] {
        refused(
            &crd,
            &tenant_with("allowList", json!(["10.0.0.0/8", bad])),
            "each allowList entry must be a CIDR",
        );
    }
    refused(
        &crd,
        &tenant_with("allowList", json!([])),
        "at least 1 items",
    );
}

#[test]
fn an_unknown_mode_is_refused() {
    let crd = Tenant::crd();
    refused(
        &crd,
        &tenant_with("mode", json!("statement")),
        "Unsupported value",
    );
    let mut spec = minimal_tenant_spec();
    spec["users"][0]["mode"] = json!("pipeline");
    refused(&crd, &tenant(spec), "Unsupported value");
    let mut spec = minimal_tenant_spec();
    spec["upstream"]["tls"] = json!({"mode": "prefer"});
    refused(&crd, &tenant(spec), "Unsupported value");
}

#[test]
fn use_jit_without_a_url_is_refused() {
    refused(
        &Tenant::crd(),
        &tenant_with("useJit", json!(true)),
        "jitApiUrl is required when useJit is true",
    );
    let mut spec = minimal_tenant_spec();
    spec["useJit"] = json!(true);
    spec["jitApiUrl"] = json!("http://jit.internal:8080/check");
    accepted(&Tenant::crd(), &tenant(spec));
}

#[test]
fn a_jit_url_that_is_not_http_is_refused() {
    let crd = Tenant::crd();
    for bad in [
        "ftp://api.example.com/jit",
        "api.example.com/jit",
        "/jit",
        "https://",
        "javascript:alert(1)",
    ] {
        let mut spec = minimal_tenant_spec();
        spec["useJit"] = json!(true);
        spec["jitApiUrl"] = json!(bad);
        refused(&crd, &tenant(spec), "must be an http:// or https:// URL");
    }
}

#[test]
fn negative_sizes_are_refused() {
    let crd = Tenant::crd();
    refused(
        &crd,
        &tenant_with("defaultPoolSize", json!(-1)),
        "greater than or equal to 1",
    );
    refused(
        &crd,
        &tenant_with("defaultPoolSize", json!(0)),
        "greater than or equal to 1",
    );
    refused(
        &crd,
        &tenant_with("defaultMaxClients", json!(-5)),
        "greater than or equal to 0",
    );
    let mut spec = minimal_tenant_spec();
    spec["users"][0]["poolSize"] = json!(-2);
    refused(&crd, &tenant(spec), "greater than or equal to 1");
    let mut spec = minimal_tenant_spec();
    spec["upstream"]["port"] = json!(70000);
    refused(&crd, &tenant(spec), "less than or equal to 65535");

    let crd = PoolerFleet::crd();
    refused(
        &crd,
        &fleet(json!({"replicas": -1})),
        "greater than or equal to 0",
    );
    refused(
        &crd,
        &fleet(json!({"terminationGracePeriodSeconds": -30})),
        "greater than or equal to 0",
    );
}

#[test]
fn a_bad_external_id_is_refused() {
    let crd = Tenant::crd();
    for bad in ["acme.prod", "acme prod", "ünicode", ""] {
        refused(
            &crd,
            &tenant_with("externalId", json!(bad)),
            "externalId must be 1 to 63 letters, digits, '_' or '-'",
        );
    }
    refused(
        &crd,
        &tenant_with("externalId", json!("x".repeat(64))),
        "Too long",
    );
    accepted(&crd, &tenant_with("externalId", json!("Acme_prod-1")));
}

#[test]
fn a_dotted_name_needs_an_external_id() {
    let crd = Tenant::crd();
    let mut object = tenant(minimal_tenant_spec());
    object["metadata"]["name"] = json!("acme.prod");
    refused(&crd, &object, "set spec.externalId");
    object["spec"]["externalId"] = json!("acme_prod");
    accepted(&crd, &object);
}

#[test]
fn a_tenant_nobody_can_log_in_to_is_refused() {
    refused(
        &Tenant::crd(),
        &tenant(json!({"upstream": {"host": "db"}})),
        "users or authQuery must be set",
    );
    refused(
        &Tenant::crd(),
        &tenant(json!({"upstream": {"host": "db"}, "users": []})),
        "users or authQuery must be set",
    );
}

#[test]
fn bad_durations_are_refused() {
    let crd = Tenant::crd();
    for bad in ["30", "1.5s", "5 s", "10d", "-1s", "off"] {
        refused(
            &crd,
            &tenant_with("clientIdleTimeout", json!(bad)),
            "clientIdleTimeout must be a duration",
        );
        refused(
            &crd,
            &tenant_with("checkoutTimeout", json!(bad)),
            "checkoutTimeout must be a duration",
        );
    }
    refused(
        &crd,
        &tenant_with("checkoutTimeout", json!("0s")),
        "checkoutTimeout must be greater than zero",
    );
    for good in ["500ms", "30s", "5m", "1h30m"] {
        accepted(&crd, &tenant_with("checkoutTimeout", json!(good)));
        accepted(&crd, &tenant_with("clientIdleTimeout", json!(good)));
    }
}

#[test]
fn other_tenant_mistakes_are_refused() {
    let crd = Tenant::crd();
    let mut spec = minimal_tenant_spec();
    spec["users"] = json!([
        {"name": "app", "passwordSecretRef": {"name": "a", "key": "password"}},
        {"name": "app", "passwordSecretRef": {"name": "b", "key": "password"}},
    ]);
    refused(&crd, &tenant(spec), "Duplicate value");
    refused(
        &crd,
        &tenant(json!({
            "upstream": {"host": "db"},
            "authQuery": {"userSecretRef": {"name": "auth"}, "query": "SELECT 1"},
        })),
        "must use $1",
    );
    refused(
        &crd,
        &tenant_with("fleetRef", json!({"name": "Main"})),
        "should match",
    );
    refused(&crd, &tenant_with("upsteam", json!({})), "unknown field");
    let mut spec = minimal_tenant_spec();
    spec["upstream"]["host"] = json!("");
    refused(&crd, &tenant(spec), "at least 1 chars");
}

#[test]
fn fleet_mistakes_are_refused() {
    let crd = PoolerFleet::crd();
    refused(
        &crd,
        &fleet(json!({"ports": {"session": 6543}})),
        "ports must all differ",
    );
    refused(
        &crd,
        &fleet(json!({"service": {"type": "ExternalName"}})),
        "Unsupported value",
    );
    refused(
        &crd,
        &fleet(json!({"allowedTenantNamespaces": ["*", "apps"]})),
        "cannot be combined",
    );
    refused(
        &crd,
        &fleet(json!({"allowedTenantNamespaces": ["Apps"]})),
        "must be a namespace name",
    );
    accepted(&crd, &fleet(json!({"allowedTenantNamespaces": ["*"]})));
    for bad in [
        json!(-1),
        json!("half"),
        json!("50"),
        json!("101%"),
        json!("-5%"),
    ] {
        refused(
            &crd,
            &fleet(json!({"podDisruptionBudget": {"minAvailable": bad}})),
            "minAvailable must be",
        );
    }
    for good in [json!(0), json!(1), json!("0%"), json!("50%"), json!("100%")] {
        accepted(
            &crd,
            &fleet(json!({"podDisruptionBudget": {"minAvailable": good}})),
        );
    }
    let mut object = fleet(json!({}));
    object["metadata"]["name"] = json!("1st-fleet");
    refused(&crd, &object, "must start with a lowercase letter");
    object["metadata"]["name"] = json!("f".repeat(53));
    refused(&crd, &object, "at most 52 characters");
}

// ---------------------------------------------------------------------------------------------
// Serde round trips

#[test]
fn tenant_round_trips_through_serde() {
    let input = yaml(TENANT_YAML);
    let tenant: Tenant = serde_yaml_ng::from_str(TENANT_YAML).expect("Tenant parses");
    assert_eq!(tenant.spec.mode, PoolMode::Session);
    assert_eq!(tenant.spec.upstream.tls.mode, TlsMode::VerifyFull);
    assert_eq!(tenant.spec.users[1].pool_size, None);
    assert_eq!(tenant.spec.effective_external_id("acme"), "acme_prod");
    let status = tenant.status.as_ref().expect("status");
    assert_eq!(status.conditions[0].type_, "Ready");
    assert_eq!(serde_json::to_value(&tenant).expect("serializes"), input);
    let again: Tenant =
        serde_yaml_ng::from_str(&serde_yaml_ng::to_string(&tenant).expect("to YAML"))
            .expect("parses again");
    assert_eq!(again, tenant);
}

#[test]
fn fleet_round_trips_through_serde() {
    let input = yaml(FLEET_YAML);
    let fleet: PoolerFleet = serde_yaml_ng::from_str(FLEET_YAML).expect("PoolerFleet parses");
    assert_eq!(fleet.spec.replicas, 3);
    assert_eq!(
        fleet.spec.service.type_,
        pgfleet_crds::ServiceType::LoadBalancer
    );
    assert_eq!(
        fleet.status.as_ref().and_then(|s| s.selector.as_deref()),
        Some("app.kubernetes.io/name=pgfleet-pooler,pgfleet.io/fleet=main")
    );
    assert_eq!(serde_json::to_value(&fleet).expect("serializes"), input);
    let again: PoolerFleet =
        serde_yaml_ng::from_str(&serde_yaml_ng::to_string(&fleet).expect("to YAML"))
            .expect("parses again");
    assert_eq!(again, fleet);
}

#[test]
fn the_api_servers_defaulted_form_parses() {
    // What kube-apiserver 1.36.3 stored for `spec: {upstream: {host: db}, authQuery: {...}}`.
    let stored = r#"{"allowList":["0.0.0.0/0","::/0"],"authQuery":{"userSecretRef":{"name":"auth"}},"checkoutTimeout":"60s","defaultMaxClients":1000,"defaultPoolSize":15,"fleetRef":{"name":"default"},"mode":"transaction","requireTls":false,"upstream":{"database":"postgres","host":"db","port":5432,"tls":{"mode":"disable"}},"useJit":false}"#;
    let from_server: pgfleet_crds::TenantSpec = serde_json::from_str(stored).expect("parses");
    let from_serde: pgfleet_crds::TenantSpec = serde_json::from_value(
        json!({"upstream": {"host": "db"}, "authQuery": {"userSecretRef": {"name": "auth"}}}),
    )
    .expect("parses");
    assert_eq!(from_server, from_serde);
    // Our schema defaults fill in exactly what serde defaults do.
    let schema = schema_of(&Tenant::crd());
    let defaulted = kube::core::cel::apply_defaults(
        &schema,
        &tenant(
            json!({"upstream": {"host": "db"}, "authQuery": {"userSecretRef": {"name": "auth"}}}),
        ),
    );
    let stored: Value = serde_json::from_str(stored).expect("JSON");
    assert_eq!(defaulted["spec"], stored);
}

#[test]
fn a_new_tenant_serializes_without_empty_fields() {
    let spec: pgfleet_crds::TenantSpec =
        serde_json::from_value(minimal_tenant_spec()).expect("spec parses");
    let tenant = Tenant::new("acme", spec);
    let value = serde_json::to_value(&tenant).expect("serializes");
    assert_eq!(value["apiVersion"], "pgfleet.io/v1alpha1");
    assert_eq!(value["kind"], "Tenant");
    assert!(value.get("status").is_none_or(Value::is_null));
    accepted(&Tenant::crd(), &value);
}

// ---------------------------------------------------------------------------------------------
// The generated YAML

#[test]
fn the_yaml_stream_parses_back_into_the_crds() {
    let text = pgfleet_crds::crds_yaml().expect("renders");
    assert!(text.starts_with(pgfleet_crds::GENERATED_HEADER));
    let parsed: Vec<CustomResourceDefinition> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| CustomResourceDefinition::deserialize(doc).expect("a CRD document"))
        .collect();
    assert_eq!(parsed, pgfleet_crds::crds());
    let names: Vec<String> = parsed.iter().map(pgfleet_crds::crd_file_name).collect();
    assert_eq!(names, ["tenants.yaml", "poolerfleets.yaml"]);
}

#[test]
fn the_charts_copy_is_current() {
    // Helm installs CRDs from the chart's crds/ directory; `crdgen --out-dir` writes them.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/pgfleet/crds");
    assert!(
        dir.is_dir(),
        "{} is missing: run `cargo run -p pgfleet-crds --bin crdgen -- --out-dir charts/pgfleet/crds`",
        dir.display()
    );
    for crd in pgfleet_crds::crds() {
        let path = dir.join(pgfleet_crds::crd_file_name(&crd));
        let current = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        assert!(
            current == pgfleet_crds::crd_yaml(&crd).expect("renders"),
            "{} is stale: run `cargo run -p pgfleet-crds --bin crdgen -- --out-dir charts/pgfleet/crds`",
            path.display()
        );
    }
}
