//! `pgfleet-pooler`: loads tenants from a directory or from the fleet's Secrets in Kubernetes,
//! and serves both ports until SIGINT/SIGTERM.

fn main() -> anyhow::Result<()> {
    pgfleet_pooler::cli::main()
}
