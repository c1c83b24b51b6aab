#!/usr/bin/env bash
# Restore benchmark (issues 3 and 16): `kubectl backup restore` of 5k objects (ConfigMaps and Secrets
# over 10 namespaces) into an empty cluster, against (a) the floor, target/release/raw-create: the
# same objects rendered from the backup's archive, POSTed as they are with the restore's default
# concurrency (Namespaces first, no rate limit, no checks), and (b) `kubectl create -f` of the same
# file, in the same run. Wall time and peak RSS, median of BENCH_RUNS runs (default 3) each. Results
# go to target/bench/restore-<time>/.
#
# One private harness is both source and target: the objects are loaded, backed up to S3 (s3s-fs),
# rendered, and their namespaces deleted; then each run restores them (kubectl backup restore with
# the default flags, raw-create, kubectl create -f, kubectl backup restore --qps 100 --burst 200, and
# kubectl backup restore --qps 100000 --burst 100000 --concurrency 64), deleting the namespaces after
# each variant (waiting until they are gone), so every variant starts from the same empty cluster.
#
#   bench/restore.sh
#   BENCH_RUNS=5 bench/restore.sh
#   BENCH_KEEP=1 bench/restore.sh   # keep the servers' data and logs
#   BENCH_NICE=-10 bench/restore.sh # servers and measured commands at nice -10 (root), to be less
#                                   # disturbed by other work on a shared machine
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

RUNS=${BENCH_RUNS:-3}
NAMESPACES=10
PER_NS=${BENCH_PER_NS:-250} # ConfigMaps (and as many Secrets) per namespace: 10 * 250 * 2 = 5000
BYTES=${BENCH_BYTES:-1024}
BACKUP=restore-source
LABEL=kubectl-backup.dev/restored-from

trap bench_cleanup EXIT
trap 'exit 130' INT TERM

bench_prepare
bench_begin restore
LOCATION="s3://backups/restore-bench-$(date +%s)"
SIZE=$((NAMESPACES * PER_NS * 2))

count_objects() {
  kubectl get configmaps,secrets -A -l bench=rbench -o name | wc -l
}

delete_namespaces() {
  kubectl delete namespaces -l bench=rbench --wait=true --timeout=600s >/dev/null
  for _ in $(seq 1 600); do
    [ -z "$(kubectl get namespaces -l bench=rbench -o name)" ] && break
    sleep 1
  done
  [ -z "$(kubectl get namespaces -l bench=rbench -o name)" ] || { log "namespaces not deleted in 10 minutes"; exit 1; }
  sleep 5 # let the controllers settle before the next measurement
}

load_objects rbench "$NAMESPACES" "$SIZE" "$BYTES"
kubectl backup create "$BACKUP" --location "$LOCATION" --include-namespaces 'rbench-*' \
  --include-resources configmaps,secrets -o json >"$OUT/backup.json"
jq -e '.status.phase == "Completed"' "$OUT/backup.json" >/dev/null

# The same objects for kubectl: every archived object the restore creates (the namespaces first), with
# the fields the server owns stripped and the label the restore adds, as one List.
kubectl backup download "$BACKUP" --location "$LOCATION" -f "$RUN/backup.tar.zst"
mkdir -p "$RUN/archive"
tar --zstd -xf "$RUN/backup.tar.zst" -C "$RUN/archive"
(
  cd "$RUN/archive"
  find resources -path '*/cluster/*.json' | sort
  find resources -name '*.json' -not -path '*/cluster/*' | sort
) | (cd "$RUN/archive" && xargs cat) | jq -c --arg key "$LABEL" --arg backup "$BACKUP" '
  select((.kind == "ConfigMap" and .metadata.name == "kube-root-ca.crt") | not)
  | select(.type != "kubernetes.io/service-account-token")
  | del(.status)
  | .metadata |= (del(.uid, .resourceVersion, .generation, .creationTimestamp, .deletionTimestamp,
      .deletionGracePeriodSeconds, .selfLink, .managedFields, .ownerReferences)
      | .labels = ((.labels // {}) + {($key): $backup}))' |
  jq -s '{apiVersion: "v1", kind: "List", items: .}' >"$RUN/objects.json"
N=$(jq '.items | length' "$RUN/objects.json")
log "rendered $N objects ($(jq '[.items[] | select(.kind == "Namespace")] | length' "$RUN/objects.json") namespaces) to one file of $(du -h "$RUN/objects.json" | cut -f1)"
printf '%s\tarchive_objects=%s\trendered=%s\n' "$SIZE" "$(jq '.status.progress.itemsBackedUp' "$OUT/backup.json")" "$N" \
  >"$OUT/sizes.tsv"
delete_namespaces
# The restore's default --concurrency, from its help (16 when this was written: plugin/src/args.rs).
CONCURRENCY=$(kubectl backup restore --help | awk '/^ *--concurrency / { f = 1 } f && /\[default: / { sub(/.*\[default: /, ""); sub(/\].*/, ""); print; exit }')
[ -n "$CONCURRENCY" ] || { log "no default --concurrency in kubectl backup restore --help"; exit 1; }
log "the floor POSTs with $CONCURRENCY requests in flight (the restore's default --concurrency)"

restore_run() { # restore_run VARIANT RUN [FLAGS...]
  local variant=$1 run=$2
  shift 2
  local logf="$OUT/logs/$variant-$run.log"
  measure "$RESULTS" "$SIZE" "$variant" "$run" "$logf" -- \
    kubectl backup restore "$BACKUP" --location "$LOCATION" "$@"
  grep -q "Created $N, updated 0, unchanged 0, skipped (exists) 0, skipped (policy) [0-9]*, failed 0" "$logf" ||
    { cat "$logf" >&2; log "the restore did not create exactly $N objects"; exit 1; }
}

for run in $(seq 1 "$RUNS"); do
  log "run $run/$RUNS"
  restore_run kubectl-backup-restore "$run"
  [ "$(count_objects)" = "$SIZE" ] || { log "expected $SIZE objects after the restore"; exit 1; }
  delete_namespaces

  measure "$RESULTS" "$SIZE" raw-create "$run" "$OUT/logs/raw-create-$run.log" -- \
    "$RELEASE/raw-create" --concurrency "$CONCURRENCY" "$RUN/objects.json"
  grep -q " created=$N " "$OUT/logs/raw-create-$run.log" || { log "raw-create did not create exactly $N objects"; exit 1; }
  [ "$(count_objects)" = "$SIZE" ] || { log "expected $SIZE objects after raw-create"; exit 1; }
  delete_namespaces

  measure "$RESULTS" "$SIZE" kubectl-create-f "$run" "$OUT/logs/kubectl-create-$run.log" -- \
    kubectl create -f "$RUN/objects.json"
  [ "$(grep -c ' created$' "$OUT/logs/kubectl-create-$run.log")" = "$N" ] || { log "kubectl created fewer than $N"; exit 1; }
  [ "$(count_objects)" = "$SIZE" ] || { log "expected $SIZE objects after kubectl create"; exit 1; }
  delete_namespaces

  # The conservative setting (the default before the figures below): 100 requests/s.
  restore_run kubectl-backup-restore-qps100 "$run" --qps 100 --burst 200
  [ "$(count_objects)" = "$SIZE" ] || { log "expected $SIZE objects after the restore"; exit 1; }
  delete_namespaces

  # No client-side rate limit at all and 64 requests in flight: what the server allows.
  restore_run kubectl-backup-restore-unlimited-c64 "$run" --qps 100000 --burst 100000 --concurrency 64
  [ "$(count_objects)" = "$SIZE" ] || { log "expected $SIZE objects after the restore"; exit 1; }
  delete_namespaces
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt" >&2

{
  echo "## Restore benchmark ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  sed 's/^/    /' "$OUT/machine.txt"
  echo
  echo "Objects (in the archive / created by each variant):"
  sed 's/^/    /' "$OUT/sizes.tsv"
  echo
  python3 "$ROOT/bench/summarize.py" "$RESULTS" \
    "kubectl backup restore / raw POST, $CONCURRENCY parallel (target <= 1.2)=kubectl-backup-restore/raw-create@$SIZE" \
    "kubectl create -f / raw POST=kubectl-create-f/raw-create@$SIZE" \
    "kubectl create -f / kubectl backup restore (target >= 3)=kubectl-create-f/kubectl-backup-restore@$SIZE" \
    "kubectl create -f / kubectl backup restore --qps 100=kubectl-create-f/kubectl-backup-restore-qps100@$SIZE" \
    "kubectl create -f / kubectl backup restore --qps 100000 --concurrency 64=kubectl-create-f/kubectl-backup-restore-unlimited-c64@$SIZE"
} | tee "$OUT/summary.md"
log "results in $OUT"
