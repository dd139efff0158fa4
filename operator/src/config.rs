//! Command-line flags of `pgfleet-operator` (each mirrored by an environment variable, so the
//! Helm chart can set them either way), and the few values derived from them at start.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::leader_election::{ElectionConfig, ElectionConfigError};

/// The pooler image fleets get when they do not name one: the pooler built from the same
/// release as this operator.
pub const DEFAULT_POOLER_IMAGE: &str =
    concat!("ghcr.io/pgfleet/pgfleet-pooler:", env!("CARGO_PKG_VERSION"));

/// Where a pod's ServiceAccount mount says which namespace the pod runs in.
pub const SERVICE_ACCOUNT_NAMESPACE_FILE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// Log output format.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// pgfleet-operator: turns PoolerFleet (and Tenant) resources into pooler Deployments.
///
/// Run two or more replicas with leader election (the default): one holds the Lease and runs
/// the controllers, the others wait and take over when it stops renewing.
#[derive(Parser, Debug, Clone)]
#[command(name = "pgfleet-operator", version, about, long_about = None)]
pub struct Args {
    /// Address of the admin HTTP server: /healthz, /readyz and /metrics (OpenMetrics).
    #[arg(
        long,
        env = "PGFLEET_OPERATOR_ADMIN_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub admin_addr: SocketAddr,

    /// Pooler image for fleets that do not set `spec.image`.
    #[arg(long, env = "PGFLEET_POOLER_IMAGE", default_value = DEFAULT_POOLER_IMAGE)]
    pub pooler_image: String,

    /// Namespace to watch; empty (the default) watches all namespaces.
    #[arg(long, env = "PGFLEET_WATCH_NAMESPACE", default_value = "")]
    pub namespace: String,

    /// Elect a leader through a coordination.k8s.io Lease, so several replicas can run and only
    /// the leader reconciles (default: on).
    #[arg(
        long,
        env = "PGFLEET_LEADER_ELECTION",
        overrides_with = "no_leader_election",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new(),
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    pub leader_election: bool,

    /// Run the controllers at once, without a Lease (a single replica only).
    #[arg(long, overrides_with = "leader_election")]
    pub no_leader_election: bool,

    /// Name of the Lease the replicas compete for.
    #[arg(long, default_value = "pgfleet-operator")]
    pub lease_name: String,

    /// Namespace of the Lease. Default: `POD_NAMESPACE`, else the namespace of the pod's
    /// ServiceAccount mount; required (one way or another) with leader election.
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// This replica's identity in the Lease; must differ between replicas. Default: the host
    /// name plus a random suffix.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// How long a Lease stays valid after its last renewal; a standby takes over when the
    /// leader has not renewed it for this long, e.g. `15s`.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,

    /// How long the leader keeps trying to renew before it gives up leadership (and exits, to
    /// be restarted as a standby); shorter than --lease-duration.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub renew_deadline: Duration,

    /// Pause between two attempts to acquire or renew the Lease, e.g. `2s` or `500ms`.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub retry_period: Duration,

    /// Log format.
    #[arg(long, env = "PGFLEET_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `pgfleet_operator=debug`.
    #[arg(long, env = "PGFLEET_LOG", default_value = "info")]
    pub log: String,
}

/// Why the flags cannot be turned into a running configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Leader election is on but nothing says where the Lease lives.
    #[error(
        "leader election needs the Lease's namespace: set --lease-namespace or POD_NAMESPACE \
         (or run in a pod, where {SERVICE_ACCOUNT_NAMESPACE_FILE} says it), or turn leader \
         election off with --no-leader-election"
    )]
    MissingLeaseNamespace,
    /// The Lease timings are inconsistent.
    #[error(transparent)]
    Election(#[from] ElectionConfigError),
}

impl Args {
    /// Whether leader election is on (`--no-leader-election` wins over the default and the
    /// environment).
    pub fn leader_election_enabled(&self) -> bool {
        self.leader_election && !self.no_leader_election
    }

    /// The namespace the controllers watch, or `None` for all namespaces.
    pub fn watch_namespace(&self) -> Option<&str> {
        Some(self.namespace.trim()).filter(|ns| !ns.is_empty())
    }

    /// The leader-election settings, or `None` when leader election is off.
    ///
    /// `service_account_namespace` is the content of [`SERVICE_ACCOUNT_NAMESPACE_FILE`] if it
    /// could be read (the fallback for the Lease namespace); `hostname` feeds the default
    /// identity.
    pub fn election_config(
        &self,
        service_account_namespace: Option<String>,
        hostname: &str,
    ) -> Result<Option<ElectionConfig>, ConfigError> {
        if !self.leader_election_enabled() {
            return Ok(None);
        }
        let namespace = [self.lease_namespace.clone(), service_account_namespace]
            .into_iter()
            .flatten()
            .map(|ns| ns.trim().to_string())
            .find(|ns| !ns.is_empty())
            .ok_or(ConfigError::MissingLeaseNamespace)?;
        let identity = self
            .identity
            .clone()
            .map(|id| id.trim().to_string())
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| default_identity(hostname));
        let config = ElectionConfig {
            lease_name: self.lease_name.clone(),
            namespace,
            identity,
            lease_duration: self.lease_duration,
            renew_deadline: self.renew_deadline,
            retry_period: self.retry_period,
        };
        config.validate()?;
        Ok(Some(config))
    }
}

/// `<hostname>-<5 random lowercase letters and digits>`: unique even when two processes share
/// a host name (e.g. two local runs), and still telling where the leader runs.
pub fn default_identity(hostname: &str) -> String {
    use rand::Rng as _;
    use rand::distr::Alphanumeric;
    let suffix: String = rand::rng()
        .sample_iter(Alphanumeric)
        .map(|c| char::from(c).to_ascii_lowercase())
        .take(5)
        .collect();
    let host = hostname.trim();
    let host = if host.is_empty() {
        "pgfleet-operator"
    } else {
        host
    };
    format!("{host}-{suffix}")
}

/// The machine's host name (a pod's name in Kubernetes), or empty if it cannot be found.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// The namespace in the ServiceAccount mount at `path`, if the file exists and is not empty.
pub fn read_namespace_file(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|ns| ns.trim().to_string())
        .filter(|ns| !ns.is_empty())
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    pgfleet_crds::duration::parse_duration(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Args {
        let mut argv = vec!["pgfleet-operator"];
        argv.extend_from_slice(args);
        Args::try_parse_from(argv).expect("flags parse")
    }

    #[test]
    fn defaults() {
        let args = parse(&[]);
        assert_eq!(args.admin_addr, "0.0.0.0:8080".parse().expect("addr"));
        assert_eq!(
            args.pooler_image,
            format!(
                "ghcr.io/pgfleet/pgfleet-pooler:{}",
                env!("CARGO_PKG_VERSION")
            )
        );
        assert_eq!(args.watch_namespace(), None);
        assert!(args.leader_election_enabled());
        assert_eq!(args.lease_name, "pgfleet-operator");
        assert_eq!(args.lease_duration, Duration::from_secs(15));
        assert_eq!(args.renew_deadline, Duration::from_secs(10));
        assert_eq!(args.retry_period, Duration::from_secs(2));
        assert_eq!(args.log_format, LogFormat::Text);
        assert_eq!(args.log, "info");
    }

    #[test]
    fn leader_election_switches() {
        assert!(!parse(&["--no-leader-election"]).leader_election_enabled());
        assert!(parse(&["--leader-election"]).leader_election_enabled());
        assert!(!parse(&["--leader-election=false"]).leader_election_enabled());
        // The last of the two flags wins.
        assert!(parse(&["--no-leader-election", "--leader-election"]).leader_election_enabled());
        assert!(!parse(&["--leader-election", "--no-leader-election"]).leader_election_enabled());
    }

    #[test]
    fn election_config_sources() {
        let args = parse(&[
            "--lease-namespace",
            "ops",
            "--identity",
            "op-0",
            "--lease-duration",
            "3s",
            "--renew-deadline",
            "2s",
            "--retry-period",
            "500ms",
            "--namespace",
            "db",
        ]);
        assert_eq!(args.watch_namespace(), Some("db"));
        let config = args
            .election_config(Some("from-file".into()), "host")
            .expect("valid")
            .expect("enabled");
        assert_eq!(config.namespace, "ops");
        assert_eq!(config.identity, "op-0");
        assert_eq!(config.retry_period, Duration::from_millis(500));

        // The ServiceAccount file is the fallback; the identity defaults to host + suffix.
        let args = parse(&[]);
        let config = args
            .election_config(Some("from-file\n".into()), "host-a")
            .expect("valid")
            .expect("enabled");
        assert_eq!(config.namespace, "from-file");
        assert!(
            config.identity.starts_with("host-a-"),
            "{}",
            config.identity
        );
        assert_eq!(config.identity.len(), "host-a-".len() + 5);

        // Neither: a clear error, unless leader election is off.
        let err = args
            .election_config(None, "host")
            .expect_err("namespace missing");
        assert!(matches!(err, ConfigError::MissingLeaseNamespace));
        assert!(err.to_string().contains("--lease-namespace"), "{err}");
        let off = parse(&["--no-leader-election"]);
        assert!(off.election_config(None, "host").expect("off").is_none());

        // Inconsistent timings are refused.
        let args = parse(&[
            "--lease-namespace",
            "ops",
            "--lease-duration",
            "2s",
            "--renew-deadline",
            "3s",
        ]);
        assert!(args.election_config(None, "host").is_err());
    }

    #[test]
    fn identities_differ() {
        assert_ne!(default_identity("h"), default_identity("h"));
        assert!(default_identity("").starts_with("pgfleet-operator-"));
    }

    #[test]
    fn help_documents_every_flag() {
        Args::command().debug_assert();
        let help = Args::command().render_long_help().to_string();
        for flag in [
            "--admin-addr",
            "--pooler-image",
            "--namespace",
            "--leader-election",
            "--no-leader-election",
            "--lease-name",
            "--lease-namespace",
            "--identity",
            "--lease-duration",
            "--renew-deadline",
            "--retry-period",
            "--log-format",
            "--log",
            "PGFLEET_OPERATOR_ADMIN_ADDR",
            "PGFLEET_POOLER_IMAGE",
            "PGFLEET_WATCH_NAMESPACE",
            "PGFLEET_LEADER_ELECTION",
            "POD_NAMESPACE",
            "POD_NAME",
            "PGFLEET_LOG_FORMAT",
            "PGFLEET_LOG",
        ] {
            assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
        }
    }
}
