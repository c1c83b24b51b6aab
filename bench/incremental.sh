#!/usr/bin/env bash
# Incremental benchmark (issue 16): what a second backup costs when little changed, with the
# content-addressed storage of `kubectl backup create --incremental`, in one run against one private
# harness (real kube-apiserver, etcd, s3s-fs). Needs an engine with --incremental and its `-o json`
# report `status.incremental = {bytesUploaded, objectsStored, objectsReused, packsWritten}`: it stops
# at once with a message if `kubectl backup create --help` does not mention --incremental.
#
# (a) 20k objects (ConfigMaps and Secrets of 1 KiB over 200 namespaces). Per run (BENCH_RUNS, default
#     3), into a fresh location L: `kubectl backup create full-1 --incremental --location L -o json`,
#     then 1% of the objects change (bench-load --patch: `data.revision` of 100 ConfigMaps and their
#     100 Secrets; each run changes others), then `kubectl backup create full-2 --incremental ...`.
#     Prints bytes uploaded by the second / by the first (target <= 0.03) and wall time of the second /
#     of the first (target <= 0.5). Bytes uploaded are the engine's own `.status.incremental.
#     bytesUploaded`, cross-checked with the growth of L in s3s-fs's bucket (the sum of its
#     files' sizes, as stored). A plain (non-incremental) `create` of the same
#     objects is measured too, for reference. So are the floors, right after the second backup:
#     `raw-list` (every object, the first backup's floor) and `raw-list --metadata` (metadata
#     only, in the second backup's pages: what any client that reads the objects' versions
#     consistently, from etcd, must wait for on this server). Their ratio to the first backup
#     bounds what the second can reach.
# (b) One workspace namespace (bench-load's `ws-00`) of 1k objects: one plain full backup
#     (`kubectl backup create ws-plain --include-namespaces ws-00`) into its own location, then
#     BENCH_WS_BACKUPS (default 100) backups `kubectl backup create ws-N --incremental
#     --include-namespaces ws-00` into another, each after changing 1% (10 objects). Prints the
#     incremental location's total storage / the plain backup's storage (sum of file sizes; target <= 5).
# Results go to target/bench/incremental-<time>/ (results.tsv: times; incremental.tsv and
# workspace.tsv: bytes).
#
#   bench/incremental.sh
#   BENCH_SIZE=20000 BENCH_RUNS=3 BENCH_WS_SIZE=1000 BENCH_WS_BACKUPS=100 bench/incremental.sh  # the defaults
#   BENCH_SIZE=5000 BENCH_RUNS=1 BENCH_WS_BACKUPS=10 bench/incremental.sh                       # a quick check
#   BENCH_KEEP=1 (keep the servers' data), BENCH_NICE=-10 (servers and measured commands at nice -10)
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

RUNS=${BENCH_RUNS:-3}
SIZE=${BENCH_SIZE:-20000}
NAMESPACES=${BENCH_NAMESPACES:-200}
WS_SIZE=${BENCH_WS_SIZE:-1000}
WS_BACKUPS=${BENCH_WS_BACKUPS:-100}
BYTES=${BENCH_BYTES:-1024}
EVERY=100 # one object pair in 100 changes per round: 1%
WS=ws-00  # bench-load's name for the one namespace of prefix ws

trap bench_cleanup EXIT
trap 'exit 130' INT TERM

bench_prepare
if ! "$RELEASE/kubectl-backup" create --help | grep -q -- '--incremental'; then
  log "kubectl backup create --help does not mention --incremental: this engine has no incremental storage yet;"
  log "run this benchmark on an engine that has it (issue 16)"
  exit 2
fi
bench_begin incremental
STAMP=$(date +%s)

# stored_bytes PREFIX: bytes of the objects under s3://backups/PREFIX, as s3s-fs stores them (the
# sum of its files' sizes; 0 when nothing is). Not `du -sb`, which also counts the 4 KiB of every
# directory s3s-fs makes for a key prefix: an object store bills objects, not directories.
stored_bytes() {
  if [ -d "$S3_ROOT/$1" ]; then find "$S3_ROOT/$1" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'; else echo 0; fi
}

# incremental FILE FIELD: a field of the `-o json` output's status.incremental; fails if it is missing.
incremental() {
  jq -er ".status.incremental.$2" "$1" ||
    { log "$1 has no .status.incremental.$2: the engine's -o json does not report incremental storage"; exit 1; }
}

# (a) A second backup after 1% changed.
load_objects inc "$NAMESPACES" "$SIZE" "$BYTES"
warm_up "$SIZE" "s3://backups/warmup-$STAMP"
printf 'run\tfirst_bytes_uploaded\tsecond_bytes_uploaded\tfirst_dir_growth\tsecond_dir_growth\tsecond_objects_stored\tsecond_objects_reused\tsecond_packs_written\tplain_dir_bytes\n' \
  >"$OUT/incremental.tsv"
for run in $(seq 1 "$RUNS"); do
  log "(a) run $run/$RUNS"
  prefix="inc-$STAMP-$run"
  measure "$RESULTS" "$SIZE" plain-create "$run" "$OUT/logs/plain-$run.json" -- \
    kubectl backup create plain --location "s3://backups/plain-$STAMP-$run" -o json
  check_backup "$OUT/logs/plain-$run.json" >/dev/null
  plain=$(stored_bytes "plain-$STAMP-$run")

  d0=$(stored_bytes "$prefix")
  measure "$RESULTS" "$SIZE" incremental-first "$run" "$OUT/logs/first-$run.json" -- \
    kubectl backup create full-1 --incremental --location "s3://backups/$prefix" -o json
  check_backup "$OUT/logs/first-$run.json" >/dev/null
  b1=$(incremental "$OUT/logs/first-$run.json" bytesUploaded)
  d1=$(stored_bytes "$prefix")

  change inc "$NAMESPACES" "$SIZE" "$run"
  measure "$RESULTS" "$SIZE" incremental-second "$run" "$OUT/logs/second-$run.json" -- \
    kubectl backup create full-2 --incremental --location "s3://backups/$prefix" -o json
  check_backup "$OUT/logs/second-$run.json" >/dev/null
  b2=$(incremental "$OUT/logs/second-$run.json" bytesUploaded)
  d2=$(stored_bytes "$prefix")
  measure "$RESULTS" "$SIZE" raw-list "$run" "$OUT/logs/raw-list-$run.txt" -- "$RELEASE/raw-list"
  measure "$RESULTS" "$SIZE" raw-list-metadata "$run" "$OUT/logs/raw-list-metadata-$run.txt" -- \
    "$RELEASE/raw-list" --metadata
  stored=$(incremental "$OUT/logs/second-$run.json" objectsStored)
  reused=$(incremental "$OUT/logs/second-$run.json" objectsReused)
  packs=$(incremental "$OUT/logs/second-$run.json" packsWritten)
  log "run $run: uploaded $b1 then $b2 bytes (directory +$((d1 - d0)) then +$((d2 - d1))); second: $stored stored, $reused reused, $packs packs; plain backup $plain bytes"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$b1" "$b2" "$((d1 - d0))" "$((d2 - d1))" \
    "$stored" "$reused" "$packs" "$plain" >>"$OUT/incremental.tsv"
done

# (b) 100 continuous backups of a 1k-object workspace with 1% churn each.
log "(b) workspace $WS: $WS_SIZE objects, $WS_BACKUPS incremental backups"
load_objects ws 1 "$WS_SIZE" "$BYTES"
measure "$RESULTS" "$WS_SIZE" workspace-plain 1 "$OUT/logs/ws-plain.json" -- \
  kubectl backup create ws-plain --include-namespaces "$WS" --location "s3://backups/ws-plain-$STAMP" -o json
check_backup "$OUT/logs/ws-plain.json" >/dev/null
ws_plain=$(stored_bytes "ws-plain-$STAMP")
printf 'backup\tbytes_uploaded\tobjects_stored\tobjects_reused\tdir_bytes_after\tplain_dir_bytes\n' >"$OUT/workspace.tsv"
t0=$(date +%s)
for n in $(seq 1 "$WS_BACKUPS"); do
  change ws 1 "$WS_SIZE" "$n"
  f="$OUT/logs/ws-$n.json"
  measure "$RESULTS" "$WS_SIZE" workspace-incremental "$n" "$f" -- \
    kubectl backup create "ws-$n" --incremental --include-namespaces "$WS" --location "s3://backups/ws-$STAMP" -o json
  check_backup "$f" >/dev/null
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "ws-$n" "$(incremental "$f" bytesUploaded)" "$(incremental "$f" objectsStored)" \
    "$(incremental "$f" objectsReused)" "$(stored_bytes "ws-$STAMP")" "$ws_plain" >>"$OUT/workspace.tsv"
done
ws_total=$(stored_bytes "ws-$STAMP")
log "(b) $WS_BACKUPS backups in $(($(date +%s) - t0)) s: $ws_total bytes stored; one plain full backup $ws_plain bytes"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt" >&2

{
  echo "## Incremental benchmark ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  sed 's/^/    /' "$OUT/machine.txt"
  echo
  echo "Objects (raw LIST / in the backup), (a) over $NAMESPACES namespaces; (b) namespace $WS of $WS_SIZE:"
  sed 's/^/    /' "$OUT/sizes.tsv"
  echo
  echo "Loading (bench-load, not measured: prefix, namespaces, from, to, seconds, objects/s):"
  sed 's/^/    /' "$OUT/load.tsv"
  echo
  python3 "$ROOT/bench/summarize.py" "$RESULTS" \
    "(a) second incremental backup / first, after 1% changed (target <= 0.5)=incremental-second/incremental-first@$SIZE" \
    "(a) first incremental backup / plain create=incremental-first/plain-create@$SIZE" \
    "(a) floor of the second: raw LIST of metadata only / first incremental backup=raw-list-metadata/incremental-first@$SIZE" \
    "(a) second incremental backup / raw LIST of metadata only=incremental-second/raw-list-metadata@$SIZE" \
    "(a) raw LIST of metadata only / raw LIST of every object=raw-list-metadata/raw-list@$SIZE"
  echo
  echo "(a) bytes, $SIZE objects, 1% changed between the two backups:"
  echo
  python3 "$ROOT/bench/summarize.py" --columns "$OUT/incremental.tsv" \
    "(a) bytes uploaded by the second / by the first, as the engine reports them (target <= 0.03)=second_bytes_uploaded/first_bytes_uploaded" \
    "(a) the same from the bucket directory's growth (sum of file sizes)=second_dir_growth/first_dir_growth" \
    "(a) first incremental backup's stored bytes / a plain backup's=first_dir_growth/plain_dir_bytes"
  echo
  echo "(b) $WS_BACKUPS incremental backups of namespace $WS ($WS_SIZE objects, 1% changed before each):"
  echo
  awk -F'\t' -v total="$ws_total" -v plain="$ws_plain" -v n="$WS_BACKUPS" 'NR > 1 { up += $2 } END {
    printf "- (b) total storage of %d incremental backups / one plain full backup (target <= 5): %d / %d bytes = **%.2f×**\n", n, total, plain, total / plain
    printf "- (b) bytes uploaded by the %d backups, as the engine reports them: %d (%.2f× the plain backup)\n", n, up, up / plain
  }' "$OUT/workspace.tsv"
} | tee "$OUT/summary.md"
log "results in $OUT"
