#!/usr/bin/env bash
# server_smoke.sh — drives wren-server (coordinator + shards) with
# wren_fake_worker processes over ipc and tcp and checks the exit statuses
# (scripts/lib/exit-status.sh): normal end with digests passing, digest
# mismatch, dead node, registration timeout, config error; plus codecs fp32
# and exact.
# Usage: tests/tools/server_smoke.sh [BUILD_DIR]   (needs build/bin/wren-server, wren_fake_worker)
set -u
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib/exit-status.sh"
B=${1:-${BUILD:-build}}/bin
T=$(mktemp -d /tmp/wren-smoke.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$T"' EXIT
fail=0
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# run NAME EXPECT TRANSPORT NSHARDS "worker1 args|worker2 args|..." coordinator-overrides...
# EXPECT is the coordinator's expected exit status (a WR_EXIT_* value).
run() {
  local name=$1 expect=$2 tr=$3 ns=$4 wspec=$5; shift 5
  local d="$T/$name"; mkdir -p "$d"
  local ca
  if [ "$tr" = ipc ]; then ca="ipc://$d/coord"; else ca="tcp://127.0.0.1:$(port)"; fi
  IFS='|' read -r -a ws <<< "$wspec"
  local nw=${#ws[@]}
  "$B/wren-server" coordinator --bind "$ca" "shards=$ns" "workers=$nw" "$@" > "$d/coord.log" 2>&1 &
  local cp=$!
  for ((s = 0; s < ns; s++)); do
    local sb; if [ "$tr" = ipc ]; then sb="ipc://$d/s$s"; else sb="tcp://127.0.0.1:0"; fi
    "$B/wren-server" shard --coordinator "$ca" --bind "$sb" --connect-timeout 10 > "$d/s$s.log" 2>&1 &
    [ $s = 0 ] && local s0pid=$!
  done
  local i=0
  for w in "${ws[@]}"; do
    [ "$w" = none ] && { i=$((i+1)); continue; }
    # shellcheck disable=SC2086
    "$B/wren_fake_worker" --coordinator "$ca" $w > "$d/w$i.log" 2>&1 &
    i=$((i+1))
  done
  if [ -n "${KILL_SHARD_AFTER:-}" ]; then
    # after the job formed (the shards' start can take seconds on a loaded machine)
    (for _ in $(seq 300); do grep -q "job formed" "$d/coord.log" 2>/dev/null && break; sleep 0.1; done
     sleep "$KILL_SHARD_AFTER"; kill -KILL "$s0pid" 2>/dev/null || true) &
  fi
  local rc=0
  for _ in $(seq 600); do kill -0 $cp 2>/dev/null || break; sleep 0.1; done
  # 124 (timeout(1)'s status) marks a coordinator that had to be stopped.
  if kill -0 $cp 2>/dev/null; then kill $cp; rc=124; else wait $cp; rc=$?; fi
  sleep 0.5
  local extra=""
  case $expect in
    "$WR_EXIT_OK") grep -q "digest checks: [1-9][0-9]* passed, 0 failed" "$d/coord.log" || extra=" (no passing digest line)"
       grep -q "incomplete" "$d/coord.log" && extra="$extra (digest checks incomplete)"
       if grep -q -- --barrier <<< "$wspec" && [ "$(cat "$d"/w*.log | grep -c 'barrier 7 released')" != "$nw" ]; then extra="$extra (barrier not released to all)"; fi;;
    "$WR_EXIT_DIVERGED") grep -q "REPLICAS DIVERGED" "$d/coord.log" || extra=" (no divergence report)";;
    "$WR_EXIT_NODE_LOST") grep -q "is dead" "$d/coord.log" || extra=" (no dead-node report)"
       [ -n "${DEAD:-}" ] && ! grep -q "$DEAD" "$d/coord.log" && extra="$extra (dead node is not '$DEAD')";;
    "$WR_EXIT_FAILURE") [ -n "${EXPECT_LOG:-}" ] && ! grep -q "$EXPECT_LOG" "$d/coord.log" && extra=" (no '$EXPECT_LOG' in the log)";;
    "$WR_EXIT_REGISTER_TIMEOUT") grep -q "missing 1 of 3 workers" "$d/coord.log" || extra=" (no 'missing' report)";;
  esac
  if [ "$rc" = "$expect" ] && [ -z "$extra" ]; then
    echo "ok   $name (exit $rc)"
  else
    echo "FAIL $name: exit $rc, expected $expect$extra"; tail -n 8 "$d"/*.log; fail=1
  fi
  LAST=$d
  wait 2>/dev/null
}

# peak_rss NAME LOG MAX_MIB: the role's end-of-job "peak RSS X MiB" is at most MAX_MIB.
peak_rss() {
  local v; v=$(grep -o "peak RSS [0-9.]* MiB" "$2" | tail -1 | awk '{print $3}')
  if [ -n "$v" ] && awk -v v="$v" -v m="$3" 'BEGIN{exit !(v <= m)}'; then echo "ok   $1 (peak RSS $v MiB <= $3)"
  else echo "FAIL $1: peak RSS '${v:-?}' MiB, bound $3"; fail=1; fi
}

D=100000
run birder_1bit_ipc "$WR_EXIT_OK" ipc 2 "--d $D --barrier|--d $D --bad-push --barrier" steps=100 model=synthetic:$D digest_every=10
run birder_1bit_tcp "$WR_EXIT_OK" tcp 3 "--d $D|--d $D|--d $D|--d $D" steps=60 batch=128 model=synthetic:$D digest_every=7
run birder_exact "$WR_EXIT_OK" ipc 2 "--d $D|--d $D|--d $D" steps=50 batch=129 model=synthetic:$D broadcast=exact digest_every=5
run fp32_adam "$WR_EXIT_OK" ipc 2 "--d $D|--d $D" steps=50 model=synthetic:$D codec=fp32 digest_every=5
run fp32_sgdm_cosine "$WR_EXIT_OK" tcp 1 "--d 1000|--d 1000" steps=40 model=synthetic:1000 codec=fp32 optimizer=sgdm lr_schedule=cosine warmup_steps=5 wd=0.01 digest_every=4
run digest_mismatch "$WR_EXIT_DIVERGED" ipc 2 "--d $D|--d $D --corrupt-at 12" steps=100 model=synthetic:$D digest_every=5
run dead_worker "$WR_EXIT_NODE_LOST" ipc 2 "--d $D|--d $D --die-at 30" steps=100000 model=synthetic:$D heartbeat_interval=0.1 heartbeat_timeout=1.5
run register_timeout "$WR_EXIT_REGISTER_TIMEOUT" ipc 2 "--d $D|--d $D|none" register_timeout=2 model=synthetic:$D batch=120
run d_mismatch "$WR_EXIT_CONFIG" ipc 1 "--d $D|--d 5000" model=synthetic:$D register_timeout=5
run too_many_shards "$WR_EXIT_CONFIG" ipc 3 "--d 100" model=synthetic:100 register_timeout=5
# Hostile and broken peers (each a regression test; docs/ARCHITECTURE.md "Hardening"):
# PULL flood from a socket that never reads: one reply, the rest refused, memory bounded.
run pull_flood "$WR_EXIT_OK" ipc 1 "--d 1000000 --pull-flood 20000|--d 1000000" steps=30 model=synthetic:1000000 digest_every=5
peak_rss pull_flood_shard_rss "$LAST/s0.log" 200
# Oversized frames to the coordinator and a shard: dropped by the frame bound, not allocated.
run big_frame "$WR_EXIT_OK" tcp 1 "--d $D --big-frame 192|--d $D" steps=30 model=synthetic:$D digest_every=5
peak_rss big_frame_coord_rss "$LAST/coord.log" 120
peak_rss big_frame_shard_rss "$LAST/s0.log" 120
# Digests the book must refuse (step not digested, far outside the window).
run bad_digest "$WR_EXIT_OK" ipc 2 "--d $D --bad-digest|--d $D" steps=30 model=synthetic:$D digest_every=5
# The last digest arrives after the last LEAVE: waited for, checked, exit 0.
run late_digest "$WR_EXIT_OK" ipc 2 "--d $D --late-digest 1.5|--d $D" steps=30 model=synthetic:$D digest_every=5
# A check that never completes fails the job (status 1), not a silent pass.
EXPECT_LOG="digest checks incomplete" run missing_digest "$WR_EXIT_FAILURE" ipc 1 "--d $D --skip-last-digest|--d $D" steps=30 model=synthetic:$D digest_every=5 step_timeout=2
# Total steps from the coordinator: epochs over the workers' training-set size (nt = 1000, batch 100 -> 20 steps).
run total_steps_nt "$WR_EXIT_OK" ipc 2 "--d 1000 --nt 1000|--d 1000 --nt 1000" epochs=2 batch=100 model=synthetic:1000 codec=fp32 lr_schedule=cosine warmup_steps=3 digest_every=4
if grep -q ", 20 steps," "$LAST/coord.log"; then echo "ok   total_steps_nt_is_20"
else echo "FAIL total_steps_nt: coordinator did not compute 20 steps"; fail=1; fi
run nt_mismatch "$WR_EXIT_CONFIG" ipc 1 "--d 1000 --nt 1000|--d 1000 --nt 2000" model=synthetic:1000 register_timeout=5
# Membership epochs (docs/ARCHITECTURE.md): a worker that dies leaves the job at
# the next epoch; the others finish every step with digests agreeing.
run worker_lost_elastic "$WR_EXIT_OK" ipc 2 "--d $D|--d $D|--d $D --die-at 150" steps=400 min_workers=2 model=synthetic:$D digest_every=10 heartbeat_interval=0.2 heartbeat_timeout=1
for s in 0 1; do
  if grep -q "completed steps 1..400 of 400" "$LAST/s$s.log" && grep -q "epoch 2 from step" "$LAST/coord.log"; then
    echo "ok   worker_lost_elastic_shard${s}_every_step"
  else echo "FAIL worker_lost_elastic: shard $s did not complete all 400 steps in epoch 2"; fail=1; fi
done
# Below min_workers the job waits register_timeout for a joiner, then stops with status 5.
DEAD="on host fakehost is dead: its connection" run worker_lost_below_min "$WR_EXIT_NODE_LOST" ipc 1 "--d $D|--d $D --die-at 50" steps=100000 model=synthetic:$D heartbeat_interval=0.2 heartbeat_timeout=1 register_timeout=2
if grep -q "no worker joined within 2 s" "$LAST/coord.log"; then echo "ok   worker_lost_below_min_waited"
else echo "FAIL worker_lost_below_min: no 'no worker joined' line"; fail=1; fi
# A killed shard is always status 5 naming the shard, even when a worker's error arrives first.
for k in 1 2 3; do
  DEAD="/s0) is dead" KILL_SHARD_AFTER=1 run "kill_shard_$k" "$WR_EXIT_NODE_LOST" ipc 2 "--d $D|--d $D" steps=10000000 model=synthetic:$D heartbeat_interval=0.5 heartbeat_timeout=3 step_timeout=60
done
# A worker that does not read its broadcasts makes the shard wait for a free
# broadcast buffer; a SHUTDOWN from the coordinator (SIGTERM to it) or a
# SIGTERM to the shard must still stop the shard within seconds, not after
# step_timeout (60 s here).
stall_case() {
  local name=$1 target=$2 d="$T/$1"; mkdir -p "$d"
  "$B/wren-server" coordinator --bind "ipc://$d/c" shards=1 workers=2 model=synthetic:2000000 codec=fp32 \
      steps=100000 digest_every=0 step_timeout=60 > "$d/coord.log" 2>&1 &
  local cp=$!
  "$B/wren-server" shard --coordinator "ipc://$d/c" --bind "ipc://$d/s0" --connect-timeout 10 > "$d/s0.log" 2>&1 &
  local sp=$!
  "$B/wren_fake_worker" --coordinator "ipc://$d/c" --d 2000000 --stall-reads > "$d/w0.log" 2>&1 &
  "$B/wren_fake_worker" --coordinator "ipc://$d/c" --d 2000000 > "$d/w1.log" 2>&1 &
  local i waited=""
  for i in $(seq 300); do grep -q "broadcast buffer is still held" "$d/s0.log" && { waited=1; break; }; sleep 0.1; done
  if [ -z "$waited" ]; then echo "FAIL $name: the shard never waited for a broadcast buffer"; fail=1; tail -n 5 "$d"/*.log
    kill $cp $sp 2>/dev/null; wait 2>/dev/null; return; fi
  if [ "$target" = coordinator ]; then kill -TERM $cp; else kill -TERM $sp; fi
  local gone=""
  for i in $(seq 50); do kill -0 $sp 2>/dev/null || { gone=1; break; }; sleep 0.1; done
  if [ -n "$gone" ]; then wait $sp; local rc=$?
    if [ $rc = "$WR_EXIT_FAILURE" ]; then echo "ok   $name (shard stopped within $((i / 10)).$((i % 10)) s, exit $rc)"
    else echo "FAIL $name: shard exit $rc, expected $WR_EXIT_FAILURE"; fail=1; fi
  else echo "FAIL $name: shard still waiting 5 s after SIGTERM to the $target"; fail=1; kill -KILL $sp; fi
  kill $cp 2>/dev/null; wait 2>/dev/null
}
stall_case stall_shutdown coordinator
stall_case stall_signal shard

"$B/wren-server" coordinator lr=abc >/dev/null 2>&1; rc=$?
if [ $rc = "$WR_EXIT_CONFIG" ]; then echo "ok   bad_config (exit $rc)"
else echo "FAIL bad_config: exit $rc, expected $WR_EXIT_CONFIG"; fail=1; fi
exit $fail
