#!/usr/bin/env bash
# Admission latency and throughput of backup-webhook over TLS, against a no-op rustls HTTPS server
# (tests/src/bin/noop-https.rs: same tokio + rustls + hyper stack, fixed answer) measured in the
# same run. Load from `hey` (Debian package), a fixture AdmissionReview for a namespace that has a
# backup (the most expensive answer: index lookup + JSON patch).
#
#   bench/webhook.sh            # prints p50/p99 at 500 req/s and max throughput, with ratios
# Env: BENCH_SECONDS (default 20), BENCH_BACKUPS (backups in the index, default 200)
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
trap bench_cleanup EXIT INT TERM
SECONDS_PER_RUN=${BENCH_SECONDS:-20}
BACKUPS=${BENCH_BACKUPS:-200}

bench_prepare
command -v hey >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hey >/dev/null; }
(cd "$ROOT" && cargo build --release --locked -p backup-webhook)
bench_run_dir webhook
start_harness "$RUN/env"

# An index with $BACKUPS committed backups (one namespace each), written by the real tool.
STORE="$RUN/store"
log "writing $BACKUPS backups to file://$STORE"
kubectl create namespace bench-ns >/dev/null
for i in $(seq 1 "$BACKUPS"); do
  kubectl-backup create "b-$i" -n bench-ns --location "file://$STORE" --include-resources configmaps >/dev/null
done

"$RELEASE/kubectl-backup" certs generate --dir "$RUN/tls" --host 127.0.0.1 >/dev/null
WPORT=$(free_port); NPORT=$(free_port)
"$RELEASE/backup-webhook" --listen "127.0.0.1:$WPORT" --tls-cert "$RUN/tls/tls.crt" --tls-key "$RUN/tls/tls.key" \
  --location "file://$STORE" --namespace bench-webhook --continuous=false --schedules=false --restore-worker=false \
  >"$RUN/webhook.log" 2>&1 &
HARNESS_PIDS+=("$!")
"$RELEASE/noop-https" --listen "127.0.0.1:$NPORT" --tls-cert "$RUN/tls/tls.crt" --tls-key "$RUN/tls/tls.key" >"$RUN/noop.log" 2>&1 &
HARNESS_PIDS+=("$!")
for _ in $(seq 1 100); do
  curl -sf --cacert "$RUN/tls/ca.crt" "https://127.0.0.1:$WPORT/readyz" >/dev/null && break
  sleep 0.2
done
curl -sf --cacert "$RUN/tls/ca.crt" "https://127.0.0.1:$WPORT/readyz" >/dev/null || { cat "$RUN/webhook.log"; exit 1; }

cat >"$RUN/review.json" <<'JSON'
{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"b2c3","kind":{"group":"","version":"v1","kind":"Namespace"},"resource":{"group":"","version":"v1","resource":"namespaces"},"name":"bench-ns","operation":"CREATE","userInfo":{"username":"admin"},"object":{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"bench-ns","labels":{"team":"a"}}}}}
JSON
# The webhook's answer really is a restore patch.
curl -sf --cacert "$RUN/tls/ca.crt" -H 'Content-Type: application/json' --data-binary @"$RUN/review.json" \
  "https://127.0.0.1:$WPORT/mutate" | grep -q '"patch"' || { log "the webhook did not answer with a patch"; exit 1; }

# hey: -c connections, -q QPS per connection; TLS verification is off in hey. hey sends the Host
# header, port included, as the TLS server name, which is not a valid SNI name for an IP URL
# (rustls rejects it): `-host localhost` makes both the Host header and the SNI name plain.
measure() { # NAME PORT ARGS...
  local name=$1 port=$2; shift 2
  hey -z "${SECONDS_PER_RUN}s" -m POST -T application/json -D "$RUN/review.json" -host localhost "$@" \
    "https://127.0.0.1:$port/mutate" >"$RUN/$name.txt"
  if grep -q 'Error distribution' "$RUN/$name.txt" || ! grep -q '\[200\]' "$RUN/$name.txt"; then
    cat "$RUN/$name.txt" >&2
    log "$name: requests failed"
    exit 1
  fi
}
pct() { grep -E "^ +$2% in" "$RUN/$1.txt" | awk '{print $3 * 1000}'; }   # ms
rps() { grep 'Requests/sec' "$RUN/$1.txt" | awk '{print $2}'; }
errors() { grep -A3 'Status code distribution' "$RUN/$1.txt" | grep -v '\[200\]' | grep -c '\[' || true; }

log "500 req/s for ${SECONDS_PER_RUN}s each (10 connections x 50 req/s)"
measure webhook-500 "$WPORT" -c 10 -q 50
measure noop-500 "$NPORT" -c 10 -q 50
log "max throughput for ${SECONDS_PER_RUN}s each (32 connections)"
measure webhook-max "$WPORT" -c 32
measure noop-max "$NPORT" -c 32

printf '\n%-34s %12s %12s %8s\n' "" "webhook" "no-op" "ratio"
for p in 50 90 99; do
  w=$(pct webhook-500 "$p"); n=$(pct noop-500 "$p")
  printf '%-34s %10.2fms %10.2fms %7.2fx\n' "latency p$p at 500 req/s" "$w" "$n" "$(awk -v a="$w" -v b="$n" 'BEGIN{print a/b}')"
done
w=$(rps webhook-500); n=$(rps noop-500)
printf '%-34s %12.0f %12.0f\n' "achieved req/s (target 500)" "$w" "$n"
w=$(rps webhook-max); n=$(rps noop-max)
printf '%-34s %12.0f %12.0f %7.2fx\n' "max throughput req/s" "$w" "$n" "$(awk -v a="$w" -v b="$n" 'BEGIN{print a/b}')"
printf '%-34s %12s %12s\n' "non-200 answers" "$(errors webhook-500)/$(errors webhook-max)" "$(errors noop-500)/$(errors noop-max)"
p99=$(pct webhook-500 99)
if awk -v p="$p99" 'BEGIN{exit !(p < 5)}'; then log "target p99 < 5 ms at 500 req/s: met ($p99 ms)"; else log "target p99 < 5 ms at 500 req/s: MISSED ($p99 ms)"; fi
log "index held $BACKUPS backups; raw hey output in $RUN/*.txt (kept with BENCH_KEEP=1)"
