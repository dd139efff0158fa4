//! pgfleet's end-to-end tests (DESIGN §7.4): a real kube-apiserver, the operator and pooler
//! **processes**, and a real PostgreSQL, with nothing mocked.
//!
//! The tests live in `tests/`; this library holds no code. What each test does:
//!
//! * it starts `pgfleet-operator` against testkit's control plane (kine + kube-apiserver
//!   v1.36, no controller-manager, scheduler or kubelet), with leader election on a Lease in a
//!   fresh namespace, and applies a `PoolerFleet` plus `Tenant`s and their password Secrets
//!   (templates in `e2e/manifests/`) pointing at testkit's PostgreSQL;
//! * it plays the kubelet: it reads the Deployment the operator wrote, takes the `pooler`
//!   container's `args` and `env` as they are (resolving `fieldRef`s as the kubelet would),
//!   and starts `pgfleet-pooler` with them and with a kubeconfig for the Deployment's
//!   ServiceAccount, so the pooler reads its tenant documents through the API with exactly the
//!   rights the fleet's Role gives a pod. It waits on the Deployment's readiness probe, then
//!   plays the Deployment controller and writes the Deployment's status;
//! * it connects with tokio-postgres as `user.tenant`, changes Tenants and Secrets through the
//!   API, and checks what clients and the pooler's `/status` see.
//!
//! # Why this package has its own `[[bin]]` targets
//!
//! Cargo gives an integration test `CARGO_BIN_EXE_<name>` only for binaries of **its own**
//! package, and running `cargo build -p pgfleet-operator` from inside `cargo test` would block
//! on the target directory's lock held by the outer cargo. So `src/bin/e2e-pgfleet-operator.rs`
//! and `src/bin/e2e-pgfleet-pooler.rs` are one-line `main`s calling `pgfleet_operator::cli::main`
//! and `pgfleet_pooler::cli::main`, which are the whole `main` of the real binaries too: the
//! processes under test are the shipped binaries, built by the same `cargo test`. Their names
//! differ from the real binaries' so the two never overwrite each other in `target/`.
//!
//! # Running
//!
//! `cargo test -p pgfleet-e2e` (add `-- --nocapture` to see the measured reload latencies).
//! The first run builds the control plane from its Go modules (many minutes, cached under
//! `~/.cache/pgfleet`); PostgreSQL comes from the machine's binaries. On machines with Docker,
//! `e2e/kind/` runs the same story on a kind cluster.
