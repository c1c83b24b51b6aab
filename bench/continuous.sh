#!/usr/bin/env bash
# Continuous backups from the in-cluster controller's watches (issue 16): what the second backup of a
# workspace costs after 1% of its objects changed, when the controller reads only what its watches
# saw change, against the same controller listing (`--continuous-list-every=0s`, what
# `kubectl backup create --incremental` does), in one run against one private harness (real
# kube-apiserver, etcd, s3s-fs) with the release `backup-webhook` run as a local process (the
# admin's kubeconfig; its RBAC is not what is measured here, tests/tests/node.rs runs it as a Pod).
#
# One workspace namespace (bench-load's `ws-00`) of BENCH_SIZE objects (default 20000: ConfigMaps
# of 1 KiB and Secrets). Per run (BENCH_RUNS, default 3) and per mode (watch: the default
# --continuous-list-every=1h; list: 0s), into a fresh location: the controller is started, one
# object is touched (its first continuous backup, which lists and stores everything), then 1% of
# the objects change (bench-load --patch) and the controller takes its second backup. In the watch
# mode the controller is then restarted: once it has compared the workspace with its last backup,
# 1% change again, and its first backup after the restart is measured (before the controller
# compared, that backup listed every type, as the list mode's second does). Each backup's
# time is the engine's own (status.timing: start to commit). Also measured after each second
# backup: `raw-list --metadata --namespace ws-00`, the least a backup that asks the API server which
# objects changed must wait for. Prints second / first for both modes (target <= 0.5) and the
# second's bytes uploaded / the first's (target <= 0.03).
# Results go to target/bench/continuous-<time>/. The controller's rows carry its own times only (no
# peak RSS or CPU columns: it is a long-running process, not a command).
#
#   bench/continuous.sh
#   BENCH_SIZE=20000 BENCH_RUNS=3 bench/continuous.sh   # the defaults
#   BENCH_SIZE=2000 BENCH_RUNS=1 bench/continuous.sh    # a quick check
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

RUNS=${BENCH_RUNS:-3}
SIZE=${BENCH_SIZE:-20000}
BYTES=${BENCH_BYTES:-1024}
EVERY=100 # one object pair in 100 changes per round: 1%
WS=ws-00

trap bench_cleanup EXIT
trap 'exit 130' INT TERM

bench_prepare
(cd "$ROOT" && cargo build --release --locked -p backup-webhook)
bench_begin continuous
STAMP=$(date +%s)

# backups LOCATION: the location's continuous backups of $WS, oldest first, as JSON lines.
backups() {
  kubectl-backup list --location "$1" -o json |
    jq -c --arg ws "$WS" '.items | map(select(.spec.schedule == "continuous" and .spec.includedNamespaces == [$ws]))
      | sort_by(.metadata.creationTimestamp) | .[]'
}

# wait_backups LOCATION N: waits (up to 300 s) until the location holds N completed continuous backups.
wait_backups() {
  for _ in $(seq 1 600); do
    [ "$(backups "$1" | jq -s 'map(select(.status.phase == "Completed")) | length')" -ge "$2" ] && return 0
    sleep 0.5
  done
  log "no $2 continuous backups in $1 after 300 s"; tail -n 30 "$WEBHOOK_LOG" >&2; exit 1
}

# record BACKUP_JSON VARIANT RUN: one results row with the backup's own time (start to commit).
record() {
  local secs
  secs=$(jq -r '[.status.startTimestamp, .status.completionTimestamp]
    | map(sub("(?<s>\\.[0-9]+)?Z$"; "Z") as $z | ($z | fromdateiso8601) + ((capture("(?<f>\\.[0-9]+)Z$").f // "0") | tonumber))
    | .[1] - .[0]' <<<"$1")
  printf '%s\t%s\t%s\t%.3f\t0\t0\t0\t0\t%s\n' "$SIZE" "$2" "$3" "$secs" "$(cut -d' ' -f1 /proc/loadavg)" >>"$RESULTS"
  log "  $2 run $3: $secs s ($(jq -c '.status.incremental | {bytesUploaded, objectsNotRead, listsSkipped}' <<<"$1"))"
}

load_objects ws 1 "$SIZE" "$BYTES"
kubectl create namespace bench-webhook >/dev/null # the controller's own namespace (its signing key)
printf 'run\tmode\tfirst_bytes_uploaded\tsecond_bytes_uploaded\tsecond_lists_skipped\tsecond_objects_not_read\n' >"$OUT/bytes.tsv"
round=0
for run in $(seq 1 "$RUNS"); do
  for mode in watch list; do
    every=1h
    [ "$mode" = list ] && every=0s
    location="s3://backups/cont-$STAMP-$run-$mode"
    start_controller "$OUT/logs/webhook-$run-$mode.log" "$location" "every watch has listed" \
      --continuous-list-every "$every"
    log "run $run, $mode (--continuous-list-every=$every): the controller is watching"
    kubectl -n "$WS" annotate configmap cm-00000 "bench/touched=$STAMP-$run-$mode" --overwrite >/dev/null
    wait_backups "$location" 1
    round=$((round + 1))
    change ws 1 "$SIZE" "$round"
    wait_backups "$location" 2
    mapfile -t made < <(backups "$location")
    record "${made[0]}" "continuous-first-$mode" "$run"
    record "${made[1]}" "continuous-second-$mode" "$run"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$mode" "$(jq .status.incremental.bytesUploaded <<<"${made[0]}")" \
      "$(jq .status.incremental.bytesUploaded <<<"${made[1]}")" "$(jq '.status.incremental.listsSkipped // 0' <<<"${made[1]}")" \
      "$(jq .status.incremental.objectsNotRead <<<"${made[1]}")" >>"$OUT/bytes.tsv"
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    if [ "$mode" = watch ]; then
      # A restarted controller compares the workspace with its last backup, then continues it.
      start_controller "$OUT/logs/webhook-$run-$mode-restarted.log" "$location" \
        "a workspace is as its last continuous backup recorded it" --continuous-list-every "$every"
      log "run $run, $mode: the restarted controller compared the workspace with its last backup"
      round=$((round + 1))
      change ws 1 "$SIZE" "$round"
      wait_backups "$location" 3
      mapfile -t made < <(backups "$location")
      record "${made[2]}" "continuous-after-restart-$mode" "$run"
      kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    fi
    measure "$RESULTS" "$SIZE" raw-list-metadata-ws "$run-$mode" "$OUT/logs/raw-list-metadata-$run-$mode.txt" -- \
      "$RELEASE/raw-list" --metadata --namespace "$WS"
  done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt" >&2

{
  echo "## Continuous backups from the controller's watches ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  sed 's/^/    /' "$OUT/machine.txt"
  echo
  echo "Namespace $WS: $SIZE objects; 1% changed between the first and the second continuous backup."
  echo
  python3 "$ROOT/bench/summarize.py" "$RESULTS" \
    "second / first continuous backup, changes from the watches (target <= 0.5)=continuous-second-watch/continuous-first-watch@$SIZE" \
    "second / first continuous backup, listing (--continuous-list-every=0s)=continuous-second-list/continuous-first-list@$SIZE" \
    "second from the watches / second listing=continuous-second-watch/continuous-second-list@$SIZE" \
    "first after a restart of the controller / first (it continues the last, as the second does)=continuous-after-restart-watch/continuous-first-watch@$SIZE" \
    "raw LIST of the namespace's metadata / first continuous backup (the floor of a listing backup)=raw-list-metadata-ws/continuous-first-list@$SIZE"
  echo
  awk -F'\t' 'NR > 1 { printf "- run %s, %s: bytes uploaded by the second / the first: %d / %d = %.4f; LISTs skipped %s, objects not read %s\n", $1, $2, $4, $3, $4 / $3, $5, $6 }' "$OUT/bytes.tsv"
} | tee "$OUT/summary.md"
log "results in $OUT"
