#!/usr/bin/env bash
# scripts/netsim: simulated hosts (network namespaces) with tbf-limited links.
# 1. Without root it says so and exits 2.
# 2. `up` of 3 hosts at 100mbit: the namespaces, addresses, no route out, tbf
#    on both sides of every link, and the root namespace's links and routes
#    unchanged. rate-check: one host's uplink, then one host's downlink,
#    saturated by tcp flows, carry the configured rate within 10%, and the
#    link counters over the whole check never exceed it. A second `up` of the
#    same name starts clean (counters from zero); `down` leaves nothing.
# 3. `run`: a mode=ps job (coordinator + shard on h0, workers on h1 and h2,
#    fp32 synthetic:1000000, so each step moves 8 MB through h0's link each
#    way) ends with status 0, digests agree, h0's link carried what the
#    workers pushed, and no step was faster than the link allows.
# 4. `run` stopped by TERM: status 143, the job's processes and the net gone.
#    `run` killed by SIGKILL leaves them; a new `run` of the same name starts
#    clean (a mode=allreduce job across two hosts: status 0, digests agree,
#    each host sent its share over its link), and nothing is left after it.
# Needs root: skipped (with a line saying so) otherwise.
source "$(dirname "$0")/lib/common.bash"

source "$(dirname "$0")/lib/netsim.bash"
netsim_test_init wt28x
RATE_BPS=100000000

left_ns() { ip netns list | awk -v p="^$N-" '$1 ~ p {print $1}' | tr '\n' ' '; }
# job_pids DIR: the pids of the processes a run started (its netsim.txt)
job_pids() { awk -F'\t' '$2 ~ /^pid / {sub(/^pid /, "", $2); print $2}' "$1/netsim.txt"; }
# alive_pids DIR: those still running (a zombie waiting for init to reap it is not)
alive_pids() {
    local p st
    for p in $(job_pids "$1"); do
        st=$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)
        [ -n "$st" ] && [ "$st" != Z ] && echo "$p"
    done
}
# wait_for FILE TEXT SECONDS: until FILE contains TEXT.
wait_for() {
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# ---- 1. not root ------------------------------------------------------------------
out=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$NETSIM" up --hosts 2 --rate 1gbit --name "$N" 2>&1)
rc=$?
[ "$rc" = "$WR_EXIT_CONFIG" ] || fail "netsim as nobody exited with $rc (expected $WR_EXIT_CONFIG)"
[[ $out == *"scripts/netsim needs root (network namespaces, tc)"* ]] || fail "netsim as nobody said: $out"

# ---- 2. up, rate-check, up again, down -----------------------------------------------
root_before=$(ip -br link; ip route; ip -6 route)
"$NETSIM" up --hosts 3 --rate 100mbit --name "$N" >"$T/up.out" 2>&1 || fail "netsim up failed: $(cat "$T/up.out")"
[ "$(left_ns)" != "" ] || fail "netsim up created no namespace"
for ns in "$N-sw" "$N-h0" "$N-h1" "$N-h2"; do
    [ -e "/run/netns/$ns" ] || fail "namespace $ns missing after up"
done
for i in 0 1 2; do
    ip -n "$N-h$i" -br addr show dev eth0 | grep -q "198.18.0.$((i + 1))/24" ||
        fail "$N-h$i has no 198.18.0.$((i + 1))/24 on eth0"
    [ -z "$(ip -n "$N-h$i" route show default)" ] || fail "$N-h$i has a default route"
    ip -n "$N-h$i" route get 192.0.2.1 >/dev/null 2>&1 && fail "$N-h$i has a route out of the simulated net"
    ip netns exec "$N-h$i" tc qdisc show dev eth0 | grep -q "tbf .*rate 100Mbit" || fail "no tbf 100Mbit on $N-h$i eth0"
    ip netns exec "$N-sw" tc qdisc show dev "h$i" | grep -q "tbf .*rate 100Mbit" || fail "no tbf 100Mbit on the bridge port h$i"
done
[ "$(ip -br link; ip route; ip -6 route)" = "$root_before" ] || fail "netsim up changed the root namespace's links or routes"

read -r _ tx0 _ < <("$NETSIM" bytes --name "$N" h1)
t0=$(date +%s.%N)
"$NETSIM" rate-check --name "$N" --seconds 3 >"$T/rate.out" 2>&1
rc=$?
t1=$(date +%s.%N)
read -r _ tx1 _ < <("$NETSIM" bytes --name "$N" h1)
up=$(awk '$2 == "up" {print $NF}' "$T/rate.out")
down=$(awk '$2 == "down" {print $NF}' "$T/rate.out")
{ [ -n "$up" ] && [ -n "$down" ]; } || fail "rate-check printed no up and down lines: $(cat "$T/rate.out")"
[ "$rc" = 0 ] || fail "rate-check: a saturated link is not within 10% of 100mbit: $(cat "$T/rate.out")"
python3 - "$up" "$down" "$tx0" "$tx1" "$t0" "$t1" "$RATE_BPS" <<'EOF' || fail "the link carried more than its rate"
import sys
up, down, tx0, tx1, t0, t1, bps = map(float, sys.argv[1:])
for name, r in (("up", up), ("down", down)):
    assert 0.9 <= r <= 1.1, f"{name} ratio {r}"
# Over the whole check (both phases, ~7 s) h1 sent at most the rate plus one burst.
sent = (tx1 - tx0) * 8
assert sent <= bps * (t1 - t0) + 262144 * 8, f"h1 sent {sent:.0f} bit in {t1 - t0:.2f} s"
print(f"h1 sent {sent / (t1 - t0) / 1e6:.1f} Mbit/s over the whole check")
EOF

"$NETSIM" up --hosts 3 --rate 100mbit --name "$N" >"$T/up2.out" 2>&1 || fail "a second netsim up of $N failed: $(cat "$T/up2.out")"
read -r _ tx _ < <("$NETSIM" bytes --name "$N" 1)
[ "${tx:-0}" -lt 100000 ] || fail "the second up did not start clean: h1 has sent $tx bytes"
"$NETSIM" down --name "$N" || fail "netsim down failed"
[ -z "$(left_ns)" ] || fail "namespaces left after down: $(left_ns)"

# ---- 3. a mode=ps job --------------------------------------------------------------
D=1000000
timeout 60 "$NETSIM" run --hosts 3 --rate 100mbit --name "$N" --shards 0 --workers 1,2 --out "$T/ps" \
    --timeout 40 "model=synthetic:$D" codec=fp32 optimizer=adam steps=6 digest_every=2 eval=off \
    >"$T/ps.out" 2>&1
rc=$?
[ "$rc" = "$WR_EXIT_OK" ] || fail "ps job through netsim exited with $rc: $(cat "$T/ps.out" "$T/ps/status" 2>/dev/null)"
[ -z "$(left_ns)" ] || fail "namespaces left after run: $(left_ns)"
grep -q 'digest checks: [1-9][0-9]* passed, 0 failed' "$T/ps/logs/coordinator.log" ||
    fail "ps job: no agreeing digest checks: $(grep 'digest checks' "$T/ps/logs/coordinator.log")"
for i in 0 1; do [ -f "$T/ps/sum/worker-$i.json" ] || fail "ps job: worker $i wrote no summary"; done
python3 - "$T/ps" "$D" "$RATE_BPS" <<'EOF' || fail "ps job: the link figures are off (above)"
import json, sys
out, d, bps = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
rows = [l.rstrip("\n").split("\t") for l in open(f"{out}/bytes.tsv")][1:]
h0 = next(r for r in rows if r[0].endswith("-h0"))
steps, rx = int(h0[4]), int(h0[3])
assert steps == 6, f"steps {steps}"
need = steps * 2 * 4 * d  # two workers push 4 bytes per parameter each step
assert rx >= need, f"h0 received {rx} B, the pushes alone are {need} B"
s = json.load(open(f"{out}/sum/worker-0.json"))
floor = 2 * 4 * d * 8 / bps * 1000  # ms to carry one step's pushes into h0
assert s["step_ms_median"] >= 0.9 * floor, f"median step {s['step_ms_median']:.0f} ms < link floor {floor:.0f} ms"
print(f"ps job: h0 received {rx / steps / 1e6:.2f} MB/step; median step {s['step_ms_median']:.0f} ms, link floor {floor:.0f} ms")
EOF

# ---- 4. a run stopped by TERM, one killed by SIGKILL, then a clean run -------------
LONG=("model=synthetic:$D" codec=fp32 optimizer=adam steps=100000 eval=off)
"$NETSIM" run --hosts 3 --rate 100mbit --name "$N" --shards 0 --workers 1,2 --out "$T/term" \
    --timeout 40 "${LONG[@]}" >"$T/term.out" 2>&1 &
pid=$!
STARTED+=("$pid")
wait_for "$T/term/logs/coordinator.log" "job formed" 20 || fail "TERM case: the job did not form: $(cat "$T/term.out")"
kill -TERM "$pid"
wait "$pid"
rc=$?
[ "$rc" = 143 ] || fail "run stopped by TERM exited with $rc (expected 143)"
[ -z "$(alive_pids "$T/term")" ] || fail "TERM case: job processes left: $(alive_pids "$T/term")"
[ -z "$(left_ns)" ] || fail "TERM case: namespaces left: $(left_ns)"

"$NETSIM" run --hosts 3 --rate 100mbit --name "$N" --shards 0 --workers 1,2 --out "$T/kill" \
    --timeout 40 "${LONG[@]}" >"$T/kill.out" 2>&1 &
pid=$!
STARTED+=("$pid")
wait_for "$T/kill/logs/coordinator.log" "job formed" 20 || fail "KILL case: the job did not form: $(cat "$T/kill.out")"
{ kill -KILL "$pid" && wait "$pid"; } 2>/dev/null
[ -n "$(alive_pids "$T/kill")" ] || fail "KILL case: expected the job's processes to outlive a SIGKILLed run"

timeout 60 "$NETSIM" run --hosts 3 --rate 100mbit --name "$N" --workers 1,1,2,2 --out "$T/ar" --timeout 40 \
    mode=allreduce allreduce_algo=hierarchical codec=birder "model=synthetic:$D" steps=6 digest_every=2 \
    eval=off >"$T/ar.out" 2>&1
rc=$?
[ -z "$(alive_pids "$T/kill")" ] || fail "the run after a SIGKILLed one left its processes: $(alive_pids "$T/kill")"
[ "$rc" = "$WR_EXIT_OK" ] || fail "allreduce job through netsim exited with $rc: $(cat "$T/ar.out" "$T/ar/status" 2>/dev/null)"
grep -q 'digest checks: [1-9][0-9]* passed, 0 failed' "$T/ar/logs/coordinator.log" ||
    fail "allreduce job: no agreeing digest checks"
# Each host's two workers send their node's bits to the other node: (N - 1) x d/8 per step.
awk -F'\t' -v min=$((D / 8)) '$1 ~ /-h[12]$/ && $6 < min {bad = 1; print $1 " sent " $6 " B/step"} END {exit bad}' \
    "$T/ar/bytes.tsv" || fail "allreduce job: a host sent less than d/8 per step over its link"
[ -z "$(left_ns)" ] || fail "namespaces left at the end: $(left_ns)"
pass "100mbit links: saturated up $up, down $down of the rate; ps and allreduce jobs formed and finished through netsim; TERM and SIGKILL cleaned up"
