#!/usr/bin/env bash
# Builds the local Kubernetes control plane used by pgfleet's tests: a real
# kube-apiserver (from the published k8s.io/kubernetes Go module) and kine
# (an etcd v3 API shim; the tests use its in-memory driver, `memory://`).
#
# Everything comes from the Go module proxy and is built with the machine's Go;
# nothing prebuilt is downloaded. The result is cached under a folder keyed by
# both versions:
#
#   ${PGFLEET_CACHE:-$HOME/.cache/pgfleet}/control-plane/k8s-<K8S>-kine-<KINE>/bin/
#       kube-apiserver  kine
#
# and the Go module and build caches live under ${PGFLEET_CACHE}/go/ so later
# builds (other versions, other checkouts) reuse them.
#
# Usage:
#   build-control-plane.sh                  build if needed; last stdout line is the bin dir
#   build-control-plane.sh --print-bin-dir  print the bin dir without building
#
# Idempotent and safe to run concurrently: a lock serialises builds, the build
# happens in a temporary folder beside the cache and is renamed into place only
# when complete, so an interrupted build never leaves a half-filled cache.
#
# Recipe: shared/reference/operators.md section 5.
set -euo pipefail

K8S_VERSION=1.36.3
KINE_VERSION=v0.17.5

CACHE_ROOT="${PGFLEET_CACHE:-$HOME/.cache/pgfleet}"
KEY="k8s-${K8S_VERSION}-kine-${KINE_VERSION}"
CP_ROOT="$CACHE_ROOT/control-plane"
DEST="$CP_ROOT/$KEY"
BIN_DIR="$DEST/bin"

case "${1:-}" in
--print-bin-dir)
    echo "$BIN_DIR"
    exit 0
    ;;
"") ;;
-h | --help)
    sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
*)
    echo "build-control-plane.sh: unknown argument: $1" >&2
    exit 2
    ;;
esac

# All progress goes to stderr; stdout carries only the bin dir, on its last line.
exec 3>&1 1>&2

is_built() {
    [ -x "$BIN_DIR/kube-apiserver" ] && [ -x "$BIN_DIR/kine" ] &&
        [ "$("$BIN_DIR/kube-apiserver" --version 2>/dev/null)" = "Kubernetes v${K8S_VERSION}" ] &&
        "$BIN_DIR/kine" --version 2>/dev/null | grep -q "^kine version ${KINE_VERSION} "
}

done_ok() {
    echo "$BIN_DIR" >&3
    exit 0
}

if is_built; then
    done_ok
fi

mkdir -p "$CP_ROOT"
# One build at a time (several test processes may start at once).
exec 9>"$CP_ROOT/.$KEY.lock"
if ! flock -n 9; then
    echo "build-control-plane: another build of $KEY is running; waiting for it"
    flock 9
fi
if is_built; then
    done_ok
fi
# Holding the lock, no other build of this key runs: leftovers are from a
# build that was killed outright (SIGKILL skips the cleanup trap).
for stale in "$CP_ROOT/.build-$KEY".*; do
    if [ -d "$stale" ]; then
        chmod -R u+w "$stale" 2>/dev/null || true
        rm -rf "$stale"
    fi
done

GO="${GO:-$(command -v go || true)}"
if [ -z "$GO" ] && [ -x /usr/local/go/bin/go ]; then
    GO=/usr/local/go/bin/go
fi
if [ -z "$GO" ]; then
    echo "build-control-plane: no Go toolchain found (need go >= 1.26.5 on PATH)"
    exit 1
fi

export GOMODCACHE="$CACHE_ROOT/go/mod"
export GOCACHE="$CACHE_ROOT/go/build"
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
export GO111MODULE=on

# k8s.io/kubernetes v1.36.x says `go 1.26.0`, kine v0.17.5 says `go 1.26.5`.
# If the machine's Go is older than that, let the go command fetch a newer
# toolchain as a module (from the module proxy).
NEED_GO=1.26.5
HAVE_GO="$("$GO" env GOVERSION)"
HAVE_GO="${HAVE_GO#go}"
version_lt() { [ "$1" != "$2" ] && [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" = "$1" ]; }
if version_lt "$HAVE_GO" "$NEED_GO"; then
    echo "build-control-plane: go $HAVE_GO is older than $NEED_GO; using GOTOOLCHAIN=go1.27.3"
    export GOTOOLCHAIN=go1.27.3
fi

START=$(date +%s)
WORK="$(mktemp -d "$CP_ROOT/.build-$KEY.XXXXXX")"
cleanup() {
    # Module cache files are read-only; make sure a stray one cannot block removal.
    chmod -R u+w "$WORK" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

OUT="$WORK/out"
mkdir -p "$OUT/bin" "$WORK/src"
echo "build-control-plane: building $KEY with $("$GO" version) in $WORK"

# 1) kube-apiserver, from a wrapper module that replaces every staging module
#    (k8s.io/kubernetes' go.mod requires them at v0.0.0 with `=> ./staging/...`).
STAGING_VERSION="v0.${K8S_VERSION#1.}"
cd "$WORK/src"
"$GO" mod init pgfleet.local/kasbuild >/dev/null 2>&1
K8S_GOMOD="$("$GO" mod download -json "k8s.io/kubernetes@v${K8S_VERSION}" |
    sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
if [ -z "$K8S_GOMOD" ] || [ ! -f "$K8S_GOMOD" ]; then
    echo "build-control-plane: could not download k8s.io/kubernetes@v${K8S_VERSION}"
    exit 1
fi
STAGING_MODULES="$(awk '/^replace \(/{r=1;next} r&&/^\)/{r=0} r&&/=> \.\/staging/{print $1}' "$K8S_GOMOD")"
if [ -z "$STAGING_MODULES" ]; then
    echo "build-control-plane: found no staging replace block in $K8S_GOMOD"
    exit 1
fi
n=0
for m in $STAGING_MODULES; do
    "$GO" mod edit -replace="$m=$m@$STAGING_VERSION"
    n=$((n + 1))
done
echo "build-control-plane: replaced $n staging modules with $STAGING_VERSION"
"$GO" mod edit -require="k8s.io/kubernetes@v${K8S_VERSION}"
"$GO" get "k8s.io/kubernetes/cmd/kube-apiserver@v${K8S_VERSION}"

K8S_MINOR="${K8S_VERSION#1.}"
K8S_MINOR="${K8S_MINOR%%.*}"
VPKG=k8s.io/component-base/version
LDFLAGS="-s -w \
 -X $VPKG.gitVersion=v${K8S_VERSION} \
 -X $VPKG.gitMajor=1 \
 -X $VPKG.gitMinor=${K8S_MINOR} \
 -X $VPKG.gitTreeState=clean \
 -X $VPKG.buildDate=1970-01-01T00:00:00Z"
echo "build-control-plane: go build kube-apiserver (takes minutes the first time)"
CGO_ENABLED=0 "$GO" build -trimpath -o "$OUT/bin/kube-apiserver" -ldflags "$LDFLAGS" \
    k8s.io/kubernetes/cmd/kube-apiserver

# 2) kine: no replace directives, so `go install pkg@version` works.
echo "build-control-plane: go install github.com/k3s-io/kine@${KINE_VERSION}"
(cd "$WORK" && CGO_ENABLED=0 GOBIN="$OUT/bin" "$GO" install -trimpath \
    -ldflags "-s -w -X github.com/k3s-io/kine/pkg/version.Version=${KINE_VERSION}" \
    "github.com/k3s-io/kine@${KINE_VERSION}")

got="$("$OUT/bin/kube-apiserver" --version)"
if [ "$got" != "Kubernetes v${K8S_VERSION}" ]; then
    echo "build-control-plane: built kube-apiserver reports '$got', want 'Kubernetes v${K8S_VERSION}'"
    exit 1
fi
[ -x "$OUT/bin/kine" ] || {
    echo "build-control-plane: kine binary missing after go install"
    exit 1
}
cat >"$OUT/VERSIONS" <<EOF
k8s.io/kubernetes v${K8S_VERSION}
github.com/k3s-io/kine ${KINE_VERSION}
$("$GO" version)
built $(date -u +%Y-%m-%dT%H:%M:%SZ) in $(($(date +%s) - START)) s
EOF

# 3) Move into place atomically (rename within one filesystem). A stale or
#    broken earlier result is renamed out of the way first.
if [ -e "$DEST" ]; then
    mv -T "$DEST" "$WORK/stale"
fi
mv -T "$OUT" "$DEST"
echo "build-control-plane: done in $(($(date +%s) - START)) s"
done_ok
