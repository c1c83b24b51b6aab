#!/usr/bin/env bash
# Serving certificate for backup-webhook: a new CA and a certificate for the webhook Service's DNS
# names (and any --host), written as ca.crt, tls.crt, tls.key. See certs/README.md.
#   certs/generate.sh --dir /tmp/webhook-tls --host 127.0.0.1            # a local webhook process
#   certs/generate.sh --dir ./tls --namespace kubectl-backup              # in-cluster
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v kubectl-backup >/dev/null; then exec kubectl-backup certs generate "$@"; fi
cargo build -q -p kubectl-backup
exec target/debug/kubectl-backup certs generate "$@"
