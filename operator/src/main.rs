//! `pgfleet-operator`: runs the controllers (on the elected leader only, by default) and the
//! admin server until SIGTERM/SIGINT. See [`pgfleet_operator::app`]; the whole `main` is
//! [`pgfleet_operator::cli::main`].

fn main() -> std::process::ExitCode {
    pgfleet_operator::cli::main()
}
