//! `pgfleet-operator`, built in the e2e package: the same `main` as `operator/src/main.rs`.

fn main() -> std::process::ExitCode {
    pgfleet_operator::cli::main()
}
