#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and integration tests against a real
# PostgreSQL that the tests start themselves (from the machine's PostgreSQL binaries).
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "error: $*" >&2; exit 1; }
command -v cargo >/dev/null || fail "cargo not found: install Rust 1.95 or newer (https://rustup.rs)"
cargo fmt --version >/dev/null 2>&1 || fail "rustfmt missing: rustup component add rustfmt"
cargo clippy --version >/dev/null 2>&1 || fail "clippy missing: rustup component add clippy"
pg_bin=${PG_BIN:-$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)}
for tool in initdb pg_ctl postgres psql pgbench; do
  [[ -n "$pg_bin" && -x "$pg_bin/$tool" ]] || fail "PostgreSQL's $tool not found (looked in '${pg_bin:-nowhere}'): install PostgreSQL server binaries (Debian/Ubuntu: apt-get install postgresql) or set PG_BIN"
done
command -v go >/dev/null || [[ -x /usr/local/go/bin/go ]] || fail "Go not found: the operator tests build a real kube-apiserver from Go modules (install Go 1.26+, https://go.dev/doc/install)"
command -v kubectl >/dev/null || fail "kubectl not found: install it (e.g. apt-get install kubectl, or https://kubernetes.io/docs/tasks/tools/)"
command -v openssl >/dev/null || fail "openssl not found: apt-get install openssl"
[[ -x "$(./testkit/helm/build-helm.sh --print-path)" ]] || fail "helm for the chart tests is not built: run ./testkit/helm/build-helm.sh (builds it from its Go module with Go 1.26+, a few minutes once, then cached; .ci/run does this)"
if [[ $(id -u) == 0 ]]; then
  id postgres >/dev/null 2>&1 || fail "running as root needs a 'postgres' OS user for initdb (created by the postgresql package)"
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole workspace (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "summary: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
