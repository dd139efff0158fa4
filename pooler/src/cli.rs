//! The `pgfleet-pooler` command: command line, logging, runtime, signals and drain.

use crate::Settings;
use crate::app::{PoolerConfig, RunningPooler, Workers};
use crate::config::{Args, LogFormat};
use anyhow::Context;
use clap::Parser;

/// Parses the command line, starts the pooler and serves until SIGINT/SIGTERM, then drains.
/// This is all of `pgfleet-pooler`'s `main`; it lives in the library so that other crates (the
/// end-to-end tests) can build the very same binary.
pub fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(&args)?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(workers) = args.workers {
        runtime.worker_threads(workers.max(1));
    }
    runtime
        .build()
        .context("cannot start the async runtime")?
        .block_on(run(args))
}

fn init_logging(args: &Args) -> anyhow::Result<()> {
    let mut filter =
        tracing_subscriber::EnvFilter::try_new(&args.log).context("invalid --log filter")?;
    if !args.log.contains("kube_client") {
        // The Kubernetes source logs each API failure itself, with its retry delay; kube's
        // HTTP layer would log every failed request again, as an error. Naming `kube_client`
        // in --log brings those lines back.
        filter = filter.add_directive(
            "kube_client::client::builder=off"
                .parse()
                .context("built-in log directive")?,
        );
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<()> {
    let pod_namespace = std::env::var("POD_NAMESPACE").ok();
    let pooler = RunningPooler::start(PoolerConfig {
        tenant_source: args.source_config(pod_namespace),
        listen: args.listen,
        session_port: args.session_port,
        pooled_port: args.pooled_port,
        max_connections: args.max_connections,
        admin_port: (args.admin_port != 0).then_some(args.admin_port),
        workers: Workers::Threads(args.workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })),
        settings: Settings {
            login_timeout: args.login_timeout,
            ..Settings::default()
        },
    })
    .await?;
    wait_for_stop_signal().await;
    tracing::info!("shutting down");
    pooler.drain(args.drain_delay, args.shutdown_timeout).await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
