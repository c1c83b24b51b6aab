#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a warm one:
#   1. installs and builds the real servers (cached under ~/.cache/kubectl-backup),
#   2. checks formatting and lints,
#   3. starts the shared environment (etcd, kube-apiserver, kube-controller-manager, s3s-fs,
#      Azurite, fake-gcs-server) on 127.0.0.1,
#   4. runs every unit and end-to-end test against it,
#   5. stops everything it started, also on failure.
# Usage: tests/run.sh [extra cargo test args, e.g. a test name filter]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

step() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

step "install the real servers"
tests/env/install.sh

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# One TLS crypto provider in the build (aws-lc-rs): ring must not come back with a dependency.
if [ -n "$(cargo tree --workspace --locked -e normal -i ring 2>/dev/null)" ]; then
  cargo tree --workspace --locked -e normal -i ring >&2
  echo "ring is in the build: pick the dependency's aws-lc-rs feature instead" >&2
  exit 1
fi

step "build"
cargo build --workspace --bins --locked
cargo test --workspace --no-run --locked
# aws-lc without CPU jitter entropy (.cargo/config.toml): its per-process seeding held up every
# command's first TLS handshake. The debug binaries keep their symbols, so its code would show.
for bin in kubectl-backup backup-webhook; do
  if grep -q jent_entropy_init "target/debug/$bin"; then
    echo "target/debug/$bin has aws-lc's CPU jitter entropy: AWS_LC_SYS_NO_JITTER_ENTROPY (.cargo/config.toml) did not reach aws-lc-sys's build" >&2
    exit 1
  fi
done

RUN=$(mktemp -d "${TMPDIR:-/tmp}/kubectl-backup-e2e.XXXXXX")
HARNESS_PID=""
cleanup() {
  status=$?
  if [ -n "$HARNESS_PID" ] && kill -0 "$HARNESS_PID" 2>/dev/null; then
    kill -TERM "$HARNESS_PID" 2>/dev/null || true
    wait "$HARNESS_PID" 2>/dev/null || true
  fi
  if [ $status -eq 0 ]; then rm -rf "$RUN"; else echo "logs of the servers are in $RUN" >&2; fi
  exit $status
}
trap cleanup EXIT INT TERM

step "start the shared environment in $RUN"
"$ROOT/target/debug/harness" up --dir "$RUN" --env-file "$RUN/env.json" >"$RUN/harness.log" 2>&1 &
HARNESS_PID=$!
for _ in $(seq 1 240); do
  [ -f "$RUN/env.json" ] && break
  if ! kill -0 "$HARNESS_PID" 2>/dev/null; then cat "$RUN/harness.log" >&2; echo "the harness failed to start" >&2; exit 1; fi
  sleep 0.5
done
[ -f "$RUN/env.json" ] || { cat "$RUN/harness.log" >&2; echo "the harness did not become ready in 120 s" >&2; exit 1; }
tail -n 3 "$RUN/harness.log" >&2

step "unit and end-to-end tests"
export KUBECTL_BACKUP_E2E_ENV="$RUN/env.json"
export PATH="$ROOT/target/debug:$PATH"
cargo test --workspace --locked --no-fail-fast "$@"
