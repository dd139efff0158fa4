#!/usr/bin/env bash
# Builds `helm` for pgfleet's chart tests from its published Go module
# (helm.sh/helm/v4) with the machine's Go; nothing prebuilt is downloaded.
# The binary is cached by version:
#
#   ${PGFLEET_CACHE:-$HOME/.cache/pgfleet}/helm/<version>/helm
#
# and the Go module and build caches are shared with the control-plane build
# (${PGFLEET_CACHE}/go/).
#
# Usage:
#   build-helm.sh               build if needed; the last stdout line is the binary's path
#   build-helm.sh --print-path  print the binary's path without building
#
# Idempotent and safe to run concurrently: a lock serialises builds, and the
# binary is built in a temporary folder and renamed into place only when it
# reports the expected version.
set -euo pipefail

HELM_VERSION=v4.3.1
HELM_MODULE=helm.sh/helm/v4

CACHE_ROOT="${PGFLEET_CACHE:-$HOME/.cache/pgfleet}"
HELM_ROOT="$CACHE_ROOT/helm"
DEST="$HELM_ROOT/$HELM_VERSION"
BIN="$DEST/helm"

case "${1:-}" in
--print-path)
    echo "$BIN"
    exit 0
    ;;
"") ;;
-h | --help)
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
*)
    echo "build-helm.sh: unknown argument: $1" >&2
    exit 2
    ;;
esac

# Progress goes to stderr; stdout carries only the binary's path, on its last line.
exec 3>&1 1>&2

is_built() {
    [ -x "$BIN" ] && "$BIN" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION"
}

done_ok() {
    echo "$BIN" >&3
    exit 0
}

if is_built; then
    done_ok
fi

mkdir -p "$HELM_ROOT"
exec 9>"$HELM_ROOT/.$HELM_VERSION.lock"
if ! flock -n 9; then
    echo "build-helm: another build of helm $HELM_VERSION is running; waiting for it"
    flock 9
fi
if is_built; then
    done_ok
fi
for stale in "$HELM_ROOT/.build-$HELM_VERSION".*; do
    [ -d "$stale" ] && rm -rf "$stale"
done

GO="${GO:-$(command -v go || true)}"
if [ -z "$GO" ] && [ -x /usr/local/go/bin/go ]; then
    GO=/usr/local/go/bin/go
fi
if [ -z "$GO" ]; then
    echo "build-helm: no Go toolchain found (need go >= 1.26 on PATH)"
    exit 1
fi

export GOMODCACHE="$CACHE_ROOT/go/mod"
export GOCACHE="$CACHE_ROOT/go/build"
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
export GO111MODULE=on

# helm v4.3.x says `go 1.26.0`; an older Go fetches a newer toolchain as a module.
NEED_GO=1.26.0
HAVE_GO="$("$GO" env GOVERSION)"
HAVE_GO="${HAVE_GO#go}"
version_lt() { [ "$1" != "$2" ] && [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" = "$1" ]; }
if version_lt "$HAVE_GO" "$NEED_GO"; then
    echo "build-helm: go $HAVE_GO is older than $NEED_GO; using GOTOOLCHAIN=go1.27.3"
    export GOTOOLCHAIN=go1.27.3
fi

START=$(date +%s)
WORK="$(mktemp -d "$HELM_ROOT/.build-$HELM_VERSION.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "build-helm: go install $HELM_MODULE/cmd/helm@$HELM_VERSION with $("$GO" version) (a few minutes the first time)"
# helm's go.mod has no replace directives, so `go install pkg@version` works.
# The ldflags are those of helm's Makefile for a release build; the Kubernetes
# version helm assumes offline (.Capabilities.KubeVersion) comes from the
# k8s.io/client-go version in the build info.
(cd "$WORK" && CGO_ENABLED=0 GOBIN="$WORK/bin" "$GO" install -trimpath \
    -ldflags "-s -w -X $HELM_MODULE/internal/version.version=$HELM_VERSION \
        -X $HELM_MODULE/internal/version.gitTreeState=clean" \
    "$HELM_MODULE/cmd/helm@$HELM_VERSION")

got="$("$WORK/bin/helm" version --template '{{.Version}}')"
if [ "$got" != "$HELM_VERSION" ]; then
    echo "build-helm: built helm reports '$got', want '$HELM_VERSION'"
    exit 1
fi
mkdir -p "$WORK/out"
mv "$WORK/bin/helm" "$WORK/out/helm"
cat >"$WORK/out/VERSIONS" <<EOT
$HELM_MODULE $HELM_VERSION
$("$GO" version)
built $(date -u +%Y-%m-%dT%H:%M:%SZ) in $(($(date +%s) - START)) s
EOT
if [ -e "$DEST" ]; then
    mv -T "$DEST" "$WORK/stale"
fi
mv -T "$WORK/out" "$DEST"
echo "build-helm: done in $(($(date +%s) - START)) s"
done_ok
