#!/usr/bin/env bash
# Prometheus metrics (issue 14 item 1), tested with the real thing: Debian's
# prometheus package (scripts/install-deps.sh; it ships promtool).
# 1. A job started by hand (a coordinator, a shard, 2 workers, synthetic
#    model, ipc), each process with --metrics :0: each logs its endpoint on
#    127.0.0.1 (loopback by default) and the kernel lists each port as
#    listening on 127.0.0.1 only.
# 2. `promtool check metrics` passes on every endpoint's output, and each has
#    its role's series: coordinator wren_members{kind="worker"} 2; shard
#    wren_pushes_waiting and the step-time histogram; workers wren_loss,
#    wren_accuracy and bytes to shards; all wren_build_info and
#    process_resident_memory_bytes.
# 3. A Prometheus server (its own port and data directory in $T, a generated
#    prometheus.yml scraping the 4 endpoints every 1 s) has all 4 targets up
#    and answers /api/v1/query?query=wren_steps_total with a value that grows
#    between two queries. Stopped after.
#    The Grafana dashboard (deploy/grafana/wren-dashboard.json) parses, names
#    only series the endpoints export, and each of its queries has an answer.
# 4. A bad --metrics address is refused at start with status 2, naming it.
source "$(dirname "$0")/lib/common.bash"

for b in prometheus promtool curl; do
    command -v "$b" >/dev/null || fail "$b is missing (scripts/install-deps.sh installs prometheus and curl)"
done

# endpoint LOG: the host:port a process logged ("metrics at http://H:P/metrics"), waiting up to 10 s.
endpoint() {
    local ep=""
    for _ in $(seq 100); do
        ep=$(sed -nE 's|.*metrics at http://([^/]*)/metrics.*|\1|p' "$1" | head -n 1)
        [ -n "$ep" ] && break
        sleep 0.1
    done
    [ -n "$ep" ] || fail "$1 names no metrics endpoint within 10 s"
    echo "$ep"
}

# ---- 1. a job with --metrics on every process ----------------------------------------------
D=$T/job
mkdir -p "$D"
JOB=(shards=1 workers=2 model=synthetic:200000 steps=10000000 progress_every=20 digest_every=100)
"$BIN/wren-server" coordinator --bind "ipc://$D/coord" --metrics :0 "${JOB[@]}" >"$D/coord.log" 2>&1 &
COORD=$!
STARTED+=("$COORD")
"$BIN/wren-server" shard --coordinator "ipc://$D/coord" --bind "ipc://$D/s0" --metrics :0 >"$D/s0.log" 2>&1 &
STARTED+=("$!")
for w in 0 1; do
    "$BIN/wren-worker" --coordinator "ipc://$D/coord" --metrics :0 >"$D/w$w.log" 2>&1 &
    STARTED+=("$!")
done
declare -A EP
for p in coord s0 w0 w1; do
    EP[$p]=$(endpoint "$D/$p.log") || exit 1
    case ${EP[$p]} in 127.0.0.1:*) ;; *) fail "$p's metrics endpoint ${EP[$p]} is not on loopback" ;; esac
    port=${EP[$p]#127.0.0.1:}
    listen=$(ss -Hltn "sport = :$port" | awk '{print $4}')
    [ "$listen" = "127.0.0.1:$port" ] || fail "$p's metrics port $port listens on '$listen', not 127.0.0.1 only"
done

# ---- 2. promtool and each role's series ------------------------------------------------------
# Scrapes wait until the job runs (the workers' series come after they join).
for _ in $(seq 100); do
    grep -q "progress step" "$D/coord.log" && break
    sleep 0.1
done
grep -q "progress step" "$D/coord.log" || fail "the job did not start within 10 s"
for p in coord s0 w0 w1; do
    curl -sf "http://${EP[$p]}/metrics" >"$T/$p.prom" || fail "GET http://${EP[$p]}/metrics failed ($p)"
    promtool check metrics <"$T/$p.prom" >"$T/$p.promtool" 2>&1 ||
        fail "promtool check metrics refuses $p's output: $(head -n 5 "$T/$p.promtool")"
    for want in '^wren_build_info{.*version="[^"]*"} 1$' '^process_resident_memory_bytes{.*} [1-9]' \
        '^wren_steps_total{' '^wren_epoch{'; do
        grep -q "$want" "$T/$p.prom" || fail "$p's metrics lack a line matching $want"
    done
done
grep -q '^wren_members{role="coordinator",kind="worker"} 2$' "$T/coord.prom" ||
    fail "the coordinator does not count 2 worker members: $(grep wren_members "$T/coord.prom")"
grep -q '^wren_messages_refused_total{role="coordinator",reason="malformed"} 0$' "$T/coord.prom" ||
    fail "the coordinator does not export its refusals by reason"
grep -q '^wren_pushes_waiting{role="shard",shard="0"} ' "$T/s0.prom" || fail "the shard does not export pushes waiting"
grep -q '^wren_step_duration_seconds_bucket{role="shard",shard="0",le="+Inf"} [1-9]' "$T/s0.prom" ||
    fail "the shard's step-time histogram counts no step"
for w in 0 1; do
    grep -q "^wren_loss{role=\"worker\",rank=\"[01]\"} " "$T/w$w.prom" || fail "worker $w does not export its loss"
    grep -q '^wren_accuracy{.*set="test"} ' "$T/w$w.prom" || fail "worker $w does not export accuracy"
    grep -q '^wren_bytes_total{.*direction="out",peer="shard"} [1-9]' "$T/w$w.prom" ||
        fail "worker $w does not count bytes sent to shards"
done

# ---- 3. a real Prometheus scrapes the job ---------------------------------------------------
PPORT=$(free_port)
cat >"$T/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: wren
    static_configs:
      - targets: ['${EP[coord]}', '${EP[s0]}', '${EP[w0]}', '${EP[w1]}']
EOF
promtool check config "$T/prometheus.yml" >"$T/promconfig.out" 2>&1 || fail "promtool refuses the generated config"
prometheus --config.file="$T/prometheus.yml" --storage.tsdb.path="$T/prom-data" \
    --web.listen-address="127.0.0.1:$PPORT" >"$T/prometheus.err" 2>&1 &
PROM=$!
STARTED+=("$PROM")
API="http://127.0.0.1:$PPORT/api/v1/query"
# query EXPR: the first result's value ("" when none yet).
query() {
    curl -sf --get "$API" --data-urlencode "query=$1" |
        python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")'
}
up="" v1=""
for _ in $(seq 300); do
    up=$(query 'sum(up{job="wren"})' 2>/dev/null)
    v1=$(query 'wren_steps_total{role="coordinator"}' 2>/dev/null)
    [ "$up" = 4 ] && [ -n "$v1" ] && break
    sleep 0.1
done
[ "$up" = 4 ] || fail "Prometheus has '$up' of 4 wren targets up after 30 s"
[ -n "$v1" ] || fail "Prometheus answers no wren_steps_total after 30 s"
# gt A B -> true when A > B
gt() { ! fge "$2" "$1"; }
v2=$v1
for _ in $(seq 100); do
    sleep 0.5
    v2=$(query 'wren_steps_total{role="coordinator"}')
    gt "$v2" "$v1" && break
done
gt "$v2" "$v1" || fail "wren_steps_total did not grow between queries ($v1, then $v2)"
n_series=$(curl -sf --get "$API" --data-urlencode 'query=count(wren_steps_total)' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["result"][0]["value"][1])')
[ "$n_series" = 4 ] || fail "Prometheus holds $n_series wren_steps_total series, expected 4 (one per process)"
# The Grafana dashboard (deploy/grafana): parses, names only exported series, and
# every query it makes has an answer from this job.
for p in "${!EP[@]}"; do curl -sf "http://${EP[$p]}/metrics" >"$T/$p.prom"; done
python3 "$ROOT/tests/integration/lib/dashboard-check.py" "$ROOT/deploy/grafana/wren-dashboard.json" "$API" \
    "$T"/*.prom >"$T/dashboard.out" 2>&1 || fail "the Grafana dashboard does not fit the metrics: $(cat "$T/dashboard.out")"
dash=$(tail -n 1 "$T/dashboard.out")
kill -TERM "$PROM"
wait "$PROM" 2>/dev/null
kill -TERM "$COORD"
wait "$COORD" 2>/dev/null

# ---- 4. a bad address is refused ------------------------------------------------------------
rc=0
"$BIN/wren-worker" --standalone --metrics "nohost:99999" model=synthetic:1000 steps=1 >"$T/bad.out" 2>&1 || rc=$?
[ "$rc" = "$WR_EXIT_CONFIG" ] || fail "--metrics nohost:99999 ended with $rc (expected $WR_EXIT_CONFIG)"
grep -q "nohost:99999" "$T/bad.out" || fail "the refusal does not name the address: $(cat "$T/bad.out")"

pass "promtool accepts the 4 endpoints (loopback only); Prometheus scraped them, wren_steps_total $v1 -> $v2; $dash"
