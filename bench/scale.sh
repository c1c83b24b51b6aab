#!/usr/bin/env bash
# Scale benchmark (issue 16): `kubectl backup create` to S3 (s3s-fs) through the real kubectl at 5k and
# 100k objects (ConfigMaps and Secrets of 1 KiB over 200 namespaces) against a raw paged LIST
# (limit=500) of the same resource types with the plugin's default parallelism (target/release/
# raw-list --concurrency 16, the issue's baseline) and against the floor of listing, a raw client
# listing the way the plugin does (raw-list --per-namespace: a large resource's rest one namespace at
# a time after its first page, by the plugin's own rule) and that client asking for ConfigMaps and
# Secrets in protobuf as `create` does (raw-list --per-namespace --protobuf), and the floor of the
# same work: that client in JSON storing what it listed (raw-list --per-namespace --store: every page
# hashed, compressed at the archive's zstd level and uploaded to the same location as one object); `create
# --list-per-namespace never` (every page of one cluster-wide LIST) and `create --list-encoding json`
# (every page in JSON) beside them; in one run against one private harness (real
# kube-apiserver, etcd, s3s-fs). Wall time and the plugin's own peak RSS, median of BENCH_RUNS runs
# (default 3). Prints:
#   create / raw paged LIST at the largest size                 (target <= 1.2)
#   create / raw LIST listing the same way (the floor of listing)
#   create / raw LIST listing the same way in protobuf
#   create / raw LIST listing the same way and storing what it listed (the floor of the same work)
#   create --list-encoding json / raw LIST listing the same way, and create / create --list-encoding json
#   create --list-per-namespace never / raw paged LIST
#   create's peak RSS at the largest size / at the smallest     (target <= 1.2: flat)
#   create's absolute peak RSS at the largest size              (target < 64 MiB)
# Results (per run and summary) go to target/bench/scale-<time>/; the loader's time is in load.tsv and
# the summary. Loading is the slow part: bench-load creates one object per request, 32 in flight, and
# is bound by kube-apiserver + etcd on the same machine (on the 2-CPU VM, 2026-12-02: 5k in 13 s, the
# next 95k in 173 s at 549 objects/s, kube-apiserver ~1.2 CPUs, etcd ~0.4, bench-load ~0.2; about
# 3 minutes to load 100k, 4 minutes for the whole script with 3 runs once built).
#
#   bench/scale.sh                               # 5k and 100k, 3 runs each
#   BENCH_SIZES="5000 20000" BENCH_RUNS=1 bench/scale.sh   # a quick check
#   BENCH_NAMESPACES=200 (default), BENCH_BYTES=1024 (default), BENCH_KEEP=1 (keep the servers' data)
#   BENCH_NICE=-10 bench/scale.sh                # servers and measured commands at nice -10 (root)
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

RUNS=${BENCH_RUNS:-3}
SIZES=${BENCH_SIZES:-"5000 100000"}
NAMESPACES=${BENCH_NAMESPACES:-200}
BYTES=${BENCH_BYTES:-1024}

trap bench_cleanup EXIT
trap 'exit 130' INT TERM

bench_prepare
bench_begin scale
LOCATION="s3://backups/scale-$(date +%s)"
first_size=${SIZES%% *}
last_size=${SIZES##* }

for size in $SIZES; do
  load_objects bench "$NAMESPACES" "$size" "$BYTES"
  warm_up "$size" "$LOCATION"
  for run in $(seq 1 "$RUNS"); do
    log "size $size, run $run/$RUNS"
    measure "$RESULTS" "$size" raw-list-c16 "$run" "$OUT/logs/raw16-$size-$run.log" -- \
      "$RELEASE/raw-list" --concurrency 16
    measure "$RESULTS" "$size" raw-list-ns-c16 "$run" "$OUT/logs/rawns16-$size-$run.log" -- \
      "$RELEASE/raw-list" --concurrency 16 --per-namespace
    measure "$RESULTS" "$size" raw-list-ns-pb-c16 "$run" "$OUT/logs/rawnspb16-$size-$run.log" -- \
      "$RELEASE/raw-list" --concurrency 16 --per-namespace --protobuf
    measure "$RESULTS" "$size" raw-list-ns-store-c16 "$run" "$OUT/logs/rawnsstore16-$size-$run.log" -- \
      "$RELEASE/raw-list" --concurrency 16 --per-namespace --store "$LOCATION"
    measure "$RESULTS" "$size" kubectl-backup "$run" "$OUT/logs/backup-$size-$run.json" -- \
      kubectl backup create "b-$size-$run" --location "$LOCATION" -o json
    check_backup "$OUT/logs/backup-$size-$run.json" >/dev/null
    measure "$RESULTS" "$size" kubectl-backup-paged "$run" "$OUT/logs/paged-$size-$run.json" -- \
      kubectl backup create "p-$size-$run" --location "$LOCATION" --list-per-namespace never -o json
    check_backup "$OUT/logs/paged-$size-$run.json" >/dev/null
    measure "$RESULTS" "$size" kubectl-backup-json "$run" "$OUT/logs/json-$size-$run.json" -- \
      kubectl backup create "j-$size-$run" --location "$LOCATION" --list-encoding json -o json
    check_backup "$OUT/logs/json-$size-$run.json" >/dev/null
  done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt" >&2

{
  echo "## Scale benchmark ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  sed 's/^/    /' "$OUT/machine.txt"
  echo
  echo "Objects per size (raw LIST / in the backup), over $NAMESPACES namespaces:"
  sed 's/^/    /' "$OUT/sizes.tsv"
  echo
  echo "Loading (bench-load, not measured: prefix, namespaces, from, to, seconds, objects/s):"
  sed 's/^/    /' "$OUT/load.tsv"
  echo
  python3 "$ROOT/bench/summarize.py" "$RESULTS" \
    "kubectl backup create / raw paged LIST, 16 parallel (target <= 1.2)=kubectl-backup/raw-list-c16@$last_size" \
    "kubectl backup create / raw LIST listing the same way (the floor of listing), 16 parallel=kubectl-backup/raw-list-ns-c16@$last_size" \
    "kubectl backup create / raw LIST listing the same way in protobuf (the floor of that), 16 parallel=kubectl-backup/raw-list-ns-pb-c16@$last_size" \
    "kubectl backup create / raw LIST listing the same way and storing it (the floor of the same work), 16 parallel=kubectl-backup/raw-list-ns-store-c16@$last_size" \
    "kubectl backup create --list-encoding json / raw LIST listing the same way=kubectl-backup-json/raw-list-ns-c16@$last_size" \
    "kubectl backup create / kubectl backup create --list-encoding json=kubectl-backup/kubectl-backup-json@$last_size" \
    "kubectl backup create --list-per-namespace never / raw paged LIST=kubectl-backup-paged/raw-list-c16@$last_size" \
    "raw LIST listing the same way / raw paged LIST=raw-list-ns-c16/raw-list-c16@$last_size" \
    "rss:kubectl backup create peak RSS, largest / smallest size (target <= 1.2)=kubectl-backup@$first_size/$last_size" \
    "rssmax:kubectl backup create absolute peak RSS (target < 64 MiB)=kubectl-backup@$last_size"
} | tee "$OUT/summary.md"
log "results in $OUT"
