//! Small schema helpers shared by the custom resource types.
//!
//! kube's derive turns the Rust types into an OpenAPI v3 schema through schemars; these helpers
//! add what schemars has no attribute for: CEL rules on list items, list merge keys and the
//! conditions list.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::{Schema, SchemaGenerator};
use serde_json::{Value, json};

/// Key of the CEL rule list in a structural schema.
pub(crate) const VALIDATIONS: &str = "x-kubernetes-validations";

/// Appends a CEL rule and the message `kubectl apply` shows when it fails.
pub(crate) fn add_rule(schema: &mut Schema, rule: &str, message: &str) {
    let entry = json!({ "rule": rule, "message": message });
    let object = schema.ensure_object();
    match object.get_mut(VALIDATIONS) {
        Some(Value::Array(rules)) => rules.push(entry),
        _ => {
            object.insert(VALIDATIONS.into(), Value::Array(vec![entry]));
        }
    }
}

/// Appends a CEL rule to the schema of each item of an array schema.
pub(crate) fn add_item_rule(schema: &mut Schema, rule: &str, message: &str) {
    if let Some(items) = schema.get_mut("items")
        && let Ok(items_schema) = <&mut Schema>::try_from(items)
    {
        add_rule(items_schema, rule, message);
    }
}

/// The schema of a `conditions` list: `metav1.Condition` items merged by `type`, so each writer
/// (server-side apply) owns its own condition types.
pub(crate) fn conditions(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    let object = schema.ensure_object();
    object.insert("x-kubernetes-list-type".into(), json!("map"));
    object.insert("x-kubernetes-list-map-keys".into(), json!(["type"]));
    schema
}

/// A string enum schema (`type: string` plus `enum`), written by hand so the CRD stays
/// structural whatever schemars does with documented unit variants.
pub(crate) fn string_enum(values: &[&str]) -> Schema {
    let mut schema = Schema::default();
    let object = schema.ensure_object();
    object.insert("type".into(), json!("string"));
    object.insert("enum".into(), json!(values));
    schema
}
