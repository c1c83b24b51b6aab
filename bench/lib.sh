# shellcheck shell=bash
# Shared by the bench/*.sh scripts: install, build, start a private harness, load objects, measure.
# Sourced, not run. Expects `set -euo pipefail` in the caller.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RELEASE="${CARGO_TARGET_DIR:-$ROOT/target}/release"
HARNESS_PIDS=()
RUN=""
declare -A LOADED=() # objects loaded per bench-load prefix in this run

log() { printf '\033[1m[bench]\033[0m %s\n' "$*" >&2; }

# Installs the servers the benchmarks run (tests/env/install.sh: the control plane and s3s-fs) and the
# measuring tools, then builds in release mode.
bench_prepare() {
  "$ROOT/tests/env/install.sh" apt k8s s3
  local need=()
  [ -x /usr/bin/time ] || need+=(time)
  command -v zstd >/dev/null || need+=(zstd)
  command -v jq >/dev/null || need+=(jq)
  command -v python3 >/dev/null || need+=(python3)
  if [ ${#need[@]} -gt 0 ]; then
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo -n"
    log "apt: installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  log "building in release mode"
  (cd "$ROOT" && cargo build --release --locked -p kubectl-backup)
  (cd "$ROOT" && cargo build --release --locked -p kubectl-backup-e2e --bins)
}

# Stops the harnesses this script started (SIGTERM, by PID) and removes the run directory on success.
bench_cleanup() {
  local status=$?
  for pid in "${HARNESS_PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  if [ -n "$RUN" ] && [ -d "$RUN" ]; then
    if [ $status -eq 0 ] && [ -z "${BENCH_KEEP:-}" ]; then rm -rf "$RUN"; else log "servers' logs and data kept in $RUN"; fi
  fi
  exit $status
}

# BENCH_NICE=N: run the servers and everything measured at nice N (negative needs root). Building and
# installing are not affected.
bench_nice() {
  if [ -n "${BENCH_NICE:-}" ]; then
    renice -n "$BENCH_NICE" -p $$ >/dev/null
    log "running at nice $BENCH_NICE"
  fi
}

# bench_run_dir NAME: a fresh directory for the servers and scratch files; sets RUN.
bench_run_dir() {
  RUN=$(mktemp -d "${TMPDIR:-/tmp}/kubectl-backup-bench-$1.XXXXXX")
  mkdir -p "$RUN/bin"
  # kubectl finds this `kubectl-backup` first: it runs the release binary under /usr/bin/time so the
  # plugin's own peak RSS is recorded in $BENCH_PLUGIN_RSS (kubectl's exec'ing process is not counted).
  cat >"$RUN/bin/kubectl-backup" <<EOF
#!/usr/bin/env bash
exec /usr/bin/time -f '%M' -o "\${BENCH_PLUGIN_RSS:-/dev/null}" "$RELEASE/kubectl-backup" "\$@"
EOF
  chmod +x "$RUN/bin/kubectl-backup"
  export PATH="$RUN/bin:$RELEASE:$PATH"
}

# bench_begin NAME: the common start of a measuring script, after bench_prepare: nice, a run
# directory, OUT (target/bench/NAME-<time>, with logs/), an empty RESULTS file, the harness, and
# the machine's description in OUT/machine.txt.
bench_begin() {
  bench_nice
  bench_run_dir "$1"
  OUT=${BENCH_OUT:-$ROOT/target/bench}/$1-$(date +%Y%m%d-%H%M%S)
  mkdir -p "$OUT/logs"
  RESULTS="$OUT/results.tsv"
  : >"$RESULTS"
  start_harness "$RUN/env"
  machine | tee "$OUT/machine.txt" >&2
}

# start_harness DIR: starts `harness up` in DIR (the control plane and s3s-fs, which stores the bucket
# `backups` under DIR/s3/backups), waits for it, and sources DIR/env.sh (KUBECONFIG and the S3
# settings). Sets HARNESS_PID and S3_ROOT (the bucket's directory: s3://backups/P is S3_ROOT/P).
start_harness() {
  local dir=$1
  mkdir -p "$dir"
  "$RELEASE/harness" up --dir "$dir" --env-file "$dir/env.json" --stores s3 >"$dir/harness.log" 2>&1 &
  HARNESS_PID=$!
  HARNESS_PIDS+=("$HARNESS_PID")
  for _ in $(seq 1 240); do
    [ -f "$dir/env.json" ] && break
    if ! kill -0 "$HARNESS_PID" 2>/dev/null; then cat "$dir/harness.log" >&2; log "the harness failed to start"; exit 1; fi
    sleep 0.5
  done
  [ -f "$dir/env.json" ] || { cat "$dir/harness.log" >&2; log "the harness did not become ready in 120 s"; exit 1; }
  # shellcheck disable=SC1091
  source "$dir/env.sh"
  export KUBECONFIG AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION AWS_ENDPOINT_URL AWS_ALLOW_HTTP
  unset KUBECTL_BACKUP_LOCATION KUBECTL_BACKUP_KUBECONFIG
  APISERVER_PID=$(child_pid "$HARNESS_PID" kube-apiserver)
  ETCD_PID=$(child_pid "$HARNESS_PID" etcd)
  S3_ROOT="$dir/s3/backups"
  [ -d "$S3_ROOT" ] || { log "no bucket directory $S3_ROOT"; exit 1; }
  log "harness up in $dir (kube-apiserver pid $APISERVER_PID, etcd pid $ETCD_PID)"
}

# child_pid PARENT COMM: the child of PARENT whose command name is COMM.
child_pid() {
  local p
  for p in $(ps -o pid= --ppid "$1"); do
    if [ "$(cat /proc/"$p"/comm 2>/dev/null)" = "$2" ]; then echo "$p"; return; fi
  done
  log "no $2 process under $1"
  exit 1
}

# cpu_seconds PID: user+system CPU seconds the process has used so far.
cpu_seconds() {
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / hz }' /proc/"$1"/stat
}

# measure RESULTS SIZE VARIANT RUN LOG -- COMMAND...: runs COMMAND (stdout to LOG, stderr to LOG.err) under
# /usr/bin/time and appends one row to RESULTS:
#   size variant run wall_s peak_rss_kib client_cpu_s apiserver_cpu_s etcd_cpu_s load1
# peak_rss_kib is the plugin's own peak when BENCH_PLUGIN_RSS was written, else the largest process
# COMMAND waited for. client_cpu_s is user+system CPU of COMMAND and its children.
measure() {
  local results=$1 size=$2 variant=$3 run=$4 logf=$5
  shift 6
  local t="$RUN/time.$$" plugin_rss="$RUN/plugin-rss.$$"
  rm -f "$plugin_rss"
  local a0 e0 a1 e1 load
  load=$(cut -d' ' -f1 /proc/loadavg)
  a0=$(cpu_seconds "$APISERVER_PID")
  e0=$(cpu_seconds "$ETCD_PID")
  local n0 n1
  n0=$(date +%s%N)
  if ! BENCH_PLUGIN_RSS="$plugin_rss" /usr/bin/time -f '%M %U %S' -o "$t" "$@" >"$logf" 2>"$logf.err"; then
    tail -n 30 "$logf" "$logf.err" >&2
    log "failed: $*"
    exit 1
  fi
  n1=$(date +%s%N)
  a1=$(cpu_seconds "$APISERVER_PID")
  e1=$(cpu_seconds "$ETCD_PID")
  local wall rss user sys
  wall=$(awk -v a="$n0" -v b="$n1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
  read -r rss user sys < <(tail -n 1 "$t")
  if [ -s "$plugin_rss" ]; then rss=$(tail -n 1 "$plugin_rss"); fi
  awk -v OFS='\t' -v size="$size" -v variant="$variant" -v run="$run" -v wall="$wall" -v rss="$rss" \
    -v user="$user" -v sys="$sys" -v a0="$a0" -v a1="$a1" -v e0="$e0" -v e1="$e1" -v load="$load" 'BEGIN {
      printf "%s\t%s\t%s\t%.3f\t%d\t%.2f\t%.2f\t%.2f\t%s\n", size, variant, run, wall, rss, user + sys, a1 - a0, e1 - e0, load
      printf "  %-24s run %s: %7.2f s  peak RSS %6.1f MiB  (client CPU %.2f s, apiserver %.2f s, etcd %.2f s, load %s)\n", \
        variant, run, wall, rss / 1024, user + sys, a1 - a0, e1 - e0, load > "/dev/stderr"
    }' >>"$results"
}

# load_objects PREFIX NAMESPACES TOTAL BYTES: grows the set of benchmark objects named PREFIX
# (ConfigMaps of about BYTES bytes and Secrets of about BYTES/4, spread evenly over NAMESPACES
# namespaces, target/release/bench-load) to TOTAL objects (even), creating only what is missing, and
# logs how long it took (not measured; one row in $OUT/load.tsv: prefix namespaces from to seconds
# objects_per_second).
load_objects() {
  local prefix=$1 namespaces=$2 total=$3 bytes=$4 from t0 t1 secs rate
  from=${LOADED[$prefix]:-0}
  [ "$total" -gt "$from" ] || return 0
  log "loading ConfigMaps and Secrets $from..$total over $namespaces namespaces (prefix $prefix; not measured)"
  t0=$(date +%s%N)
  "$RELEASE/bench-load" --prefix "$prefix" --namespaces "$namespaces" --total-from "$from" --total-to "$total" \
    --bytes "$bytes" >&2
  t1=$(date +%s%N)
  LOADED[$prefix]=$total
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
  rate=$(awk -v n=$((total - from)) -v s="$secs" 'BEGIN { printf "%.0f", (s > 0 ? n / s : 0) }')
  log "loaded $((total - from)) objects in $secs s ($rate objects/s)"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$prefix" "$namespaces" "$from" "$total" "$secs" "$rate" >>"${OUT:?}/load.tsv"
}

# wait_settled PREFIX NAMESPACES: waits (at most 2 minutes) until kube-controller-manager has given
# each namespace bench-load made (PREFIX-*) its kube-root-ca.crt ConfigMap and its default
# ServiceAccount's token Secret: until then, backups taken one after another see different clusters.
wait_settled() {
  local prefix=$1 namespaces=$2 cms tokens
  for _ in $(seq 240); do
    cms=$(kubectl get configmaps -A --field-selector metadata.name=kube-root-ca.crt --no-headers |
      awk -v p="$prefix-" 'index($1, p) == 1' | wc -l)
    tokens=$(kubectl get secrets -A --field-selector type=kubernetes.io/service-account-token --no-headers |
      awk -v p="$prefix-" 'index($1, p) == 1 && index($2, "default-token-") == 1' | wc -l)
    if [ "$cms" -ge "$namespaces" ] && [ "$tokens" -ge "$namespaces" ]; then
      return 0
    fi
    sleep 0.5
  done
  log "the $namespaces namespaces $prefix-* did not all get their kube-root-ca.crt and token in 2 minutes ($cms, $tokens)"
  return 1
}

# change PREFIX NAMESPACES TOTAL ROUND: changes one object pair in $EVERY (the caller's; 100: 1%) of
# the objects bench-load made (round ROUND's pairs; each round others), not measured.
change() {
  local out
  out=$("$RELEASE/bench-load" --prefix "$1" --namespaces "$2" --total-from 0 --total-to "$3" \
    --patch "$4" --every "${EVERY:?}")
  log "round $4: $out (of $3 objects)"
}

# check_backup FILE: FILE is the `-o json` output of a completed backup; prints its item count.
check_backup() {
  jq -e '.status.phase == "Completed"' "$1" >/dev/null || { log "backup not completed: $1"; exit 1; }
  jq -r '.status.progress.itemsBackedUp' "$1"
}

# warm_up SIZE LOCATION: one raw LIST and one backup before the measured runs (not measured); logs and
# records in $OUT/sizes.tsv how many objects each sees (the raw LIST also counts the cluster's own).
warm_up() {
  local size=$1 location=$2 listed items
  listed=$("$RELEASE/raw-list" | sed -n 's/.*items=\([0-9]*\).*/\1/p')
  kubectl backup create "warmup-$size" --location "$location" -o json >"$RUN/warmup.json"
  items=$(check_backup "$RUN/warmup.json")
  log "size $size: raw LIST sees $listed objects, the backup holds $items (warm-up runs done)"
  printf '%s\tlisted=%s\tbackup_items=%s\n' "$size" "$listed" "$items" >>"${OUT:?}/sizes.tsv"
}

# Prints the machine the figures come from.
machine() {
  echo "cpus: $(nproc); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  echo "memory: $(free -g | awk '/Mem:/ {print $2}') GiB; kernel $(uname -r)"
  echo "kubectl: $(kubectl version --client -o json 2>/dev/null | jq -r .clientVersion.gitVersion)"
  echo "nice: ${BENCH_NICE:-0}"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
}

# free_port: a TCP port on 127.0.0.1 free now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_controller LOG LOCATION LINE [FLAG...]: starts the release backup-webhook as a local process
# (the harness's admin kubeconfig; serving certificate in $RUN/tls, made on first use; no schedules,
# no restore worker, --debounce 3s, then FLAG...) into LOCATION, its log in LOG (also
# $WEBHOOK_LOG) and its pid in $pid, and waits (up to 120 s) until its log holds LINE.
start_controller() {
  local line=$3
  WEBHOOK_LOG=$1
  [ -f "$RUN/tls/tls.crt" ] || "$RELEASE/kubectl-backup" certs generate --dir "$RUN/tls" --host 127.0.0.1 >/dev/null
  RUST_LOG=info "$RELEASE/backup-webhook" --listen "127.0.0.1:$(free_port)" --metrics-addr "127.0.0.1:$(free_port)" \
    --tls-cert "$RUN/tls/tls.crt" --tls-key "$RUN/tls/tls.key" --location "$2" --namespace bench-webhook \
    --schedules=false --restore-worker=false --debounce 3s "${@:4}" >"$WEBHOOK_LOG" 2>&1 &
  pid=$!
  HARNESS_PIDS+=("$pid")
  for _ in $(seq 1 240); do
    grep -qs "$line" "$WEBHOOK_LOG" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  grep -q "$line" "$WEBHOOK_LOG" || { tail -n 30 "$WEBHOOK_LOG" >&2; log "no \"$line\" in the controller's log"; exit 1; }
}
