#!/usr/bin/env bash
# Backup benchmark (issue 2 §7; the encrypted variant: issue 13): `kubectl backup create` to S3 against
#   (a) the floor: a raw paged LIST (limit=500) of the same resource types (target/release/raw-list),
#       with the plugin's default parallelism (16 LISTs at once) and sequentially;
#   (b) the loop users script: `kubectl get <resource> -A -o json` for every listable resource type.
# Wall time and peak RSS, median of BENCH_RUNS runs (default 5) at 5k, 10k and 20k objects (ConfigMaps
# and Secrets over 50 namespaces), all in one run against one private harness (real kube-apiserver,
# etcd, s3s-fs). Results (per run and summary) go to target/bench/backup-<time>/. bench/scale.sh
# measures 100k objects over 200 namespaces with the same loader and floor.
#
#   bench/backup.sh                      # everything: install, build, load, measure, summarize
#   BENCH_RUNS=5 bench/backup.sh         # more runs per variant
#   BENCH_SIZES="20000" bench/backup.sh  # only some sizes (total ConfigMaps + Secrets, even numbers)
#   BENCH_NAMESPACES=200 bench/backup.sh # spread the objects over more namespaces (default 50)
#   BENCH_KEEP=1 bench/backup.sh         # keep the servers' data and logs
#   BENCH_NICE=-10 bench/backup.sh       # servers and measured commands at nice -10 (root), to be
#                                        # less disturbed by other work on a shared machine
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

RUNS=${BENCH_RUNS:-5}
SIZES=${BENCH_SIZES:-"5000 10000 20000"}
NAMESPACES=${BENCH_NAMESPACES:-50}
BYTES=${BENCH_BYTES:-1024}
LOOP='kubectl api-resources --verbs=list -o name | while read -r r; do kubectl get "$r" -A -o json >/dev/null; done'

trap bench_cleanup EXIT
trap 'exit 130' INT TERM

bench_prepare
bench_begin backup
LOCATION="s3://backups/bench-$(date +%s)"
last_size=${SIZES##* }
# The encrypted variant's recipient: a key made by the real age-keygen (tests/env/install.sh).
age-keygen -o "$RUN/bench.key" 2>/dev/null
RECIPIENT=$(sed -n 's/^# public key: //p' "$RUN/bench.key")

first=1
for size in $SIZES; do
  load_objects bench "$NAMESPACES" "$size" "$BYTES"
  # What the floor lists = what the backup holds, plus the cluster's own objects (RBAC, token Secrets, ...).
  warm_up "$size" "$LOCATION"
  if [ $first = 1 ]; then
    bash -c "$LOOP" >/dev/null 2>&1 # fills kubectl's discovery cache, as a user's would be
    first=0
  fi
  for run in $(seq 1 "$RUNS"); do
    log "size $size, run $run/$RUNS"
    measure "$RESULTS" "$size" raw-list-c16 "$run" "$OUT/logs/raw16-$size-$run.log" -- \
      "$RELEASE/raw-list" --concurrency 16
    measure "$RESULTS" "$size" raw-list-c1 "$run" "$OUT/logs/raw1-$size-$run.log" -- \
      "$RELEASE/raw-list" --concurrency 1
    # Not a baseline: the floor plus decoding every page into DynamicObjects as the plugin does, to
    # split the plugin's extra time into decoding and the rest (serialize, tar, zstd, SHA-256, upload).
    measure "$RESULTS" "$size" raw-list-c16-decode "$run" "$OUT/logs/rawdec-$size-$run.log" -- \
      "$RELEASE/raw-list" --concurrency 16 --decode
    measure "$RESULTS" "$size" kubectl-backup "$run" "$OUT/logs/backup-$size-$run.json" -- \
      kubectl backup create "b-$size-$run" --location "$LOCATION" -o json
    check_backup "$OUT/logs/backup-$size-$run.json" >/dev/null
    if [ "$size" = "$last_size" ]; then
      measure "$RESULTS" "$size" kubectl-backup-qps100 "$run" "$OUT/logs/backup-qps-$size-$run.json" -- \
        kubectl backup create "q-$size-$run" --location "$LOCATION" -o json --qps 100 --burst 200
      check_backup "$OUT/logs/backup-qps-$size-$run.json" >/dev/null
      # The same backup encrypted with age (issue 13): streaming, in the compressor's thread.
      measure "$RESULTS" "$size" kubectl-backup-encrypted "$run" "$OUT/logs/backup-enc-$size-$run.json" -- \
        kubectl backup create "e-$size-$run" --location "$LOCATION" -o json --encrypt-to "$RECIPIENT"
      check_backup "$OUT/logs/backup-enc-$size-$run.json" >/dev/null
      jq -e '.status.archive.encryption.algorithm == "age"' "$OUT/logs/backup-enc-$size-$run.json" >/dev/null
    fi
    measure "$RESULTS" "$size" kubectl-get-loop "$run" "$OUT/logs/loop-$size-$run.log" -- bash -c "$LOOP"
  done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt" >&2

{
  echo "## Backup benchmark ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  sed 's/^/    /' "$OUT/machine.txt"
  echo
  echo "Objects per size (raw LIST / in the backup), over $NAMESPACES namespaces:"
  sed 's/^/    /' "$OUT/sizes.tsv"
  echo
  python3 "$ROOT/bench/summarize.py" "$RESULTS" \
    "kubectl backup create / raw LIST, 16 parallel (target <= 1.3)=kubectl-backup/raw-list-c16@$last_size" \
    "kubectl backup create / raw LIST, sequential=kubectl-backup/raw-list-c1@$last_size" \
    "kubectl get loop / kubectl backup create (target >= 5)=kubectl-get-loop/kubectl-backup@$last_size" \
    "kubectl backup create --qps 100 / default=kubectl-backup-qps100/kubectl-backup@$last_size" \
    "kubectl backup create --encrypt-to / unencrypted (target <= 1.1)=kubectl-backup-encrypted/kubectl-backup@$last_size" \
    "rss:kubectl backup create peak RSS (target < 150 MiB, flat)=kubectl-backup@${SIZES%% *}/$last_size"
} | tee "$OUT/summary.md"
log "results in $OUT"
