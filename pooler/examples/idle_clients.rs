//! Opens many logged-in, idle PostgreSQL connections and holds them, for measuring a pooler's
//! memory per idle client (see `bench/run.sh`).
//!
//! ```text
//! cargo run --release -p pgfleet-pooler --example idle_clients -- \
//!     --host 127.0.0.1 --port 6543 --user bench.bench --password bench --dbname bench \
//!     --count 5000 --concurrency 64
//! ```
//!
//! Progress goes to stderr. Once every connection has logged in, it prints `connected N` on
//! stdout and holds the connections until stdin reaches end of file or it gets SIGTERM/SIGINT.
//! A connection that keeps failing after `--attempts` tries ends the run with a non-zero exit.
// Examples run on ordinary runtimes, with time drivers: tokio's timers are fine here
// (pooler/clippy.toml keeps them out of the pooler itself).
#![allow(clippy::disallowed_methods)]

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures_util::StreamExt;
use tokio_postgres::{Client, NoTls};

/// Opens COUNT logged-in idle connections and holds them until stdin closes or SIGTERM/SIGINT.
#[derive(Parser, Debug)]
#[command(name = "idle_clients")]
struct Args {
    /// Server host.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Server port.
    #[arg(long)]
    port: u16,
    /// User name (for pgfleet: `user.tenant`).
    #[arg(long)]
    user: String,
    /// Password.
    #[arg(long, default_value = "")]
    password: String,
    /// Database.
    #[arg(long)]
    dbname: String,
    /// Connections to open.
    #[arg(long)]
    count: usize,
    /// Logins in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Tries per connection before giving up.
    #[arg(long, default_value_t = 5)]
    attempts: u32,
    /// Seconds one login attempt may take.
    #[arg(long, default_value_t = 60)]
    connect_timeout: u64,
}

type StopFuture = Pin<Box<dyn Future<Output = &'static str> + Send>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.count == 0 {
        println!("connected 0");
        return Ok(());
    }
    let mut stop = stop_requested()?;
    let closed = Arc::new(AtomicUsize::new(0));

    let started = Instant::now();
    let clients = tokio::select! {
        result = connect_all(&args, &closed) => result?,
        reason = &mut stop => bail!("stopped by {reason} before all clients connected"),
    };
    let lost = closed.load(Ordering::SeqCst);
    if lost > 0 {
        bail!(
            "{lost} of {} connections closed while connecting",
            args.count
        );
    }
    eprintln!(
        "idle_clients: {} connections up in {:.1}s",
        clients.len(),
        started.elapsed().as_secs_f64()
    );
    println!("connected {}", clients.len());

    let reason = stop.await;
    let lost = closed.load(Ordering::SeqCst);
    eprintln!(
        "idle_clients: releasing {} connections ({reason}); {lost} had closed on their own",
        clients.len()
    );
    drop(clients);
    Ok(())
}

/// Resolves when stdin reaches end of file or on SIGTERM/SIGINT, naming which.
fn stop_requested() -> anyhow::Result<StopFuture> {
    let (eof_tx, eof_rx) = tokio::sync::oneshot::channel::<()>();
    // A plain thread, not tokio's blocking pool: a blocked stdin read must not keep the runtime
    // (and so the process) alive after a signal.
    std::thread::Builder::new()
        .name("stdin-eof".into())
        .spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            let _ = eof_tx.send(());
        })
        .context("cannot start the stdin thread")?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot handle SIGTERM")?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("cannot handle SIGINT")?;
    Ok(Box::pin(async move {
        tokio::select! {
            _ = eof_rx => "end of stdin",
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    }))
}

async fn connect_all(args: &Args, closed: &Arc<AtomicUsize>) -> anyhow::Result<Vec<Client>> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&args.host)
        .port(args.port)
        .user(&args.user)
        .password(&args.password)
        .dbname(&args.dbname)
        .application_name("idle_clients")
        .connect_timeout(Duration::from_secs(args.connect_timeout.max(1)));
    let config = &config;
    let attempts = args.attempts.max(1);

    let mut clients = Vec::with_capacity(args.count);
    let mut connections = futures_util::stream::iter(0..args.count)
        .map(|index| connect_one(config, index, attempts, closed))
        .buffer_unordered(args.concurrency.max(1));
    let mut last_report = Instant::now();
    while let Some(result) = connections.next().await {
        clients.push(result?);
        if last_report.elapsed() >= Duration::from_secs(1) {
            eprintln!("idle_clients: {}/{} connected", clients.len(), args.count);
            last_report = Instant::now();
        }
    }
    Ok(clients)
}

async fn connect_one(
    config: &tokio_postgres::Config,
    index: usize,
    attempts: u32,
    closed: &Arc<AtomicUsize>,
) -> anyhow::Result<Client> {
    let mut attempt = 1;
    loop {
        match config.connect(NoTls).await {
            Ok((client, connection)) => {
                let closed = Arc::clone(closed);
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        eprintln!("idle_clients: connection {index} failed: {e}");
                    }
                    closed.fetch_add(1, Ordering::SeqCst);
                });
                return Ok(client);
            }
            Err(e) if attempt < attempts => {
                // `{:#}` shows the cause too (e.g. "Connection refused").
                let e = anyhow::Error::from(e);
                eprintln!("idle_clients: connection {index}, attempt {attempt}: {e:#}; retrying");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                attempt += 1;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("connection {index} failed after {attempts} attempts")
                });
            }
        }
    }
}
