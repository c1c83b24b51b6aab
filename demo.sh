#!/usr/bin/env bash
# The main job, end to end, on this machine: brings up a real Kubernetes control plane
# (kube-apiserver + kube-controller-manager + etcd) and a real S3 server on 127.0.0.1, deploys a
# small app, backs it up, deletes it, and restores it.
#
#   ./demo.sh            # run the demo, then stop everything
#   DEMO_KEEP=1 ./demo.sh  # leave the cluster and store running to explore (Ctrl-C stops them)
#
# First run on a fresh machine: it builds Kubernetes' control plane from Debian's source package,
# s3s-fs and this project: 819 s (13.7 min) cold on an idle 2-CPU VM (see README); later runs took
# 19-38 s. It prints its own setup and demo times at the end.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
say() { printf '\n\033[1;34m$ %s\033[0m\n' "$*"; }
run() { say "$*"; "$@"; }

# Only what the demo runs: the control plane and the S3 server (no Azurite, fake-gcs-server, node
# binaries or Helm), and only the two binaries it calls.
tests/env/install.sh apt k8s s3
cargo build --workspace --locked --bin kubectl-backup --bin harness
SETUP_SECONDS=$SECONDS

RUN=$(mktemp -d "${TMPDIR:-/tmp}/kubectl-backup-demo.XXXXXX")
HARNESS_PID=""
cleanup() {
  if [ -n "$HARNESS_PID" ] && kill -0 "$HARNESS_PID" 2>/dev/null; then
    kill -TERM "$HARNESS_PID"; wait "$HARNESS_PID" 2>/dev/null || true
  fi
  rm -rf "$RUN"
}
trap cleanup EXIT INT TERM
"$ROOT/target/debug/harness" up --dir "$RUN" --env-file "$RUN/env.json" --stores s3 >"$RUN/harness.log" 2>&1 &
HARNESS_PID=$!
for _ in $(seq 1 240); do
  [ -f "$RUN/env.json" ] && break
  kill -0 "$HARNESS_PID" 2>/dev/null || { cat "$RUN/harness.log"; exit 1; }
  sleep 0.5
done
[ -f "$RUN/env.json" ] || { cat "$RUN/harness.log"; echo "the environment did not start" >&2; exit 1; }

# KUBECONFIG for the local cluster and the AWS_* settings of the local S3 server.
# shellcheck disable=SC1091
source "$RUN/env.sh"
export PATH="$ROOT/target/debug:$PATH"
export KUBECTL_BACKUP_LOCATION=s3://backups/demo

run kubectl get nodes,namespaces
run kubectl apply -f examples/sample-app.yaml
run kubectl backup create shop-backup -n shop
run kubectl backup list
run kubectl backup describe shop-backup
run kubectl delete namespace shop --wait
run kubectl get namespace shop || true
run kubectl backup restore shop-backup --dry-run
run kubectl backup restore shop-backup
run kubectl get configmap,secret,serviceaccount,role,rolebinding,deployment,service,pvc -n shop
run kubectl get configmap settings -n shop -o jsonpath='{.data}{"\n"}'

echo
echo "demo.sh: setup (install + build) took ${SETUP_SECONDS}s, the demo $((SECONDS - SETUP_SECONDS))s"

if [ "${DEMO_KEEP:-}" = 1 ]; then
  echo
  echo "The cluster and the S3 server keep running. In another shell:"
  echo "  source $RUN/env.sh; export PATH=$ROOT/target/debug:\$PATH KUBECTL_BACKUP_LOCATION=s3://backups/demo"
  echo "Ctrl-C here stops everything."
  wait "$HARNESS_PID"
fi
