//! The fleet's Service, `<fleet>`: what clients connect to, as `<fleet>.<namespace>.svc`.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use pgfleet_crds::PoolerFleet;

use super::deployment::{PORT_ADMIN, PORT_POOLED, PORT_SESSION, validated_ports};
use super::error::BuildError;
use super::meta::{FleetIdentity, selector_labels};

/// The fleet's Service: the session, pooled and admin ports, on the same numbers as the
/// containers', to the fleet's pods.
///
/// Type and annotations come from `spec.service`. Annotations are applied as the operator's own
/// fields, so one removed from the fleet disappears from the Service, while annotations other
/// controllers add (a cloud load balancer's) are left alone by server-side apply. Ports target
/// the containers' named ports, so the Service follows a port change without a mismatch window.
/// The admin port (health, metrics, `/status`) is exposed too, for in-cluster scraping; with a
/// LoadBalancer type it becomes reachable wherever the load balancer is.
pub fn service(fleet: &PoolerFleet) -> Result<Service, BuildError> {
    let id = FleetIdentity::of(fleet)?;
    let ports = validated_ports(&fleet.spec.ports)?;
    let mut metadata = id.child_meta(id.workload_name());
    if !fleet.spec.service.annotations.is_empty() {
        metadata.annotations = Some(fleet.spec.service.annotations.clone());
    }
    Ok(Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(fleet.spec.service.type_.as_str().into()),
            selector: Some(selector_labels(&id.name)),
            ports: Some(vec![
                service_port(PORT_SESSION, ports.session),
                service_port(PORT_POOLED, ports.pooled),
                service_port(PORT_ADMIN, ports.admin),
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

fn service_port(name: &str, port: u16) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port: i32::from(port),
        target_port: Some(IntOrString::String(name.into())),
        // Part of the list's merge key: server-side apply wants it spelled out.
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::meta::fleet_labels;
    use crate::resources::test_support::{fleet, fleet_with};

    #[test]
    fn cluster_ip_with_three_named_ports() {
        let svc = service(&fleet("edge", "db")).expect("builds");
        assert_eq!(svc.metadata.name.as_deref(), Some("edge"));
        assert_eq!(svc.metadata.namespace.as_deref(), Some("db"));
        assert_eq!(svc.metadata.labels, Some(fleet_labels("edge")));
        assert_eq!(svc.metadata.annotations, None);
        assert_eq!(
            svc.metadata.owner_references.expect("owned")[0].name,
            "edge"
        );
        let spec = svc.spec.expect("spec");
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(spec.selector, Some(selector_labels("edge")));
        let ports: Vec<(String, i32, IntOrString)> = spec
            .ports
            .expect("ports")
            .into_iter()
            .map(|p| {
                (
                    p.name.expect("named"),
                    p.port,
                    p.target_port.expect("target"),
                )
            })
            .collect();
        assert_eq!(
            ports,
            [
                (
                    "session".into(),
                    5432,
                    IntOrString::String("session".into())
                ),
                ("pooled".into(), 6543, IntOrString::String("pooled".into())),
                ("admin".into(), 8080, IntOrString::String("admin".into())),
            ]
        );
    }

    #[test]
    fn type_and_annotations_from_the_fleet() {
        let svc = service(&fleet_with(
            "edge",
            "db",
            "service: {type: LoadBalancer, annotations: {service.beta.kubernetes.io/aws-load-balancer-type: nlb}}\nports: {pooled: 7000}",
        ))
        .expect("builds");
        assert_eq!(
            svc.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("service.beta.kubernetes.io/aws-load-balancer-type"))
                .map(String::as_str),
            Some("nlb")
        );
        let spec = svc.spec.expect("spec");
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.ports.expect("ports")[1].port, 7000);
    }

    #[test]
    fn refuses_bad_ports() {
        assert_eq!(
            service(&fleet_with("edge", "db", "ports: {pooled: -1}")).err(),
            Some(BuildError::InvalidPort {
                name: "pooled",
                value: -1
            })
        );
    }
}
