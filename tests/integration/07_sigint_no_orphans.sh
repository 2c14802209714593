#!/usr/bin/env bash
# Ctrl-C of wren-local (SIGINT to its process group, as a terminal sends it)
# stops the whole cluster: wren-local exits, and no wren-server or wren-worker
# it started is left running. Same for SIGTERM to wren-local alone.
source "$(dirname "$0")/lib/common.bash"
set -m  # background jobs get their own process group and keep SIGINT

ours() { pgrep -f -- "$T/wren-local" || true; }   # ipc socket paths live under $T

for sig in INT TERM; do
    mkdir -p "$T/logs"
    TMPDIR=$T "$ROOT/scripts/wren-local" --transport ipc --log-dir "$T/logs" -S 2 -n 2 \
        model=mlp steps=100000 progress_every=10 >"$T/$sig.out" 2>&1 &
    pid=$!
    STARTED+=("$pid")
    # Wait until the job is training (a progress line), at most 60 s.
    for _ in $(seq 300); do
        grep -q 'progress epoch' "$T/$sig.out" && break
        kill -0 "$pid" 2>/dev/null || fail "wren-local ended before training ($sig run)"
        sleep 0.2
    done
    grep -q 'progress epoch' "$T/$sig.out" || fail "no progress within 60 s ($sig run)"
    [ -n "$(ours)" ] || fail "cannot see the cluster's processes ($sig run)"
    if [ $sig = INT ]; then kill -INT -- -"$pid"; else kill -TERM "$pid"; fi
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && fail "wren-local still running 15 s after SIG$sig"
    wait "$pid"
    rc=$?
    [ "$rc" != "$WR_EXIT_OK" ] || fail "wren-local exited $rc after SIG$sig"
    sleep 0.5
    mapfile -t left < <(ours)
    if [ ${#left[@]} -gt 0 ]; then
        ps -o pid,args -p "$(IFS=,; echo "${left[*]}")" >&2
        kill -KILL "${left[@]}" 2>/dev/null
        fail "processes left running after SIG$sig of wren-local: ${left[*]}"
    fi
    echo "  SIG$sig: wren-local exited $rc, no process left"
done
pass "Ctrl-C and TERM of wren-local leave no orphans"
