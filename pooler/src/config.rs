//! Command-line flags (each mirrored by a `PGFLEET_*` environment variable; the namespace
//! also falls back to `POD_NAMESPACE`, as a pod's downward API sets it).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::app::TenantSourceConfig;
use crate::tenants::kubernetes::KubernetesSourceConfig;

/// Where tenant documents come from.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum TenantSourceKind {
    /// A directory of files (`--tenants-dir`), watched and re-read on SIGHUP.
    Directory,
    /// The fleet's tenant-document Secrets (`--fleet`, `--namespace`), watched through the
    /// Kubernetes API with the pod's ServiceAccount (or `KUBECONFIG`).
    Kubernetes,
}

/// Log output format.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// pgfleet-pooler: a multi-tenant PostgreSQL connection pooler.
///
/// Clients connect as `user.tenant` (or pass `options=-c reference=<tenant>`). The session port
/// always pools by session; the pooled port uses each tenant's mode (transaction by default).
#[derive(Parser, Debug, Clone)]
#[command(name = "pgfleet-pooler", version, about, long_about = None)]
pub struct Args {
    /// Where tenant documents come from: a directory of files, or the fleet's Secrets in
    /// Kubernetes. Default: directory.
    // Not a clap default: `required_if_eq` ignores defaults, so "absent" is checked apart.
    #[arg(long, env = "PGFLEET_TENANT_SOURCE", value_enum)]
    pub tenant_source: Option<TenantSourceKind>,

    /// Directory of tenant documents (one YAML or JSON file per tenant), watched for changes
    /// and re-read on SIGHUP. Required with `--tenant-source directory`.
    #[arg(
        long,
        env = "PGFLEET_TENANTS_DIR",
        required_unless_present = "tenant_source",
        required_if_eq("tenant_source", "directory")
    )]
    pub tenants_dir: Option<PathBuf>,

    /// The fleet whose tenant-document Secrets (label `pgfleet.io/fleet=<fleet>`) are
    /// watched. Required with `--tenant-source kubernetes`.
    #[arg(
        long,
        env = "PGFLEET_FLEET",
        required_if_eq("tenant_source", "kubernetes")
    )]
    pub fleet: Option<String>,

    /// Namespace of the fleet's Secrets (kubernetes source). Default: `POD_NAMESPACE`, else
    /// the pod's own namespace (or the kubeconfig context's).
    #[arg(long, env = "PGFLEET_NAMESPACE")]
    pub namespace: Option<String>,

    /// Address to listen on (both ports).
    #[arg(long, env = "PGFLEET_LISTEN", default_value = "0.0.0.0")]
    pub listen: IpAddr,

    /// Session-mode port.
    #[arg(long, env = "PGFLEET_SESSION_PORT", default_value_t = 5432)]
    pub session_port: u16,

    /// Pooled port (each tenant's mode, transaction by default).
    #[arg(long, env = "PGFLEET_POOLED_PORT", default_value_t = 6543)]
    pub pooled_port: u16,

    /// Admin HTTP port: /healthz, /readyz, /metrics (Prometheus), /status (JSON). 0 disables.
    #[arg(long, env = "PGFLEET_ADMIN_PORT", default_value_t = 8080)]
    pub admin_port: u16,

    /// On SIGTERM, how long readiness is reported false before the ports stop accepting and
    /// clients are closed at transaction boundaries (lets load balancers catch up), e.g. `5s`.
    #[arg(long, env = "PGFLEET_DRAIN_DELAY", default_value = "5s", value_parser = parse_duration)]
    pub drain_delay: Duration,

    /// On SIGTERM, the most time given to transactions in flight, counted from the signal;
    /// keep it below the pod's terminationGracePeriodSeconds.
    #[arg(long, env = "PGFLEET_SHUTDOWN_TIMEOUT", default_value = "25s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Most client connections served at once per port; more wait in the accept backlog.
    #[arg(long, env = "PGFLEET_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,

    /// Time a client has to finish logging in, e.g. `15s`.
    #[arg(long, env = "PGFLEET_LOGIN_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub login_timeout: Duration,

    /// Worker threads, each with its own runtime and its own listening sockets on both ports
    /// (SO_REUSEPORT). Default: the CPUs available to the process (cgroup limits included).
    #[arg(long, env = "PGFLEET_WORKERS")]
    pub workers: Option<usize>,

    /// Log format.
    #[arg(long, env = "PGFLEET_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `pgfleet_pooler=debug`.
    #[arg(long, env = "PGFLEET_LOG", default_value = "info")]
    pub log: String,
}

impl Args {
    /// The tenant source the flags select; `pod_namespace` is `POD_NAMESPACE`, the fallback
    /// for `--namespace`.
    pub fn source_config(&self, pod_namespace: Option<String>) -> TenantSourceConfig {
        match self.tenant_source.unwrap_or(TenantSourceKind::Directory) {
            // clap requires --tenants-dir with this source; an empty path fails the
            // is-a-directory check at start with the usual message.
            TenantSourceKind::Directory => {
                TenantSourceConfig::Directory(self.tenants_dir.clone().unwrap_or_default())
            }
            TenantSourceKind::Kubernetes => {
                TenantSourceConfig::Kubernetes(KubernetesSourceConfig {
                    fleet: self.fleet.clone().unwrap_or_default(),
                    namespace: self
                        .namespace
                        .clone()
                        .or(pod_namespace)
                        .filter(|ns| !ns.is_empty()),
                    kubeconfig: None,
                })
            }
        }
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    pgfleet_crds::duration::parse_duration(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_parse_with_defaults() {
        let args = Args::parse_from(["pgfleet-pooler", "--tenants-dir", "/t"]);
        assert_eq!(args.session_port, 5432);
        assert_eq!(args.pooled_port, 6543);
        assert_eq!(args.login_timeout, Duration::from_secs(15));
        assert_eq!(args.log_format, LogFormat::Text);
        let args = Args::parse_from([
            "pgfleet-pooler",
            "--tenants-dir",
            "/t",
            "--listen",
            "127.0.0.1",
            "--session-port",
            "1",
            "--pooled-port",
            "2",
            "--log-format",
            "json",
            "--login-timeout",
            "2s",
        ]);
        assert_eq!((args.session_port, args.pooled_port), (1, 2));
        assert_eq!(args.log_format, LogFormat::Json);
    }

    #[test]
    fn tenant_source_selection() {
        // Directory is the default, and needs --tenants-dir.
        let args = Args::parse_from(["pgfleet-pooler", "--tenants-dir", "/t"]);
        assert_eq!(
            args.source_config(Some("ignored".into())),
            TenantSourceConfig::Directory("/t".into())
        );
        assert!(Args::try_parse_from(["pgfleet-pooler"]).is_err());
        assert!(Args::try_parse_from(["pgfleet-pooler", "--tenant-source", "directory"]).is_err());

        // Kubernetes needs --fleet, not --tenants-dir; the namespace falls back to
        // POD_NAMESPACE, then to the client's default.
        let err = Args::try_parse_from(["pgfleet-pooler", "--tenant-source", "kubernetes"])
            .expect_err("--fleet is required");
        assert!(err.to_string().contains("--fleet"), "{err}");
        let args = Args::parse_from([
            "pgfleet-pooler",
            "--tenant-source",
            "kubernetes",
            "--fleet",
            "main",
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
        ]);
        let want = |namespace: Option<&str>| {
            TenantSourceConfig::Kubernetes(KubernetesSourceConfig {
                fleet: "main".into(),
                namespace: namespace.map(str::to_string),
                kubeconfig: None,
            })
        };
        assert_eq!(
            args.source_config(Some("pods-ns".into())),
            want(Some("pods-ns"))
        );
        assert_eq!(args.source_config(Some(String::new())), want(None));
        assert_eq!(args.source_config(None), want(None));
        let args = Args::parse_from([
            "pgfleet-pooler",
            "--tenant-source",
            "kubernetes",
            "--fleet",
            "main",
            "--namespace",
            "db",
        ]);
        assert_eq!(args.source_config(Some("pods-ns".into())), want(Some("db")));
    }

    #[test]
    fn help_documents_every_flag() {
        Args::command().debug_assert();
        let help = Args::command().render_long_help().to_string();
        for flag in [
            "--tenant-source",
            "--tenants-dir",
            "--fleet",
            "--namespace",
            "--listen",
            "--session-port",
            "--pooled-port",
            "--log-format",
            "--login-timeout",
        ] {
            assert!(help.contains(flag), "{flag} missing from --help");
        }
    }
}
