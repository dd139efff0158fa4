//! The fleet's Deployment, `<fleet>`: the pooler pods.
//!
//! # What rolls pods, and what does not
//!
//! Tenants never appear in the pod template. Their documents reach running poolers through the
//! API (each pod watches the fleet's tenant-document Secrets), so adding a tenant, resizing a
//! pool or rotating a password reloads in place without dropping a connection. Only what a
//! running pooler cannot change (image, ports, the TLS mount, resources, and the pod's
//! scheduling and grace period, which Kubernetes fixes per pod) is in the template.
//!
//! The [`CONFIG_HASH_ANNOTATION`] on the pod template hashes the inputs that must roll pods
//! (image, ports, TLS, resources). Kubernetes would roll on those template changes anyway; the
//! annotation makes the cause visible (`kubectl get rs -o yaml`) and gives one place to fold in
//! inputs that are not in the template, should one ever need a restart (e.g. a TLS Secret's
//! version while the pooler cannot reload certificates).
//!
//! # Graceful stop
//!
//! On SIGTERM the pooler fails `/readyz` at once, keeps accepting for `--drain-delay` (5s) while
//! endpoint removal propagates, then closes clients at transaction boundaries until
//! `--shutdown-timeout`, which is set 5 seconds short of `terminationGracePeriodSeconds` so the
//! pooler finishes before the kubelet's SIGKILL.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretVolumeSource,
    SecurityContext, Volume, VolumeMount, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use pgfleet_crds::{FleetPorts, FleetTls, PoolerFleet};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::error::BuildError;
use super::meta::{FleetIdentity, fleet_labels, selector_labels};

/// Pod-template annotation: a hash of the inputs that require new pods.
pub const CONFIG_HASH_ANNOTATION: &str = "pgfleet.io/config-hash";
/// Where the fleet's TLS Secret (`tls.crt`, `tls.key`) is mounted in the pooler container.
pub const TLS_MOUNT_PATH: &str = "/etc/pgfleet/tls";
/// The pooler container's name.
pub const CONTAINER_NAME: &str = "pooler";
/// Name of the session-mode container port (and Service port).
pub const PORT_SESSION: &str = "session";
/// Name of the pooled container port (and Service port).
pub const PORT_POOLED: &str = "pooled";
/// Name of the admin HTTP container port (and Service port).
pub const PORT_ADMIN: &str = "admin";
/// How long a stopping pooler keeps accepting after failing readiness, so endpoint removal
/// reaches every node first.
pub const DRAIN_DELAY_SECONDS: i64 = 5;
/// The uid and gid the pooler runs as (the distroless `nonroot` user). Numeric, so the kubelet
/// can verify `runAsNonRoot` whatever the image declares.
pub const POOLER_UID: i64 = 65532;

const TLS_VOLUME: &str = "tls";
/// Owner and group may read; the group is the pod's fsGroup, so the non-root pooler can.
const TLS_FILE_MODE: i32 = 0o440;

/// The fleet's Deployment.
///
/// `default_image` is the pooler image matching the operator's version, used when the fleet
/// does not name one.
pub fn deployment(fleet: &PoolerFleet, default_image: &str) -> Result<Deployment, BuildError> {
    let id = FleetIdentity::of(fleet)?;
    let spec = &fleet.spec;
    let ports = validated_ports(&spec.ports)?;
    if spec.replicas < 0 {
        return Err(BuildError::NegativeReplicas(spec.replicas));
    }
    if spec.termination_grace_period_seconds < 0 {
        return Err(BuildError::NegativeGracePeriod(
            spec.termination_grace_period_seconds,
        ));
    }
    let image = effective_image(fleet, default_image);
    let hash = config_hash(fleet, default_image)?;

    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    if let Some(tls) = &spec.tls {
        volumes.push(Volume {
            name: TLS_VOLUME.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(tls.secret_name.clone()),
                default_mode: Some(TLS_FILE_MODE),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: TLS_VOLUME.into(),
            mount_path: TLS_MOUNT_PATH.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }

    let container = Container {
        name: CONTAINER_NAME.into(),
        image: Some(image.to_string()),
        args: Some(pooler_args(
            &id,
            ports,
            spec.termination_grace_period_seconds,
        )),
        env: Some(vec![
            downward_env("POD_NAME", "metadata.name"),
            downward_env("POD_NAMESPACE", "metadata.namespace"),
        ]),
        ports: Some(vec![
            container_port(PORT_SESSION, ports.session),
            container_port(PORT_POOLED, ports.pooled),
            container_port(PORT_ADMIN, ports.admin),
        ]),
        readiness_probe: Some(http_probe("/readyz", 5, 2)),
        liveness_probe: Some(http_probe("/healthz", 10, 3)),
        resources: spec.resources.clone(),
        security_context: Some(container_security_context()),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        ..Container::default()
    };

    let pod_spec = PodSpec {
        containers: vec![container],
        service_account_name: Some(id.pooler_identity_name()),
        // The pooler's tenant source talks to the API server with this token.
        automount_service_account_token: Some(true),
        // Docker-link-style variables for every Service in the namespace are noise here.
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(spec.termination_grace_period_seconds),
        security_context: Some(pod_security_context()),
        node_selector: (!spec.node_selector.is_empty()).then(|| spec.node_selector.clone()),
        tolerations: (!spec.tolerations.is_empty()).then(|| spec.tolerations.clone()),
        affinity: Some(
            spec.affinity
                .clone()
                .unwrap_or_else(|| default_affinity(&id.name)),
        ),
        topology_spread_constraints: (!spec.topology_spread_constraints.is_empty())
            .then(|| spec.topology_spread_constraints.clone()),
        volumes: (!volumes.is_empty()).then_some(volumes),
        ..PodSpec::default()
    };

    let annotations = BTreeMap::from([
        (CONFIG_HASH_ANNOTATION.to_string(), hash),
        (
            "kubectl.kubernetes.io/default-container".to_string(),
            CONTAINER_NAME.to_string(),
        ),
    ]);

    Ok(Deployment {
        metadata: id.child_meta(id.workload_name()),
        spec: Some(DeploymentSpec {
            replicas: Some(spec.replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&id.name)),
                ..LabelSelector::default()
            },
            // Add a pod before removing one: a rollout never lowers the fleet's capacity.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(fleet_labels(&id.name)),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    })
}

/// The image the fleet's poolers run: the fleet's own choice, else the operator's default.
pub fn effective_image<'a>(fleet: &'a PoolerFleet, default_image: &'a str) -> &'a str {
    fleet.spec.image.as_deref().unwrap_or(default_image)
}

/// The pod-template hash over what must roll pods: image, ports, TLS and resources (16 hex
/// digits of a SHA-256 over their JSON). Tenant settings are deliberately absent: they reload.
pub fn config_hash(fleet: &PoolerFleet, default_image: &str) -> Result<String, BuildError> {
    /// The inputs, in a fixed shape: a field added later changes every hash once (one
    /// rollout at operator upgrade), never silently.
    #[derive(Serialize)]
    struct PodInputs<'a> {
        image: &'a str,
        ports: &'a FleetPorts,
        tls: Option<&'a FleetTls>,
        resources: Option<&'a ResourceRequirements>,
    }
    let inputs = PodInputs {
        image: effective_image(fleet, default_image),
        ports: &fleet.spec.ports,
        tls: fleet.spec.tls.as_ref(),
        resources: fleet.spec.resources.as_ref(),
    };
    let bytes = serde_json::to_vec(&inputs).map_err(|e| BuildError::Hash(e.to_string()))?;
    let digest = Sha256::digest(&bytes);
    Ok(digest.iter().take(8).map(|b| format!("{b:02x}")).collect())
}

/// The ports as the pooler takes them (`u16`), checked in range and distinct.
#[derive(Clone, Copy)]
pub(crate) struct Ports {
    pub session: u16,
    pub pooled: u16,
    pub admin: u16,
}

/// Checks the fleet's ports: each in 1..=65535, all different.
pub(crate) fn validated_ports(ports: &FleetPorts) -> Result<Ports, BuildError> {
    let check = |name: &'static str, value: i32| {
        u16::try_from(value)
            .ok()
            .filter(|p| *p != 0)
            .ok_or(BuildError::InvalidPort { name, value })
    };
    let out = Ports {
        session: check("session", ports.session)?,
        pooled: check("pooled", ports.pooled)?,
        admin: check("admin", ports.admin)?,
    };
    if out.session == out.pooled || out.session == out.admin || out.pooled == out.admin {
        return Err(BuildError::DuplicatePorts);
    }
    Ok(out)
}

/// `--shutdown-timeout` in seconds: the grace period less 5 seconds of margin for the kubelet
/// and process exit, at least 1.
pub fn shutdown_timeout_seconds(termination_grace_period_seconds: i64) -> i64 {
    (termination_grace_period_seconds - 5).max(1)
}

/// The pooler's command line, flag for flag as `pgfleet-pooler` parses it.
fn pooler_args(id: &FleetIdentity, ports: Ports, grace_seconds: i64) -> Vec<String> {
    [
        "--tenant-source",
        "kubernetes",
        "--fleet",
        &id.name,
        "--namespace",
        &id.namespace,
        "--session-port",
        &ports.session.to_string(),
        "--pooled-port",
        &ports.pooled.to_string(),
        "--admin-port",
        &ports.admin.to_string(),
        "--log-format",
        "json",
        "--drain-delay",
        &format!("{DRAIN_DELAY_SECONDS}s"),
        "--shutdown-timeout",
        &format!("{}s", shutdown_timeout_seconds(grace_seconds)),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn downward_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn container_port(name: &str, port: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: i32::from(port),
        // Part of the list's merge key: server-side apply wants it spelled out.
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

/// An HTTP probe on the admin port, by name so a port change cannot leave it behind.
fn http_probe(path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(PORT_ADMIN.into()),
            scheme: Some("HTTP".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        timeout_seconds: Some(2),
        success_threshold: Some(1),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        ..SeccompProfile::default()
    }
}

/// Pod-level: non-root with a numeric uid, and the fsGroup that makes the TLS files readable.
/// Meets the Pod Security Standards' "restricted" profile together with the container's.
fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(POOLER_UID),
        run_as_group: Some(POOLER_UID),
        fs_group: Some(POOLER_UID),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..PodSecurityContext::default()
    }
}

/// Container-level: the pooler needs no capability, no privilege escalation and no writable
/// root file system (it writes nothing to disk).
fn container_security_context() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..SecurityContext::default()
    }
}

/// When the fleet sets no affinity: prefer one pooler per node, so losing a node loses one
/// replica; "preferred", so a small cluster can still run every replica.
fn default_affinity(fleet: &str) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector_labels(fleet)),
                            ..LabelSelector::default()
                        }),
                        topology_key: "kubernetes.io/hostname".into(),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::meta::fleet_labels;
    use crate::resources::test_support::{fleet, fleet_with};

    const IMAGE: &str = "ghcr.io/pgfleet/pooler:0.1.0";

    fn pod(d: &Deployment) -> &PodSpec {
        d.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod spec")
    }

    fn pooler(d: &Deployment) -> &Container {
        &pod(d).containers[0]
    }

    fn template_hash(d: &Deployment) -> String {
        d.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(CONFIG_HASH_ANNOTATION))
            .cloned()
            .expect("hash annotation")
    }

    #[test]
    fn metadata_selector_and_template_labels() {
        let d = deployment(&fleet("edge", "db"), IMAGE).expect("builds");
        assert_eq!(d.metadata.name.as_deref(), Some("edge"));
        assert_eq!(d.metadata.namespace.as_deref(), Some("db"));
        assert_eq!(d.metadata.labels, Some(fleet_labels("edge")));
        let owner = &d.metadata.owner_references.as_ref().expect("owned")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("PoolerFleet", "uid-edge")
        );
        assert_eq!(owner.block_owner_deletion, Some(true));
        let spec = d.spec.as_ref().expect("spec");
        assert_eq!(spec.replicas, Some(2));
        assert_eq!(spec.selector.match_labels, Some(selector_labels("edge")));
        let template_labels = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .expect("labels");
        for (k, v) in selector_labels("edge") {
            assert_eq!(template_labels.get(&k), Some(&v), "pods match the selector");
        }
        let rolling = spec
            .strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref())
            .expect("rolling update");
        assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(0)));
    }

    #[test]
    fn args_are_the_poolers_flags() {
        let d = deployment(&fleet("edge", "db"), IMAGE).expect("builds");
        let args = pooler(&d).args.clone().expect("args");
        assert_eq!(
            args,
            [
                "--tenant-source",
                "kubernetes",
                "--fleet",
                "edge",
                "--namespace",
                "db",
                "--session-port",
                "5432",
                "--pooled-port",
                "6543",
                "--admin-port",
                "8080",
                "--log-format",
                "json",
                "--drain-delay",
                "5s",
                "--shutdown-timeout",
                "25s",
            ]
        );
    }

    #[test]
    fn shutdown_timeout_leaves_five_seconds_and_is_at_least_one() {
        assert_eq!(shutdown_timeout_seconds(30), 25);
        assert_eq!(shutdown_timeout_seconds(6), 1);
        assert_eq!(shutdown_timeout_seconds(5), 1);
        assert_eq!(shutdown_timeout_seconds(0), 1);
        let d = deployment(
            &fleet_with("edge", "db", "terminationGracePeriodSeconds: 120"),
            IMAGE,
        )
        .expect("builds");
        let args = pooler(&d).args.clone().expect("args");
        assert_eq!(args.last().map(String::as_str), Some("115s"));
        assert_eq!(pod(&d).termination_grace_period_seconds, Some(120));
    }

    #[test]
    fn image_is_the_fleets_or_the_default() {
        let d = deployment(&fleet("edge", "db"), IMAGE).expect("builds");
        assert_eq!(pooler(&d).image.as_deref(), Some(IMAGE));
        let d =
            deployment(&fleet_with("edge", "db", "image: my/pooler:dev"), IMAGE).expect("builds");
        assert_eq!(pooler(&d).image.as_deref(), Some("my/pooler:dev"));
    }

    #[test]
    fn ports_env_and_probes() {
        let d = deployment(
            &fleet_with(
                "edge",
                "db",
                "ports: {session: 15432, pooled: 16543, admin: 9090}",
            ),
            IMAGE,
        )
        .expect("builds");
        let c = pooler(&d);
        assert_eq!(c.name, "pooler");
        let ports: Vec<(String, i32, String)> = c
            .ports
            .clone()
            .expect("ports")
            .into_iter()
            .map(|p| {
                (
                    p.name.expect("named"),
                    p.container_port,
                    p.protocol.expect("protocol"),
                )
            })
            .collect();
        assert_eq!(
            ports,
            [
                ("session".into(), 15432, "TCP".into()),
                ("pooled".into(), 16543, "TCP".into()),
                ("admin".into(), 9090, "TCP".into()),
            ]
        );
        let args = c.args.clone().expect("args");
        let after = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        assert_eq!(after("--session-port").as_deref(), Some("15432"));
        assert_eq!(after("--pooled-port").as_deref(), Some("16543"));
        assert_eq!(after("--admin-port").as_deref(), Some("9090"));

        let env = c.env.clone().expect("env");
        let field = |name: &str| {
            env.iter()
                .find(|e| e.name == name)
                .and_then(|e| e.value_from.as_ref())
                .and_then(|v| v.field_ref.as_ref())
                .map(|f| f.field_path.clone())
        };
        assert_eq!(field("POD_NAME").as_deref(), Some("metadata.name"));
        assert_eq!(
            field("POD_NAMESPACE").as_deref(),
            Some("metadata.namespace")
        );

        for (probe, path) in [
            (c.readiness_probe.as_ref(), "/readyz"),
            (c.liveness_probe.as_ref(), "/healthz"),
        ] {
            let get = probe.and_then(|p| p.http_get.as_ref()).expect("http probe");
            assert_eq!(get.path.as_deref(), Some(path));
            assert_eq!(get.port, IntOrString::String("admin".into()));
        }
    }

    #[test]
    fn security_context_is_restricted() {
        let d = deployment(&fleet("edge", "db"), IMAGE).expect("builds");
        let sc = pooler(&d).security_context.clone().expect("container sc");
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.privileged, None);
        let caps = sc.capabilities.clone().expect("capabilities");
        assert_eq!(caps.drop, Some(vec!["ALL".to_string()]));
        assert_eq!(caps.add, None);
        assert_eq!(
            sc.seccomp_profile.map(|s| s.type_),
            Some("RuntimeDefault".to_string())
        );
        let psc = pod(&d).security_context.clone().expect("pod sc");
        assert_eq!(psc.run_as_non_root, Some(true));
        assert!(psc.run_as_user.is_some_and(|u| u > 0));
        assert_eq!(
            psc.seccomp_profile.map(|s| s.type_),
            Some("RuntimeDefault".to_string())
        );
    }

    #[test]
    fn service_account_resources_and_scheduling() {
        let f = fleet_with(
            "edge",
            "db",
            r#"
resources: {requests: {cpu: 500m, memory: 256Mi}, limits: {memory: 512Mi}}
nodeSelector: {pool: poolers}
tolerations: [{key: dedicated, operator: Equal, value: poolers, effect: NoSchedule}]
affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: zone, operator: In, values: [a]}]}]}}}
topologySpreadConstraints: [{maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway}]
"#,
        );
        let d = deployment(&f, IMAGE).expect("builds");
        let p = pod(&d);
        assert_eq!(p.service_account_name.as_deref(), Some("edge-pooler"));
        assert_eq!(pooler(&d).resources, f.spec.resources);
        assert_eq!(p.node_selector.as_ref(), Some(&f.spec.node_selector));
        assert_eq!(p.tolerations.as_ref(), Some(&f.spec.tolerations));
        assert_eq!(p.affinity, f.spec.affinity);
        assert_eq!(
            p.topology_spread_constraints.as_ref(),
            Some(&f.spec.topology_spread_constraints)
        );
    }

    #[test]
    fn default_affinity_spreads_across_nodes() {
        let d = deployment(&fleet("edge", "db"), IMAGE).expect("builds");
        let p = pod(&d);
        assert_eq!(p.node_selector, None);
        assert_eq!(p.tolerations, None);
        assert_eq!(p.topology_spread_constraints, None);
        let term = p
            .affinity
            .as_ref()
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|t| t[0].pod_affinity_term.clone())
            .expect("preferred anti-affinity");
        assert_eq!(term.topology_key, "kubernetes.io/hostname");
        assert_eq!(
            term.label_selector.and_then(|s| s.match_labels),
            Some(selector_labels("edge"))
        );
    }

    #[test]
    fn tls_secret_is_mounted_read_only() {
        let d = deployment(&fleet("edge", "db"), IMAGE).expect("builds");
        assert_eq!(pod(&d).volumes, None);
        assert_eq!(pooler(&d).volume_mounts, None);

        let d = deployment(
            &fleet_with("edge", "db", "tls: {secretName: edge-tls}"),
            IMAGE,
        )
        .expect("builds");
        let volumes = pod(&d).volumes.clone().expect("volumes");
        assert_eq!(volumes.len(), 1);
        let secret = volumes[0].secret.as_ref().expect("secret volume");
        assert_eq!(secret.secret_name.as_deref(), Some("edge-tls"));
        let mounts = pooler(&d).volume_mounts.clone().expect("mounts");
        assert_eq!(mounts[0].name, volumes[0].name);
        assert_eq!(mounts[0].mount_path, "/etc/pgfleet/tls");
        assert_eq!(mounts[0].read_only, Some(true));
    }

    #[test]
    fn hash_covers_only_what_rolls_pods() {
        let base = template_hash(&deployment(&fleet("edge", "db"), IMAGE).expect("builds"));
        assert_eq!(base.len(), 16);
        assert!(base.bytes().all(|b| b.is_ascii_hexdigit()));
        // Deterministic.
        assert_eq!(
            base,
            template_hash(&deployment(&fleet("edge", "db"), IMAGE).expect("builds"))
        );
        for changed in [
            "image: other:1",
            "ports: {pooled: 7000}",
            "tls: {secretName: edge-tls}",
            "resources: {requests: {cpu: '1'}}",
        ] {
            let hash = template_hash(
                &deployment(&fleet_with("edge", "db", changed), IMAGE).expect("builds"),
            );
            assert_ne!(hash, base, "{changed} must roll pods");
        }
        for unchanged in [
            "replicas: 7",
            "service: {type: LoadBalancer}",
            "podDisruptionBudget: {minAvailable: 2}",
            "allowedTenantNamespaces: [team-a]",
        ] {
            let hash = template_hash(
                &deployment(&fleet_with("edge", "db", unchanged), IMAGE).expect("builds"),
            );
            assert_eq!(hash, base, "{unchanged} must not roll pods");
        }
        // The default image counts, since it is what runs.
        let other_default =
            template_hash(&deployment(&fleet("edge", "db"), "other:2").expect("builds"));
        assert_ne!(other_default, base);
    }

    #[test]
    fn refuses_bad_ports_replicas_and_grace() {
        let err = |yaml: &str| deployment(&fleet_with("edge", "db", yaml), IMAGE).err();
        assert_eq!(
            err("ports: {session: 0}"),
            Some(BuildError::InvalidPort {
                name: "session",
                value: 0
            })
        );
        assert_eq!(
            err("ports: {admin: 70000}"),
            Some(BuildError::InvalidPort {
                name: "admin",
                value: 70000
            })
        );
        assert_eq!(
            err("ports: {session: 6543}"),
            Some(BuildError::DuplicatePorts)
        );
        assert_eq!(err("replicas: -1"), Some(BuildError::NegativeReplicas(-1)));
        assert_eq!(
            err("terminationGracePeriodSeconds: -1"),
            Some(BuildError::NegativeGracePeriod(-1))
        );
        assert_eq!(err("replicas: 0"), None);
    }
}
