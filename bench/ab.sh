#!/usr/bin/env bash
# A/B of two builds of the plugin (a change to `create`'s hot path): `kubectl-backup create` of
# BENCH_OBJECTS objects (default 100000: ConfigMaps and Secrets of 1 KiB over 200 namespaces, as
# bench/scale.sh loads them) by build A and build B in turn, BENCH_ROUNDS rounds (default 7), on one
# private harness (real kube-apiserver, etcd, s3s-fs). Each build is run directly, not through
# kubectl: its wall time, peak RSS and CPU (user + system) are its own. The two builds' first backups
# must list the same objects with the same digests (their contents files, sorted, byte-identical).
# Prints the medians and B / A; results in target/bench/ab-<time>/.
#
#   git stash; cargo build --release -p kubectl-backup; cp target/release/kubectl-backup /tmp/kb-a
#   git stash pop; cargo build --release -p kubectl-backup; cp target/release/kubectl-backup /tmp/kb-b
#   BENCH_NICE=-10 bench/ab.sh /tmp/kb-a /tmp/kb-b
#   BENCH_OBJECTS=20000 BENCH_ROUNDS=5 bench/ab.sh A B       # a quicker look
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

usage="usage: bench/ab.sh A B (two kubectl-backup binaries)"
A=$(realpath "${1:?$usage}")
B=$(realpath "${2:?$usage}")
[ -x "$A" ] && [ -x "$B" ] || { log "$usage"; exit 2; }
OBJECTS=${BENCH_OBJECTS:-100000}
ROUNDS=${BENCH_ROUNDS:-7}

trap bench_cleanup EXIT
trap 'exit 130' INT TERM

bench_prepare # the servers, the harness and bench-load (the two builds are the caller's)
bench_begin ab
LOCATION="s3://backups/ab-$(date +%s)"
{
  echo "A: $A ($(sha256sum "$A" | cut -c1-12))"
  echo "B: $B ($(sha256sum "$B" | cut -c1-12))"
} | tee -a "$OUT/machine.txt" >&2

load_objects bench 200 "$OBJECTS" 1024
wait_settled bench 200 # the first backups of A and B are compared below
"$A" create ab-warm-a --location "$LOCATION" -o json >"$RUN/warm-a.json"
"$B" create ab-warm-b --location "$LOCATION" -o json >"$RUN/warm-b.json"
for r in $(seq 1 "$ROUNDS"); do
  log "round $r/$ROUNDS"
  measure "$RESULTS" "$OBJECTS" A "$r" "$OUT/logs/a-$r.json" -- "$A" create "a-$r" --location "$LOCATION" -o json
  check_backup "$OUT/logs/a-$r.json" >/dev/null
  measure "$RESULTS" "$OBJECTS" B "$r" "$OUT/logs/b-$r.json" -- "$B" create "b-$r" --location "$LOCATION" -o json
  check_backup "$OUT/logs/b-$r.json" >/dev/null
done

# contents NAME: the backup's contents file, decompressed, its lines sorted (the LISTs run in
# parallel, so the order of resources differs from run to run).
contents() {
  zstd -d -q -c "$S3_ROOT/${LOCATION#s3://backups/}/backups/$1"/contents-*.jsonl.zst | sort
}
if cmp -s <(contents a-1) <(contents b-1); then
  same="the contents of a-1 and b-1 are identical ($(contents a-1 | wc -l) lines)"
  log "$same"
else
  log "the contents of a-1 and b-1 differ: the two builds did not back up the same thing"
  exit 1
fi
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt" >&2

{
  echo "## A/B of two builds: create of $OBJECTS objects ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  sed 's/^/    /' "$OUT/machine.txt"
  echo
  python3 "$ROOT/bench/summarize.py" "$RESULTS" "B / A (wall)=B/A@$OBJECTS"
  echo "- $same"
} | tee "$OUT/summary.md"
log "results in $OUT"
