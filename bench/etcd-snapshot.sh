#!/usr/bin/env bash
# Benchmark: `kubectl backup etcd snapshot` against `etcdctl snapshot save` of the same etcd, in the
# same run. Starts its own etcd (Debian's etcd-server) on 127.0.0.1, loads ~SIZE_MB of keys, then
# takes REPS snapshots with each tool, alternating which goes first, and prints every time, the
# medians and their ratio (target: kubectl-backup <= 1.1 x etcdctl).
#
# Usage: bench/etcd-snapshot.sh [SIZE_MB (default 200)] [REPS (default 5)]
# Needs: etcd, etcdctl (apt-get install -y etcd-server etcd-client), python3, cargo.
#
# Both tools write a local file: etcdctl to a path, kubectl-backup to a file:// location (its
# multipart upload into the store's directory, SHA-256 computed and the snapshot trailer checked on
# the way). etcdctl fsyncs the file it wrote; the file:// store does not, so a second figure adds
# an fsync of kubectl-backup's file (`sync FILE`) to compare durable writes too.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SIZE_MB=${1:-200}
REPS=${2:-5}
export ETCDCTL_API=3

die() { echo "error: $*" >&2; exit 1; }
command -v etcd >/dev/null || die "etcd is missing: apt-get install -y etcd-server"
command -v etcdctl >/dev/null || die "etcdctl is missing: apt-get install -y etcd-client"
command -v python3 >/dev/null || die "python3 is missing"

echo "== building kubectl-backup (release)" >&2
cargo build --release -p kubectl-backup >&2
KB=$ROOT/target/release/kubectl-backup

WORK=$(mktemp -d "${TMPDIR:-/tmp}/etcd-bench.XXXXXX")
ETCD_PID=""
cleanup() {
  if [ -n "$ETCD_PID" ] && kill -0 "$ETCD_PID" 2>/dev/null; then
    kill -TERM "$ETCD_PID" 2>/dev/null || true
    wait "$ETCD_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
CLIENT=$(port)
PEER=$(port)
ENDPOINT=http://127.0.0.1:$CLIENT

echo "== starting etcd $(etcd --version | head -1 | awk '{print $3}') on $ENDPOINT (data in $WORK/data)" >&2
ETCD_UNSUPPORTED_ARCH= etcd --name bench --data-dir "$WORK/data" \
  --listen-client-urls "$ENDPOINT" --advertise-client-urls "$ENDPOINT" \
  --listen-peer-urls "http://127.0.0.1:$PEER" --initial-advertise-peer-urls "http://127.0.0.1:$PEER" \
  --initial-cluster "bench=http://127.0.0.1:$PEER" \
  --quota-backend-bytes $((8 << 30)) --log-level warn >"$WORK/etcd.log" 2>&1 &
ETCD_PID=$!
for _ in $(seq 1 100); do
  etcdctl --endpoints "$ENDPOINT" endpoint health >/dev/null 2>&1 && break
  kill -0 "$ETCD_PID" 2>/dev/null || { cat "$WORK/etcd.log" >&2; die "etcd exited"; }
  sleep 0.1
done

# ~128 KiB values (base64 of random bytes); with bbolt's overhead (~25%), SIZE_MB x 6 keys make a
# database of about SIZE_MB megabytes. Put 4 at a time.
KEYS=$((SIZE_MB * 6))
echo "== loading $KEYS keys of 128 KiB (~$SIZE_MB MiB)" >&2
mkdir -p "$WORK/values"
for v in 0 1 2 3 4 5 6 7; do head -c 98304 /dev/urandom | base64 -w0 >"$WORK/values/$v"; done
LOAD_START=$EPOCHREALTIME
seq 0 $((KEYS - 1)) | xargs -P 4 -I{} sh -c \
  'etcdctl --endpoints "$0" put "/bench/key-{}" < "$1/values/$(({} % 8))" >/dev/null' "$ENDPOINT" "$WORK"
DB_SIZE=$(etcdctl --endpoints "$ENDPOINT" endpoint status -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Status"]["dbSize"])')
echo "   loaded in $(python3 -c "print(round($EPOCHREALTIME - $LOAD_START, 1))") s; database size $DB_SIZE bytes" >&2

mkdir -p "$WORK/out" "$WORK/store"
declare -a T_ETCDCTL T_KB T_KB_SYNC
run_etcdctl() {
  local i=$1 t0 t1
  t0=$EPOCHREALTIME
  etcdctl --endpoints "$ENDPOINT" snapshot save "$WORK/out/etcdctl-$i.db" >/dev/null 2>&1
  t1=$EPOCHREALTIME
  T_ETCDCTL[i]=$(python3 -c "print(f'{$t1 - $t0:.3f}')")
  SIZE_ETCDCTL=$(stat -c %s "$WORK/out/etcdctl-$i.db")
  rm -f "$WORK/out/etcdctl-$i.db"
}
run_kb() {
  local i=$1 t0 t1 t2 file
  t0=$EPOCHREALTIME
  "$KB" etcd snapshot "bench-$i" --endpoints "$ENDPOINT" --location "file://$WORK/store" --ttl 0s -o json >"$WORK/out/kb-$i.json"
  t1=$EPOCHREALTIME
  file=$(ls "$WORK/store/etcd/bench-$i/"snapshot-*.db)
  sync "$file"
  t2=$EPOCHREALTIME
  T_KB[i]=$(python3 -c "print(f'{$t1 - $t0:.3f}')")
  T_KB_SYNC[i]=$(python3 -c "print(f'{$t2 - $t0:.3f}')")
  SIZE_KB=$(stat -c %s "$file")
  if [ "$i" = 1 ]; then
    etcdctl snapshot status "$file" -w json >"$WORK/out/status.json" || die "etcdctl rejects the snapshot kubectl-backup took"
  fi
  "$KB" etcd delete "bench-$i" --yes --location "file://$WORK/store" >/dev/null
}

echo "== $REPS snapshots with each tool, alternating" >&2
for i in $(seq 1 "$REPS"); do
  if [ $((i % 2)) = 1 ]; then run_etcdctl "$i"; run_kb "$i"; else run_kb "$i"; run_etcdctl "$i"; fi
  echo "   run $i: etcdctl ${T_ETCDCTL[i]} s, kubectl-backup ${T_KB[i]} s (${T_KB_SYNC[i]} s with fsync)" >&2
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }
M_ETCDCTL=$(median "${T_ETCDCTL[@]}")
M_KB=$(median "${T_KB[@]}")
M_KB_SYNC=$(median "${T_KB_SYNC[@]}")
RATIO=$(python3 -c "print(f'{$M_KB / $M_ETCDCTL:.2f}')")
RATIO_SYNC=$(python3 -c "print(f'{$M_KB_SYNC / $M_ETCDCTL:.2f}')")
MIB=$(python3 -c "print(f'{$SIZE_KB / 1048576:.1f}')")

cat <<EOF

etcd snapshot benchmark ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, etcd $(etcd --version | head -1 | awk '{print $3}'))
database: $KEYS keys, $DB_SIZE bytes; snapshot file: $SIZE_KB bytes ($MIB MiB; etcdctl's: $SIZE_ETCDCTL bytes)
etcdctl snapshot status of kubectl-backup's file: $(cat "$WORK/out/status.json")

| tool | runs (s) | median (s) | vs etcdctl |
|---|---|---|---|
| etcdctl snapshot save | ${T_ETCDCTL[*]} | $M_ETCDCTL | 1.00x |
| kubectl backup etcd snapshot (file://) | ${T_KB[*]} | $M_KB | ${RATIO}x |
| kubectl backup etcd snapshot + fsync of its file | ${T_KB_SYNC[*]} | $M_KB_SYNC | ${RATIO_SYNC}x |
EOF
python3 -c "import sys; sys.exit(0 if $M_KB <= 1.1 * $M_ETCDCTL else 1)" \
  && echo "target met: kubectl-backup <= 1.1x etcdctl" \
  || { echo "target missed: kubectl-backup > 1.1x etcdctl"; exit 1; }
