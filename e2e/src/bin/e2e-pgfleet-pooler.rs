//! `pgfleet-pooler`, built in the e2e package: the same `main` as `pooler/src/main.rs`.

fn main() -> anyhow::Result<()> {
    pgfleet_pooler::cli::main()
}
