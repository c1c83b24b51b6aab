#!/usr/bin/env bash
# Continuous backups at the in-cluster controller's start (`--continuous-parallel`): what capping the
# backups that run at once costs in time and saves in memory when the controller starts in a cluster
# where many workspaces have no continuous backup yet (a first install), in one run against one
# private harness (real kube-apiserver, etcd, s3s-fs) with the release `backup-webhook` run as a local
# process (the admin's kubeconfig; its RBAC is not what is measured here, tests/tests/node.rs runs it
# as a Pod).
#
# BENCH_NAMESPACES (default 100) workspace namespaces (bench-load's `ws-00`, `ws-01`, ...) holding
# BENCH_SIZE objects in all (default 20000: 200 each, ConfigMaps of 1 KiB and Secrets). Once every
# watch has listed, the controller marks every workspace that holds objects and has no continuous
# backup (one log line each: `a workspace has no continuous backup: backing it up namespace=NAME`).
# Per run (BENCH_RUNS, default 2) and per mode (capped: `--continuous-parallel=4`, the default;
# uncapped: `--continuous-parallel=1000`, no cap, the behaviour before the flag), the controller is
# started into a fresh location and measured:
#   - time: from its log line `every watch has listed` (the log's own timestamp) until every loaded
#     namespace has one finished continuous backup there (the latest of each namespace's first
#     completionTimestamp; the location is polled with `kubectl-backup list -o json` until then);
#   - how many of those first backups Completed (the others PartiallyFailed or Failed: with no cap,
#     100 backups at once, most of them had API groups whose discovery took longer than the 5 s
#     --discovery-timeout), one row per run and mode in phases.tsv;
#   - peak RSS: the controller's VmHWM (/proc/PID/status) read after every backup is done, just
#     before it is stopped (the chart's memory limit for the controller is 512Mi);
#   - the log must name every loaded namespace in a `has no continuous backup` line (or `has no
#     backup: backing it up`) (else the script fails).
# Rows `startup-capped` and `startup-uncapped`: wall_s is that time, peak_rss_kib the VmHWM,
# client_cpu_s the controller's CPU from its start to the end, apiserver_cpu_s and etcd_cpu_s theirs
# over the same span. As a reference for the same work done by one command, once per run
# (`plugin-create-all`, through lib.sh's `measure`): `kubectl-backup create --incremental
# --include-namespaces 'ws-*'` into a fresh location. Prints capped / uncapped time, capped /
# uncapped peak RSS, and capped time / plugin-create-all time.
# Results go to target/bench/startup-<time>/.
#
#   bench/startup.sh
#   BENCH_NAMESPACES=100 BENCH_SIZE=20000 BENCH_RUNS=2 bench/startup.sh   # the defaults
#   BENCH_NAMESPACES=10 BENCH_SIZE=2000 BENCH_RUNS=1 bench/startup.sh     # a quick check
#   BENCH_NO_BUILD=1 bench/startup.sh   # no installs or builds: the release binaries (backup-webhook,
#                                       # kubectl-backup, harness, bench-load) are already built
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

RUNS=${BENCH_RUNS:-2}
SIZE=${BENCH_SIZE:-20000}
NAMESPACES=${BENCH_NAMESPACES:-100}
BYTES=${BENCH_BYTES:-1024}
PREFIX=ws # bench-load's namespaces: ws-00, ws-01, ...

trap bench_cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "${BENCH_NO_BUILD:-}" ]; then
  bench_prepare
  (cd "$ROOT" && cargo build --release --locked -p backup-webhook)
else
  log "BENCH_NO_BUILD: using the release binaries already built in $RELEASE"
fi
bench_begin startup
STAMP=$(date +%s)

# done_at LOCATION: prints "N T C": how many loaded namespaces have a finished continuous backup in
# the location (Completed, PartiallyFailed or Failed), the latest of their first completion times
# (seconds since the epoch), and how many of those first backups Completed.
done_at() {
  kubectl-backup list --location "$1" -o json 2>/dev/null |
    jq -r --arg p "$PREFIX-" '.items
      | map(select(.spec.schedule == "continuous" and .status.completionTimestamp != null
          and (.status.phase == "Completed" or .status.phase == "PartiallyFailed" or .status.phase == "Failed")
          and ((.spec.includedNamespaces[0] // "") | startswith($p))))
      | map({ns: .spec.includedNamespaces[0], phase: .status.phase, t: (.status.completionTimestamp
          | sub("(?<s>\\.[0-9]+)?Z$"; "Z") as $z | ($z | fromdateiso8601) + ((capture("(?<f>\\.[0-9]+)Z$").f // "0") | tonumber))})
      | group_by(.ns) | map(min_by(.t))
      | "\(length) \(map(.t) | max // 0) \(map(select(.phase == "Completed")) | length)"'
}

# wait_done LOCATION: waits (up to 300 s) until every loaded namespace has a finished continuous
# backup in the location; prints "T C" (done_at's).
wait_done() {
  local n t c
  for _ in $(seq 1 150); do
    read -r n t c < <(done_at "$1")
    if [ "${n:-0}" -ge "$NAMESPACES" ]; then echo "$t $c"; return 0; fi
    sleep 2
  done
  log "only ${n:-0} of $NAMESPACES namespaces have a continuous backup in $1 after 300 s"; tail -n 30 "$WEBHOOK_LOG" >&2; exit 1
}

# log_time LOG LINE: the timestamp (seconds since the epoch) of LINE's first occurrence in LOG.
log_time() {
  date -d "$(grep -m1 "$2" "$1" | awk '{ print $1 }')" +%s.%N
}

load_objects "$PREFIX" "$NAMESPACES" "$SIZE" "$BYTES"
wait_settled "$PREFIX" "$NAMESPACES"
kubectl create namespace bench-webhook >/dev/null # the controller's own namespace (its signing key)
printf 'run\tmode\tcontinuous_parallel\tnamespaces\tfirst_backup_completed\n' >"$OUT/phases.tsv"
for run in $(seq 1 "$RUNS"); do
  for mode in capped uncapped; do
    parallel=4
    [ "$mode" = uncapped ] && parallel=1000
    location="s3://backups/startup-$STAMP-$run-$mode"
    load=$(cut -d' ' -f1 /proc/loadavg)
    a0=$(cpu_seconds "$APISERVER_PID")
    e0=$(cpu_seconds "$ETCD_PID")
    start_controller "$OUT/logs/webhook-$run-$mode.log" "$location" "every watch has listed" \
      --continuous-parallel "$parallel"
    log "run $run, $mode (--continuous-parallel=$parallel): every watch has listed"
    listed=$(log_time "$WEBHOOK_LOG" "every watch has listed")
    read -r done_t completed < <(wait_done "$location")
    [ -n "${completed:-}" ] || exit 1
    hwm=$(awk '/^VmHWM:/ { print $2 }' /proc/"$pid"/status)
    cpu=$(cpu_seconds "$pid")
    a1=$(cpu_seconds "$APISERVER_PID")
    e1=$(cpu_seconds "$ETCD_PID")
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    marked=$({ grep -E 'has no (continuous )?backup: backing it up' "$WEBHOOK_LOG" || true; } | { grep -o "namespace=$PREFIX-[0-9]*" || true; } |
      sort -u | wc -l)
    if [ "$marked" -lt "$NAMESPACES" ]; then
      log "run $run, $mode: only $marked of $NAMESPACES namespaces have a \"has no continuous backup\" line in $WEBHOOK_LOG"
      exit 1
    fi
    printf '%s\t%s\t%s\t%s\t%s\n' "$run" "$mode" "$parallel" "$NAMESPACES" "$completed" >>"$OUT/phases.tsv"
    log "run $run, $mode: the first continuous backup of $completed of the $NAMESPACES namespaces Completed (the others PartiallyFailed or Failed)"
    awk -v OFS='\t' -v size="$SIZE" -v variant="startup-$mode" -v run="$run" -v t0="$listed" -v t1="$done_t" \
      -v rss="$hwm" -v cpu="$cpu" -v a0="$a0" -v a1="$a1" -v e0="$e0" -v e1="$e1" -v load="$load" 'BEGIN {
        printf "%s\t%s\t%s\t%.3f\t%d\t%.2f\t%.2f\t%.2f\t%s\n", size, variant, run, t1 - t0, rss, cpu, a1 - a0, e1 - e0, load
        printf "  %-24s run %s: %7.2f s  peak RSS %6.1f MiB  (controller CPU %.2f s, apiserver %.2f s, etcd %.2f s, load %s)\n", \
          variant, run, t1 - t0, rss / 1024, cpu, a1 - a0, e1 - e0, load > "/dev/stderr"
      }' >>"$RESULTS"
  done
  measure "$RESULTS" "$SIZE" plugin-create-all "$run" "$OUT/logs/plugin-create-all-$run.json" -- \
    "$RELEASE/kubectl-backup" create "all-$run" --incremental --include-namespaces "$PREFIX-*" \
    --location "s3://backups/startup-$STAMP-$run-plugin" -o json
  check_backup "$OUT/logs/plugin-create-all-$run.json" >/dev/null
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt" >&2

{
  echo "## Continuous backups at the controller's start ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  sed 's/^/    /' "$OUT/machine.txt"
  echo
  echo "$NAMESPACES workspace namespaces ($PREFIX-*), $SIZE objects in all, none with a continuous backup at the start."
  echo
  python3 "$ROOT/bench/summarize.py" "$RESULTS" \
    "capped (--continuous-parallel=4) / uncapped (1000), time to back up every workspace=startup-capped/startup-uncapped@$SIZE" \
    "capped / one kubectl-backup create --incremental of all of them=startup-capped/plugin-create-all@$SIZE" \
    "uncapped / one kubectl-backup create --incremental of all of them=startup-uncapped/plugin-create-all@$SIZE" \
    "rssmax:controller's peak RSS, capped=startup-capped@$SIZE" \
    "rssmax:controller's peak RSS, uncapped=startup-uncapped@$SIZE"
  echo
  echo "Namespaces whose first continuous backup Completed (the others PartiallyFailed or Failed):"
  echo
  python3 "$ROOT/bench/summarize.py" --columns "$OUT/phases.tsv"
  echo
  # summarize.py has no ratio of two variants' peak RSS: computed here from the rows' medians.
  python3 - "$RESULTS" "$SIZE" <<'EOF'
import statistics, sys
rss = {}
for line in open(sys.argv[1]):
    p = line.rstrip("\n").split("\t")
    if len(p) >= 9 and p[0] == sys.argv[2]:
        rss.setdefault(p[1], []).append(int(p[4]) / 1024)
c, u = rss.get("startup-capped"), rss.get("startup-uncapped")
if c and u:
    mc, mu = statistics.median(c), statistics.median(u)
    print(f"- controller's peak RSS, capped / uncapped: {mc:.1f} MiB / {mu:.1f} MiB = **{mc / mu:.2f}×**")
else:
    print("- controller's peak RSS, capped / uncapped: missing")
EOF
} | tee "$OUT/summary.md"
log "results in $OUT"
