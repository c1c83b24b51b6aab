#!/usr/bin/env bash
# What a LIST costs the server (issue 16): the ConfigMaps of bench/scale.sh's largest size (50k
# over 200 namespaces) listed as one cluster-wide LIST in pages of 500, as `kubectl backup create`
# and target/release/raw-list do, against one LIST per namespace. Both over one kept-alive TLS
# connection (python3's http.client), one request at a time; prints, per way and round, the
# requests, the wall time and the CPU seconds kube-apiserver and etcd used (from /proc). Not a
# target of the issue: it shows where the server's time goes (docs/benchmarks.md, "What a
# cluster-wide paged LIST costs the server").
#
#   bench/list-cost.sh                  # 100k objects, 4 rounds
#   BENCH_SIZE=20000 BENCH_ROUNDS=1 bench/list-cost.sh
# Results go to target/bench/list-cost-<time>/results.tsv (way, round, requests, wall_s,
# apiserver_cpu_s, etcd_cpu_s).
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

SIZE=${BENCH_SIZE:-100000}
ROUNDS=${BENCH_ROUNDS:-4}
NAMESPACES=${BENCH_NAMESPACES:-200}

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

# lists WAY: lists the ConfigMaps one way; prints the number of requests.
lists() {
  SERVER=$SERVER TOKEN=$TOKEN CA="$RUN/ca.crt" NAMESPACES_FILE="$RUN/namespaces" python3 - "$1" <<'EOF'
import http.client, json, os, ssl, sys, urllib.parse
u = urllib.parse.urlparse(os.environ["SERVER"])
conn = http.client.HTTPSConnection(u.hostname, u.port, context=ssl.create_default_context(cafile=os.environ["CA"]))
headers = {"Authorization": "Bearer " + os.environ["TOKEN"], "Accept": "application/json"}
def get(path):
    conn.request("GET", path, headers=headers)
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        sys.exit(f"GET {path}: {r.status} {body[:200]!r}")
    return json.loads(body)
requests = 0
if sys.argv[1] == "cluster-wide":
    token = ""
    while True:
        page = get("/api/v1/configmaps?limit=500" + ("&continue=" + urllib.parse.quote(token) if token else ""))
        requests += 1
        token = page["metadata"].get("continue", "")
        if not token:
            break
else:
    for ns in open(os.environ["NAMESPACES_FILE"]).read().split():
        get(f"/api/v1/namespaces/{ns}/configmaps?limit=500")
        requests += 1
print(requests)
EOF
}

printf 'way\tround\trequests\twall_s\tapiserver_cpu_s\tetcd_cpu_s\n' >"$RESULTS"
for round in $(seq 1 "$ROUNDS"); do
  # Each way goes first in every other round: a LIST's garbage is collected by the API server
  # during whatever comes next, so a fixed order would bill one way for the other's.
  ways="cluster-wide per-namespace"
  [ $((round % 2)) = 0 ] && ways="per-namespace cluster-wide"
  for way in $ways; do
    a0=$(cpu_seconds "$APISERVER_PID") e0=$(cpu_seconds "$ETCD_PID") t0=$(date +%s.%N)
    n=$(lists "$way")
    t1=$(date +%s.%N) a1=$(cpu_seconds "$APISERVER_PID") e1=$(cpu_seconds "$ETCD_PID")
    row=$(awk -v w="$way" -v r="$round" -v n="$n" -v t0="$t0" -v t1="$t1" -v a0="$a0" -v a1="$a1" -v e0="$e0" -v e1="$e1" \
      'BEGIN { printf "%s\t%s\t%s\t%.2f\t%.2f\t%.2f", w, r, n, t1 - t0, a1 - a0, e1 - e0 }')
    echo "$row" >>"$RESULTS"
    log "$row"
  done
done
column -t "$RESULTS" | tee "$OUT/summary.txt"
log "results in $OUT"
