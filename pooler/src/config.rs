//! Command-line flags (each mirrored by a `PGFLEET_*` environment variable).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

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
    /// Directory of tenant documents (one YAML or JSON file per tenant), watched for changes
    /// and re-read on SIGHUP.
    #[arg(long, env = "PGFLEET_TENANTS_DIR")]
    pub tenants_dir: PathBuf,

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
    fn help_documents_every_flag() {
        Args::command().debug_assert();
        let help = Args::command().render_long_help().to_string();
        for flag in [
            "--tenants-dir",
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
