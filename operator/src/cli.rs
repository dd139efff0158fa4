//! The `pgfleet-operator` command: flags, logging, runtime, and [`crate::app::run`].
//!
//! This is all of the binary's `main`; it lives in the library so that other crates (the
//! end-to-end tests, which need the binary built inside their own package to get
//! `CARGO_BIN_EXE_*`) can build the very same binary.

use std::process::ExitCode;

use crate::config::{Args, LogFormat};
use anyhow::Context as _;
use clap::Parser as _;

/// Parses the command line, sets up logging and the runtime, and runs the operator until
/// SIGTERM/SIGINT. Exit codes: 0 after a clean stop, 1 when the operator failed, 2 for a bad
/// `--log` filter.
pub fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(error) = init_logging(&args) {
        eprintln!("pgfleet-operator: {error:#}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::app::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "pgfleet-operator failed");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(args: &Args) -> anyhow::Result<()> {
    let mut filter =
        tracing_subscriber::EnvFilter::try_new(&args.log).context("invalid --log filter")?;
    if !args.log.contains("kube_client") {
        // The operator logs each API failure itself, with what it was doing; kube's HTTP layer
        // would log every failed request again, as an error. Naming `kube_client` in --log
        // brings those lines back.
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
