#!/usr/bin/env bash
# End-to-end test of pgfleet on kind: builds both images, installs the Helm chart, starts a
# PostgreSQL 15, applies the example PoolerFleet, Secrets and Tenants, and connects with psql
# through the fleet's Service as app.acme and app.globex. Needs docker, kind, kubectl and helm.
#
# Environment:
#   KIND_CLUSTER_NAME  cluster to create (default pgfleet-e2e); it must not exist yet
#   KEEP_CLUSTER=1     keep the cluster afterwards (default: deleted, pass or fail)
#   IMAGE_TAG          tag of the locally built images (default e2e)
#   HELM               helm binary (default: helm on PATH; testkit/helm/build-helm.sh builds one)
#
# Every manifest applied here is a file of the repository that the Rust tests also check
# against a real kube-apiserver (operator/tests/examples.rs).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CLUSTER="${KIND_CLUSTER_NAME:-pgfleet-e2e}"
CONTEXT="kind-$CLUSTER"
TAG="${IMAGE_TAG:-e2e}"
HELM="${HELM:-helm}"
OPERATOR_IMAGE="ghcr.io/pgfleet/pgfleet-operator"
POOLER_IMAGE="ghcr.io/pgfleet/pgfleet-pooler"
RELEASE=pgfleet
RELEASE_NS=pgfleet-system
NS=pgfleet-e2e
TIMEOUT=300s

log() { echo "e2e/kind: $*" >&2; }
fail() {
    log "error: $*"
    exit 1
}
need() {
    command -v "$1" >/dev/null 2>&1 || fail "$1 not found: $2"
}
need docker "install Docker (https://docs.docker.com/engine/install/)"
need kind "install kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)"
need kubectl "install kubectl (https://kubernetes.io/docs/tasks/tools/)"
need "$HELM" "install helm 3.8+ (https://helm.sh/docs/intro/install/), set HELM, or build one with testkit/helm/build-helm.sh"
docker info >/dev/null 2>&1 || fail "the Docker daemon is not reachable (is it running, may this user use it?)"
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    fail "kind cluster $CLUSTER already exists: delete it (kind delete cluster --name $CLUSTER) or set KIND_CLUSTER_NAME"
fi

k() { kubectl --context "$CONTEXT" "$@"; }

diagnostics() {
    log "--- diagnostics ---"
    k get nodes -o wide || true
    k get all,poolerfleets,tenants,secrets,leases -n "$RELEASE_NS" -o wide || true
    k get all,poolerfleets,tenants -n "$NS" -o wide || true
    k describe tenants,poolerfleets -n "$NS" || true
    k get events -A --sort-by=.lastTimestamp | tail -n 60 || true
    log "--- operator logs ---"
    k logs -n "$RELEASE_NS" -l app.kubernetes.io/instance="$RELEASE" --all-containers --prefix --tail=200 || true
    log "--- pooler logs ---"
    k logs -n "$NS" -l app.kubernetes.io/name=pgfleet-pooler --all-containers --prefix --tail=200 || true
    log "--- postgres logs ---"
    k logs -n "$NS" deployment/postgres --tail=100 || true
    log "--- psql job logs ---"
    k logs -n "$NS" -l app.kubernetes.io/name=pgfleet-e2e-psql --prefix --tail=100 || true
}

CREATED=0
cleanup() {
    local status=$?
    if [ "$status" -ne 0 ] && [ "$CREATED" = 1 ]; then
        diagnostics
    fi
    if [ "$CREATED" = 1 ]; then
        if [ "${KEEP_CLUSTER:-0}" = 1 ]; then
            log "keeping cluster $CLUSTER (kubectl --context $CONTEXT ...; kind delete cluster --name $CLUSTER)"
        else
            log "deleting cluster $CLUSTER"
            kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
        fi
    fi
    if [ "$status" -eq 0 ]; then log "PASS"; else log "FAIL (exit $status)"; fi
}
trap cleanup EXIT

log "building images $OPERATOR_IMAGE:$TAG and $POOLER_IMAGE:$TAG"
DOCKER_BUILDKIT=1 docker build -f "$ROOT/Dockerfile.operator" -t "$OPERATOR_IMAGE:$TAG" "$ROOT"
DOCKER_BUILDKIT=1 docker build -f "$ROOT/Dockerfile.pooler" -t "$POOLER_IMAGE:$TAG" "$ROOT"

log "creating kind cluster $CLUSTER"
CREATED=1
kind create cluster --name "$CLUSTER" --wait 120s
kind load docker-image --name "$CLUSTER" "$OPERATOR_IMAGE:$TAG" "$POOLER_IMAGE:$TAG"

log "installing the chart (release $RELEASE in $RELEASE_NS)"
# The pooler image is not pulled either: its tag is not "latest", so the fleet's pods use
# IfNotPresent and find the loaded image.
"$HELM" install "$RELEASE" "$ROOT/charts/pgfleet" --kube-context "$CONTEXT" \
    --namespace "$RELEASE_NS" --create-namespace \
    --set operator.image.repository="$OPERATOR_IMAGE" \
    --set operator.image.tag="$TAG" \
    --set operator.image.pullPolicy=Never \
    --set pooler.image.repository="$POOLER_IMAGE" \
    --set pooler.image.tag="$TAG" \
    --set operator.logFormat=text
k rollout status -n "$RELEASE_NS" deployment/"$RELEASE" --timeout="$TIMEOUT"

log "starting PostgreSQL 15 in $NS"
k create namespace "$NS"
k apply -n "$NS" -f "$ROOT/examples/secrets.yaml" -f "$ROOT/examples/postgres.yaml"
k rollout status -n "$NS" deployment/postgres --timeout="$TIMEOUT"

log "applying the example fleet and tenants"
k apply -n "$NS" -f "$ROOT/examples/poolerfleet.yaml" \
    -f "$ROOT/examples/tenant.yaml" -f "$ROOT/examples/tenant-auth-query.yaml"
# The operator creates the fleet's Deployment a moment after the fleet is applied; rollout
# status would fail at once on a Deployment that does not exist yet.
deadline=$((SECONDS + 120))
until k get -n "$NS" deployment/main >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || fail "the operator did not create deployment/main"
    sleep 2
done
k rollout status -n "$NS" deployment/main --timeout="$TIMEOUT"
k wait -n "$NS" --for=condition=Ready tenant/acme tenant/globex --timeout="$TIMEOUT"
k get tenants -n "$NS"

log "connecting with psql through the fleet's Service"
k apply -n "$NS" -f "$ROOT/e2e/kind/psql-job.yaml"
deadline=$((SECONDS + 300))
while :; do
    succeeded="$(k get job -n "$NS" pgfleet-e2e-psql -o jsonpath='{.status.succeeded}')"
    failed="$(k get job -n "$NS" pgfleet-e2e-psql -o jsonpath='{.status.conditions[?(@.type=="Failed")].status}')"
    if [ "${succeeded:-0}" -ge 1 ]; then
        break
    fi
    if [ "$failed" = True ] || [ "$SECONDS" -ge "$deadline" ]; then
        fail "the psql job did not succeed"
    fi
    sleep 2
done
k logs -n "$NS" job/pgfleet-e2e-psql
