#!/usr/bin/env bash
# Volume data benchmark (issue 15): the volume mover (`backup-webhook mover`, what a mover Pod runs
# for `kubectl backup create --include-volumes` and for restores) against the plain pipeline of the
# same work, on the same data, on the same machine, in the same run. Target: mover backup throughput
# >= 0.8x that of `tar | zstd | upload`.
#
# A data set of BENCH_VOLUME_MIB (default 1024) MiB is generated once: about 10k small files of 1-8
# KiB in nested directories (config- and source-like text), then the rest half incompressible
# random files of 4 MiB and half log-like text in a few large files, plus a symlink and a hard link.
# It is read from the page cache (written just before, as a volume in use would be), so disk reads
# are not measured. s3s-fs (the S3 server of tests/env/install.sh, the one bench/lib.sh's harness
# runs, started here alone on 127.0.0.1: no control plane is needed) stores the uploads.
# Per run (BENCH_RUNS, default 3; the order of each pair alternates between runs):
#   mover-backup     backup-webhook mover --plan PLAN --dir DATA --termination-log FILE, PLAN listing
#                    16 MiB parts (what the plugin plans for claims up to ~12 GiB) presigned for a
#                    fresh prefix (target/release/presign backup-plan)
#   tar-zstd-curl    the floor: tar -cf - -C DATA . | zstd -2 -T1 -q | curl -sS --fail -T - PUT-URL,
#                    one streamed upload (s3s-fs takes curl's chunked PUT with no Content-Length).
#                    zstd level 2 with one compression thread, as the mover compresses (zstd's -T1
#                    still reads and writes in other threads than it compresses in); GNU tar stores
#                    no xattrs and computes no SHA-256, the mover does both.
#   tar-zstd-st-curl not a baseline: the same with `zstd --single-thread` (reading, compressing and
#                    writing in one thread, as the mover's archiving thread does), to show what
#                    zstd's own I/O threads give the floor.
#   mover-restore    backup-webhook mover --plan PLAN --dir EMPTY (PLAN: the parts the backup above
#                    uploaded, with their sizes and SHA-256, from its manifest: presign restore-plan)
#   curl-zstd-tar    the floor: curl -sS --fail GET-URL... (the same parts, in order) | zstd -d -q |
#                    tar -xf - -C EMPTY
# Both restored trees are compared with the source once per run (types, modes, owners, link counts,
# sizes, mtimes to the nanosecond, symlink targets and every file's SHA-256). Between measurements,
# `sync` (not measured) so no variant pays for another's writeback. The restored trees are deleted
# at the end of each run, and the next run's first restore waits until that is BENCH_INODE_WAIT
# (default 90) seconds old: ext4 without a journal (as on the machine this was written on) passes
# over inodes freed less than a minute ago (five if not yet written back) when it allocates new
# ones, so a restore right after deleting 10k files costs up to twice the CPU. The run directory
# needs about 5 times the data set's size free.
#
# What is measured is the mover process on the host, what runs inside the mover Pod: not the Pod's
# scheduling, image pull or start-up, nor the client's planning and checks. Wall time, peak RSS (of
# the mover; of the largest process of a pipeline), CPU of the command and of s3s-fs. MB/s is the
# data set's apparent size (regular files' bytes, a hard link counted once) / wall time, 10^6 B/s.
#
#   bench/volumes.sh
#   BENCH_RUNS=5 BENCH_VOLUME_MIB=2048 bench/volumes.sh
#   BENCH_VOLUME_MIB=128 BENCH_RUNS=1 bench/volumes.sh   # a quick check
#   BENCH_KEEP=1 (keep the data set, s3s-fs's files and logs), BENCH_NICE=-10 (measured commands and
#   s3s-fs at nice -10, root), BENCH_SMALL_FILES (default 10000), BENCH_PART_MIB (default 16),
#   BENCH_NO_BUILD=1 (measure the binaries already in target/release, built from the code under test)
# Results (results.tsv in bench/lib.sh `measure`'s columns, with s3s-fs's CPU in the kube-apiserver
# column and 0 for etcd; summary.md; logs/) go to target/bench/volumes-<time>/.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

RUNS=${BENCH_RUNS:-3}
VOLUME_MIB=${BENCH_VOLUME_MIB:-1024}
SMALL_FILES=${BENCH_SMALL_FILES:-10000}
PART=$((${BENCH_PART_MIB:-16} << 20))
S3S="${XDG_CACHE_HOME:-$HOME/.cache}/kubectl-backup/tools/bin/s3s-fs"

trap bench_cleanup EXIT
trap 'exit 130' INT TERM

# Only what this benchmark runs: s3s-fs, the measuring tools, the mover and presign.
"$ROOT/tests/env/install.sh" s3
need=()
for tool in time:/usr/bin/time zstd:zstd jq:jq python3:python3 curl:curl; do
  command -v "${tool#*:}" >/dev/null || need+=("${tool%%:*}")
done
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  log "apt: installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ -z "${BENCH_NO_BUILD:-}" ]; then
  log "building the mover and presign in release mode"
  (cd "$ROOT" && cargo build --release --locked -p backup-webhook)
  (cd "$ROOT" && cargo build --release --locked -p kubectl-backup-e2e --bin presign)
fi

bench_nice
bench_run_dir volumes
OUT=${BENCH_OUT:-$ROOT/target/bench}/volumes-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT/logs"
RESULTS="$OUT/results.tsv"
: >"$RESULTS"

# s3s-fs alone, as tests/src/stores.rs starts it; the bucket is $RUN/s3/backups.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$RUN/s3/backups"
"$S3S" --host 127.0.0.1 --port "$PORT" --access-key bench-access-key --secret-key bench-secret-key-0123456789 \
  "$RUN/s3" >"$RUN/s3s-fs.log" 2>&1 &
S3_PID=$!
HARNESS_PIDS+=("$S3_PID")
for _ in $(seq 1 100); do
  curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break
  sleep 0.1
done
curl -s -o /dev/null "http://127.0.0.1:$PORT/" || { cat "$RUN/s3s-fs.log" >&2; log "s3s-fs did not start"; exit 1; }
export AWS_ACCESS_KEY_ID=bench-access-key AWS_SECRET_ACCESS_KEY=bench-secret-key-0123456789 AWS_REGION=us-east-1 \
  AWS_ENDPOINT_URL="http://127.0.0.1:$PORT" AWS_ALLOW_HTTP=true
BUCKET="$RUN/s3/backups"
STAMP=$(date +%s)
{
  machine | grep -v '^kubectl:'
  echo "tools: $(zstd --version | sed 's/^\*\*\* //; s/, by.*//'); $(tar --version | head -1); $(curl --version | head -1 | cut -d' ' -f1-2); s3s-fs $("$S3S" --version | awk '{print $2}')"
  echo "data in $RUN ($(df --output=source,fstype "$RUN" | tail -1 | tr -s ' '))"
} | tee "$OUT/machine.txt" >&2

# The data set: deterministic (seeded), written once.
DATA="$RUN/data"
log "generating $VOLUME_MIB MiB in $DATA (not measured)"
python3 - "$DATA" "$VOLUME_MIB" "$SMALL_FILES" <<'PY'
import os, random, sys
root, mib, small = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(15)
words = ("alpha beta gamma delta replicas image tag port name value enabled timeout retries path host "
         "config cache queue worker shard region zone limit request memory cpu volume mount secret").split()
def text(n):  # config-like lines, compressible about 3x
    out, size = [], 0
    while size < n:
        line = f"{rng.choice(words)}.{rng.choice(words)}: {rng.choice(words)}-{rng.getrandbits(24):06x} # {rng.randint(0, 99999)}\n"
        out.append(line); size += len(line)
    return "".join(out).encode()[:n]
total = mib << 20
used = 0
for i in range(small):  # nested: 20 top directories x 25 subdirectories
    d = os.path.join(root, "small", f"d{i % 20:02d}", f"s{(i // 20) % 25:02d}")
    os.makedirs(d, exist_ok=True)
    n = rng.randint(1024, 8192)
    with open(os.path.join(d, f"f{i:05d}.{('yaml', 'json', 'py', 'txt')[i % 4]}"), "wb") as f:
        f.write(text(n))
    used += n
rest = max(total - used, 8 << 20)
random_bytes = rest // 2 // (4 << 20) * (4 << 20)
os.makedirs(os.path.join(root, "random"))
for i in range(random_bytes // (4 << 20)):
    with open(os.path.join(root, "random", f"blob-{i:04d}.bin"), "wb") as f:
        f.write(rng.randbytes(4 << 20))
text_bytes = rest - random_bytes
logs = 8
levels = ["INFO"] * 12 + ["DEBUG"] * 6 + ["WARN"] * 2 + ["ERROR"]
paths = [f"/api/v1/namespaces/ns-{n}/{r}" for n in range(40) for r in ("pods", "services", "configmaps", "events")]
os.makedirs(os.path.join(root, "logs"))
for i in range(logs):
    n, t = text_bytes // logs + (text_bytes % logs if i == 0 else 0), 1_764_000_000_000 + i
    with open(os.path.join(root, "logs", f"app-{i}.log"), "wb") as f:
        while n > 0:
            lines = []
            for _ in range(2000):
                t += rng.randint(1, 900)
                lines.append(f"2026-12-{t // 86_400_000 % 28 + 1:02d}T{t // 3_600_000 % 24:02d}:{t // 60_000 % 60:02d}:"
                             f"{t // 1000 % 60:02d}.{t % 1000:03d}Z {rng.choice(levels):5} [worker-{rng.randint(0, 15)}] "
                             f"request_id={rng.getrandbits(64):016x} method={rng.choice(('GET', 'GET', 'PUT', 'POST'))} "
                             f"path={rng.choice(paths)} status={rng.choice((200, 200, 200, 201, 404, 409, 500))} "
                             f"latency_ms={rng.random() * 250:.1f} bytes={rng.randint(80, 90000)}\n")
            chunk = "".join(lines).encode()[:n]
            f.write(chunk); n -= len(chunk)
os.symlink("logs/app-0.log", os.path.join(root, "latest.log"))
os.link(os.path.join(root, "random", "blob-0000.bin"), os.path.join(root, "small", "blob-0000.hardlink"))
PY
sync
BYTES=$(find "$DATA" -type f -printf '%i %s\n' | sort -u | awk '{ s += $2 } END { printf "%d", s }')
FILES=$(find "$DATA" -type f -printf '%i\n' | sort -u | wc -l)
# Parts as the plugin plans them (core/src/volume/mod.rs parts_for), for a claim the size of the data.
PARTS=$(((BYTES + BYTES / 20 + (4 << 20) + PART - 1) / PART + 1))
log "data set: $BYTES bytes in $FILES files (one with a second name) + 1 symlink, $(find "$DATA" -type d | wc -l) directories; mover plan: $PARTS parts of $((PART >> 20)) MiB"
printf 'bytes=%s\tfiles=%s\tpart_size=%s\tparts=%s\n' "$BYTES" "$FILES" "$PART" "$PARTS" >"$OUT/sizes.tsv"

# listing DIR: everything compared between the source and a restored tree (not atimes).
listing() {
  (
    cd "$1"
    # Directories without their size (the filesystem's, not the data's).
    { find . -type d -printf '%y %m %U:%G %n - %T@ %p\n'; find . ! -type d -printf '%y %m %U:%G %n %s %T@ %p -> %l\n'; } |
      LC_ALL=C sort
    find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  )
}
listing "$DATA" >"$RUN/source.listing"
need_kib=$((BYTES * 4 / 1024)) # two restored trees and the uploads, besides the data set
free_kib=$(df --output=avail -k "$RUN" | tail -1)
[ "$free_kib" -gt "$need_kib" ] ||
  { log "$RUN has $((free_kib >> 20)) GiB free; a run needs about $((need_kib >> 20)) GiB more"; exit 1; }
INODE_WAIT=${BENCH_INODE_WAIT:-90}
DELETED=0 # when the last restored trees were deleted (seconds since the epoch)

# Waits until the trees deleted last are INODE_WAIT seconds old (see the header).
inodes_settled() {
  local wait=$((DELETED + INODE_WAIT - $(date +%s)))
  if [ "$wait" -gt 0 ]; then
    log "waiting $wait s: the last restored trees were deleted $((INODE_WAIT - wait)) s ago (not measured)"
    sleep "$wait"
  fi
}

# timed VARIANT RUN LOG -- COMMAND...: lib.sh's `measure` without a cluster: one row of its columns,
# s3s-fs's CPU in place of kube-apiserver's, 0 for etcd.
timed() {
  local variant=$1 run=$2 logf=$3
  shift 4
  local t="$RUN/time.$$" s0 s1 n0 n1 load wall rss user sys
  sync
  load=$(cut -d' ' -f1 /proc/loadavg)
  s0=$(cpu_seconds "$S3_PID")
  n0=$(date +%s%N)
  if ! /usr/bin/time -f '%M %U %S' -o "$t" "$@" >"$logf" 2>"$logf.err"; then
    tail -n 30 "$logf" "$logf.err" >&2
    log "failed: $variant run $run"
    exit 1
  fi
  n1=$(date +%s%N)
  s1=$(cpu_seconds "$S3_PID")
  wall=$(awk -v a="$n0" -v b="$n1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
  read -r rss user sys < <(tail -n 1 "$t")
  awk -v OFS='\t' -v size="$BYTES" -v variant="$variant" -v run="$run" -v wall="$wall" -v rss="$rss" \
    -v user="$user" -v sys="$sys" -v s0="$s0" -v s1="$s1" -v load="$load" 'BEGIN {
      printf "%s\t%s\t%s\t%.3f\t%d\t%.2f\t%.2f\t0.00\t%s\n", size, variant, run, wall, rss, user + sys, s1 - s0, load
      printf "  %-16s run %s: %7.2f s  %7.1f MB/s  peak RSS %6.1f MiB  (CPU %.2f s, s3s-fs %.2f s, load %s)\n", \
        variant, run, wall, size / wall / 1e6, rss / 1024, user + sys, s1 - s0, load > "/dev/stderr"
    }' >>"$RESULTS"
}

# same_tree DIR WHAT: fails unless DIR is the source, entry for entry.
same_tree() {
  listing "$1" >"$RUN/restored.listing"
  if ! diff -q "$RUN/source.listing" "$RUN/restored.listing" >/dev/null; then
    diff "$RUN/source.listing" "$RUN/restored.listing" | head -n 20 >&2
    log "$2: the restored tree differs from the source"
    exit 1
  fi
}

mover_backup() { # RUN LOCATION
  local plan="$RUN/backup-plan-$1.json"
  "$RELEASE/presign" --location "$2" backup-plan --stem vol --part-size "$PART" --parts "$PARTS" >"$plan"
  timed mover-backup "$1" "$OUT/logs/mover-backup-$1.log" -- \
    "$RELEASE/backup-webhook" mover --plan "$plan" --dir "$DATA" --termination-log "$RUN/finished-$1.json"
  jq -e '.manifestSha256 | length == 64' "$RUN/finished-$1.json" >/dev/null || { log "no manifest digest"; exit 1; }
}

floor_backup() { # VARIANT RUN LOCATION ZSTD-THREADS
  local url
  url=$("$RELEASE/presign" --location "$3" url put "$1.tar.zst")
  # shellcheck disable=SC2016 # expanded by the inner bash
  timed "$1" "$2" "$OUT/logs/$1-$2.log" -- \
    bash -c 'set -o pipefail; tar -cf - -C "$1" . | zstd -2 "$3" -q | curl -sS --fail -T - "$2"' _ "$DATA" "$url" "$4"
}

mover_restore() { # RUN
  local into="$RUN/restored/$1-mover"
  mkdir -p "$into"
  timed mover-restore "$1" "$OUT/logs/mover-restore-$1.log" -- \
    "$RELEASE/backup-webhook" mover --plan "$RUN/restore-plan-$1.json" --dir "$into" \
    --termination-log "$RUN/restored-$1.json"
  same_tree "$into" "mover-restore run $1"
}

floor_restore() { # RUN
  local into="$RUN/restored/$1-floor"
  mkdir -p "$into"
  jq -r '.parts[] | "url = \"" + .url + "\""' "$RUN/restore-plan-$1.json" >"$RUN/curl-$1.conf"
  # shellcheck disable=SC2016 # expanded by the inner bash
  timed curl-zstd-tar "$1" "$OUT/logs/curl-zstd-tar-$1.log" -- \
    bash -c 'set -o pipefail; curl -sS --fail -K "$1" | zstd -d -q | tar -xf - -C "$2"' _ "$RUN/curl-$1.conf" "$into"
  same_tree "$into" "curl-zstd-tar run $1"
}

# One unmeasured backup of each kind first, so neither pays for a cold start in run 1.
log "warming up: one mover backup and one tar | zstd | curl (not measured)"
"$RELEASE/presign" --location "s3://backups/volumes-$STAMP/warm-up" backup-plan --stem vol --part-size "$PART" \
  --parts "$PARTS" >"$RUN/warm-up-plan.json"
"$RELEASE/backup-webhook" mover --plan "$RUN/warm-up-plan.json" --dir "$DATA" --termination-log "$RUN/warm-up.json"
tar -cf - -C "$DATA" . | zstd -2 -T1 -q |
  curl -sS --fail -T - "$("$RELEASE/presign" --location "s3://backups/volumes-$STAMP/warm-up" url put floor.tar.zst)"
rm -rf "${BUCKET:?}/volumes-$STAMP/warm-up"

for run in $(seq 1 "$RUNS"); do
  log "run $run/$RUNS"
  prefix="volumes-$STAMP/run-$run"
  location="s3://backups/$prefix"
  if [ $((run % 2)) = 1 ]; then
    mover_backup "$run" "$location"
    floor_backup tar-zstd-curl "$run" "$location" -T1
    floor_backup tar-zstd-st-curl "$run" "$location" --single-thread
  else
    floor_backup tar-zstd-st-curl "$run" "$location" --single-thread
    floor_backup tar-zstd-curl "$run" "$location" -T1
    mover_backup "$run" "$location"
  fi
  "$RELEASE/presign" --location "$location" restore-plan --stem vol >"$RUN/restore-plan-$run.json"
  stream=$(jq '[.parts[].size] | add' "$RUN/restore-plan-$run.json")
  floor_size=$(stat -c %s "$BUCKET/$prefix/tar-zstd-curl.tar.zst")
  printf 'run=%s\tmover_stream_bytes=%s\tmover_parts=%s\tfloor_stream_bytes=%s\n' "$run" "$stream" \
    "$(jq '.parts | length' "$RUN/restore-plan-$run.json")" "$floor_size" >>"$OUT/sizes.tsv"
  inodes_settled
  if [ $((run % 2)) = 1 ]; then
    mover_restore "$run"
    floor_restore "$run"
  else
    floor_restore "$run"
    mover_restore "$run"
  fi
  rm -rf "$RUN/restored" "${BUCKET:?}/$prefix"
  sync
  DELETED=$(date +%s)
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt" >&2

{
  echo "## Volume data benchmark ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  sed 's/^/    /' "$OUT/machine.txt"
  echo
  echo "Data set and streams:"
  sed 's/^/    /' "$OUT/sizes.tsv"
  echo
  python3 - "$RESULTS" <<'PY'
import statistics, sys
from collections import OrderedDict
rows = OrderedDict()
for line in open(sys.argv[1]):
    p = line.rstrip("\n").split("\t")
    rows.setdefault(p[1], []).append(dict(size=int(p[0]), run=p[2], wall=float(p[3]), rss=int(p[4]) / 1024,
                                          cpu=float(p[5]), s3=float(p[6])))
med = lambda v, k: statistics.median(r[k] for r in rows[v])  # noqa: E731
print("| variant | runs | wall median (s) | wall min–max (s) | MB/s (median) | peak RSS median (MiB) "
      "| peak RSS max (MiB) | CPU (s) | s3s-fs CPU (s) |")
print("|---|---|---|---|---|---|---|---|---|")
for v, runs in rows.items():
    walls = [r["wall"] for r in runs]
    print(f"| {v} | {len(runs)} | {med(v, 'wall'):.2f} | {min(walls):.2f}–{max(walls):.2f} "
          f"| {runs[0]['size'] / med(v, 'wall') / 1e6:.1f} | {med(v, 'rss'):.1f} | {max(r['rss'] for r in runs):.1f} "
          f"| {med(v, 'cpu'):.2f} | {med(v, 's3'):.2f} |")
print()
# Throughput ratios: the floor's median wall time / the mover's (the target is judged on these);
# each run's pair was measured back to back, so the per-run ratios are shown too.
for label, mover, floor, target in (("backup", "mover-backup", "tar-zstd-curl", 0.8),
                                    ("restore", "mover-restore", "curl-zstd-tar", None),
                                    ("backup against zstd --single-thread (not the target's floor)",
                                     "mover-backup", "tar-zstd-st-curl", None)):
    if mover not in rows or floor not in rows:
        continue
    ratio = med(floor, "wall") / med(mover, "wall")
    per_run = [f["wall"] / m["wall"] for m, f in zip(rows[mover], rows[floor])]
    verdict = "" if target is None else (f" (target >= {target}: **{'met' if ratio >= target else 'not met'}**)")
    print(f"- {label}: mover / floor throughput = {med(floor, 'wall'):.2f} s / {med(mover, 'wall'):.2f} s "
          f"= **{ratio:.2f}×**{verdict}; per run: {', '.join(f'{r:.2f}' for r in per_run)} "
          f"(median {statistics.median(per_run):.2f})")
PY
} | tee "$OUT/summary.md"
log "results in $OUT"
