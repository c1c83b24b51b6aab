#!/usr/bin/env bash
# What a LIST costs the server (issue 16): the ConfigMaps of bench/scale.sh's largest size (50k
# over 200 namespaces) listed four ways, one request at a time over one kept-alive TLS connection
# (python3's http.client), each round in another order:
#   cluster-wide            one cluster-wide LIST in pages of 500, as `kubectl backup create` starts
#                           and target/release/raw-list lists (a consistent read from etcd, page by page)
#   per-namespace           one LIST per namespace (limit 500: from etcd too)
#   cache-cluster-wide      one unpaged LIST at `resourceVersion=0`, which the API server answers
#                           from its watch cache whatever that cache has seen (it may be stale: a
#                           backup cannot list this way; what it would cost a server that answers
#                           consistent LISTs from its cache, as Kubernetes 1.31 and later do)
#   cache-per-namespace     the same, one LIST per namespace
#   cluster-wide-protobuf   cluster-wide, as the API server's protobuf (`Accept:
#                           application/vnd.kubernetes.protobuf`) instead of JSON: what the server
#                           saves when it does not encode JSON (the plugin stores each object's JSON
#                           as the server sent it, so it lists JSON; not in the default ways)
#   per-namespace-protobuf  per-namespace, as protobuf
# (A read from the cache at least as new as a consistent read's resourceVersion N,
# `resourceVersion=N&resourceVersionMatch=NotOlderThan`, is what a backup could use; on this 1.20
# server it waits 3 s and fails, "Too large resource version": the cache of one resource moves its
# resourceVersion only on that resource's own events, and a server older than 1.28 cannot ask etcd
# for progress. docs/benchmarks.md, "Lists from the API server's watch cache".)
# BENCH_METADATA=1 lists metadata only (`as=PartialObjectMetadataList`, what an incremental backup
# lists), in pages of 2000 where paged. Prints, per way and round, the requests, the wall time,
# the bytes received and the CPU seconds kube-apiserver and etcd used (from /proc). Responses are
# not parsed beyond their list metadata, so the client's own cost stays small. Not a target of the
# issue: it shows where the server's time goes (docs/benchmarks.md, "What a cluster-wide paged
# LIST costs the server" and "Lists from the API server's watch cache").
#
#   bench/list-cost.sh                  # 100k objects, 4 rounds
#   BENCH_SIZE=20000 BENCH_ROUNDS=1 bench/list-cost.sh
#   BENCH_WAYS="cluster-wide cache-cluster-wide" BENCH_METADATA=1 bench/list-cost.sh
#   BENCH_WAYS="cluster-wide per-namespace cluster-wide-protobuf per-namespace-protobuf" bench/list-cost.sh
# Results go to target/bench/list-cost-<time>/results.tsv (way, round, requests, wall_s, mib,
# apiserver_cpu_s, etcd_cpu_s).
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

SIZE=${BENCH_SIZE:-100000}
ROUNDS=${BENCH_ROUNDS:-4}
NAMESPACES=${BENCH_NAMESPACES:-200}
WAYS=${BENCH_WAYS:-cluster-wide per-namespace cache-cluster-wide cache-per-namespace}
METADATA=${BENCH_METADATA:-0}

trap bench_cleanup EXIT
trap 'exit 130' INT TERM

bench_prepare
bench_begin list-cost
load_objects bench "$NAMESPACES" "$SIZE" 1024

SERVER=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')
TOKEN=$(kubectl config view --raw --minify -o jsonpath='{.users[0].user.token}')
kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' |
  base64 -d >"$RUN/ca.crt"
[ -n "$TOKEN" ] || { log "the harness kubeconfig has no token"; exit 1; }
kubectl get namespaces -o name | sed 's|^namespace/||' | grep '^bench' >"$RUN/namespaces"

# lists WAY: lists the ConfigMaps one way; prints the number of requests and the bytes received.
lists() {
  SERVER=$SERVER TOKEN=$TOKEN CA="$RUN/ca.crt" METADATA=$METADATA NAMESPACES_FILE="$RUN/namespaces" python3 - "$1" <<'EOF'
import http.client, json, os, re, ssl, sys, urllib.parse
u = urllib.parse.urlparse(os.environ["SERVER"])
conn = http.client.HTTPSConnection(u.hostname, u.port, context=ssl.create_default_context(cafile=os.environ["CA"]))
metadata = os.environ["METADATA"] == "1"
accept = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1" if metadata else "application/json"
headers = {"Authorization": "Bearer " + os.environ["TOKEN"], "Accept": accept}
limit = 2000 if metadata else 500
requests = received = 0
way = sys.argv[1]
protobuf = way.endswith("-protobuf")
if protobuf:
    if metadata:
        sys.exit("BENCH_METADATA=1 lists JSON (PartialObjectMetadataList); not with a protobuf way")
    headers["Accept"] = "application/vnd.kubernetes.protobuf"
    way = way.removesuffix("-protobuf")
def fields(buf):
    """A protobuf message's fields (number, wire type, value): varints and length-delimited only,
    which is all a runtime.Unknown and a ListMeta hold."""
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = varint(buf, i)
        elif wire == 2:
            n, i = varint(buf, i)
            value, i = buf[i:i + n], i + n
        else:
            sys.exit(f"protobuf wire type {wire} not expected in a list's envelope")
        yield number, wire, value
def varint(buf, i):
    value = shift = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, i
def protobuf_list_meta(body):
    """The ListMeta of a protobuf LIST response: the `k8s\\0` magic, a runtime.Unknown whose raw
    (field 2) is the list, whose metadata is field 1 (continue: field 3)."""
    if not body.startswith(b"k8s\x00"):
        sys.exit(f"not a protobuf response: {body[:40]!r}")
    raw = next((v for n, w, v in fields(body[4:]) if n == 2 and w == 2), None)
    meta = next((v for n, w, v in fields(raw or b"") if n == 1 and w == 2), b"")
    token = next((v for n, w, v in fields(meta) if n == 3 and w == 2), b"")
    return {"continue": token.decode()}
def get(path):
    """The response's list metadata (`{"kind":…,"metadata":{…},"items":…`: the API server writes
    it first), the rest of the body read and not parsed."""
    global requests, received
    conn.request("GET", path, headers=headers)
    r = conn.getresponse()
    body = r.read()
    requests += 1
    received += len(body)
    if r.status != 200:
        sys.exit(f"GET {path}: {r.status} {body[:300]!r}")
    if protobuf:
        return protobuf_list_meta(body)
    m = re.search(rb'"metadata":(\{[^{}]*\})', body[:4096])
    if not m:
        sys.exit(f"GET {path}: no list metadata in {body[:300]!r}")
    return json.loads(m.group(1))
namespaces = open(os.environ["NAMESPACES_FILE"]).read().split()
if way == "cluster-wide":
    token = ""
    while True:
        meta = get(f"/api/v1/configmaps?limit={limit}" + ("&continue=" + urllib.parse.quote(token) if token else ""))
        token = meta.get("continue", "")
        if not token:
            break
elif way == "per-namespace":
    for ns in namespaces:
        get(f"/api/v1/namespaces/{ns}/configmaps?limit={limit}")
elif way == "cache-cluster-wide":
    get("/api/v1/configmaps?resourceVersion=0")
elif way == "cache-per-namespace":
    for ns in namespaces:
        get(f"/api/v1/namespaces/{ns}/configmaps?resourceVersion=0")
else:
    sys.exit(f"no way {sys.argv[1]!r}")
print(requests, received)
EOF
}

printf 'way\tround\trequests\twall_s\tmib\tapiserver_cpu_s\tetcd_cpu_s\n' >"$RESULTS"
read -r -a ways <<<"$WAYS"
for round in $(seq 1 "$ROUNDS"); do
  # The ways go in another order every round: a LIST's garbage is collected by the API server
  # during whatever comes next, so a fixed order would bill one way for another's.
  order=()
  for i in "${!ways[@]}"; do order+=("${ways[$(((i + round - 1) % ${#ways[@]}))]}"); done
  for way in "${order[@]}"; do
    a0=$(cpu_seconds "$APISERVER_PID") e0=$(cpu_seconds "$ETCD_PID") t0=$(date +%s.%N)
    read -r n bytes < <(lists "$way")
    t1=$(date +%s.%N) a1=$(cpu_seconds "$APISERVER_PID") e1=$(cpu_seconds "$ETCD_PID")
    row=$(awk -v w="$way" -v r="$round" -v n="$n" -v b="$bytes" -v t0="$t0" -v t1="$t1" -v a0="$a0" -v a1="$a1" -v e0="$e0" -v e1="$e1" \
      'BEGIN { printf "%s\t%s\t%s\t%.2f\t%.1f\t%.2f\t%.2f", w, r, n, t1 - t0, b / 1048576, a1 - a0, e1 - e0 }')
    echo "$row" >>"$RESULTS"
    log "$row"
  done
done
column -t "$RESULTS" | tee "$OUT/summary.txt"
log "results in $OUT"
