#!/usr/bin/env bash
# scripts/wren-local's bookkeeping for elastic jobs, against fake binaries
# (WREN_BIN: shell scripts that log like wren and end when told to), so it
# tests the launcher alone, whatever the real programs do:
#  1. --run-dir holds the coordinator's address, the transport, the launcher's
#     pid and each process's pid and log; min_workers/max_workers reach the
#     coordinator; `add 2` starts worker2 and worker3 with the same options as
#     the others; `scale 3` SIGTERMs the highest-numbered live worker, then
#     `remove` the one below, and `scale 2` has nothing to do; a worker killed with SIGKILL and the removed
#     ones (exit 0) do not fail a job whose coordinator ends with 0;
#     `restart-shard 0` kills shard0 and, once the coordinator's log says it
#     waits for a shard to take its place, starts shard0-r1 with the same
#     command line, and the killed shard does not fail the job either;
#     `restart-coordinator` kills the coordinator (coordinator-k1.status 137)
#     and starts it again with the same command line, its log continued, and
#     the new one's status is the job's; nothing is left running and every
#     NAME.status is written.
#  2. an added worker that fails by itself (exit 1) fails the job even though
#     the coordinator ends with 0; the client's errors: a bad K or scale
#     without N (2), no running launcher (1), a job already over (1).
#  3. `scale 3` of a 1-worker job starts 2; TERM to wren-local stops them too.
source "$(dirname "$0")/lib/common.bash"

FAKE=$T/fakebin
CTL=$T/ctl
mkdir -p "$FAKE" "$CTL"
export FAKE_CTL=$CTL
# wren-server coordinator|shard ...: ends with the status in $CTL/coord-exit
# (the launcher's config check, --print-config, passes at once).
cat >"$FAKE/wren-server" <<'EOF'
#!/usr/bin/env bash
case " $* " in *" --print-config "*) exit 0 ;; esac
role=$1
echo "$*" >"$FAKE_CTL/argv.$role.$$"
[ "$role" = coordinator ] && echo "00:00:00.000 coordinator [info] listening on $3" >&2
until [ -f "$FAKE_CTL/coord-exit" ]; do sleep 0.1; done
exit "$(cat "$FAKE_CTL/coord-exit")"
EOF
# wren-worker ...: refuses to start while $CTL/refuse exists (exit 1); on
# TERM says it leaves and exits 0; else ends with the coordinator.
cat >"$FAKE/wren-worker" <<'EOF'
#!/usr/bin/env bash
echo "$*" >"$FAKE_CTL/argv.worker.$$"
if [ -f "$FAKE_CTL/refuse" ]; then echo "00:00:00.000 worker [error] coordinator refused" >&2; exit 1; fi
trap 'echo "00:00:00.000 worker [info] leaving the job after step 7 (signal)" >&2; exit 0' TERM
echo "00:00:00.000 worker [info] registering" >&2
until [ -f "$FAKE_CTL/coord-exit" ]; do sleep 0.1; done
exit "$(cat "$FAKE_CTL/coord-exit")"
EOF
chmod +x "$FAKE/wren-server" "$FAKE/wren-worker"
WL=$ROOT/scripts/wren-local
RUN=$T/run

# launch NAME args...: wren-local in the background on the fakes; waits for
# its run directory to name it (launcher.pid) and sets JOB_PID.
launch() {
    local name=$1
    shift
    rm -f "$CTL/coord-exit" "$CTL/refuse"
    WREN_BIN=$FAKE TMPDIR=$T "$WL" --run-dir "$RUN" --transport ipc "$@" >"$T/$name.out" 2>&1 &
    JOB_PID=$!
    STARTED+=("$JOB_PID")
    for _ in $(seq 100); do
        [ -f "$RUN/launcher.pid" ] && break
        kill -0 "$JOB_PID" 2>/dev/null || fail "$name: wren-local ended at start"
        sleep 0.1
    done
    [ "$(cat "$RUN/launcher.pid" 2>/dev/null)" = "$JOB_PID" ] || fail "$name: no launcher.pid naming wren-local"
}
# finish STATUS: the fake coordinator ends with STATUS; waits for wren-local, sets RC.
finish() {
    echo "$1" >"$CTL/coord-exit"
    for _ in $(seq 150); do kill -0 "$JOB_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$JOB_PID" 2>/dev/null && fail "wren-local still running 15 s after the coordinator ended"
    wait "$JOB_PID"
    RC=$?
}
pid_of() { cat "$RUN/$1.pid" 2>/dev/null; }
# wait_status NAME: waits until wren-local wrote NAME.status, prints it.
wait_status() {
    for _ in $(seq 100); do [ -f "$RUN/$1.status" ] && break; sleep 0.1; done
    cat "$RUN/$1.status" 2>/dev/null || fail "no $1.status in the run directory"
}
# no_leftovers: no process named by a pid file of the run directory is alive.
no_leftovers() {
    local f pid
    for f in "$RUN"/*.pid; do
        pid=$(cat "$f")
        if kill -0 "$pid" 2>/dev/null && grep -q "$FAKE" "/proc/$pid/cmdline" 2>/dev/null; then
            kill -KILL "$pid"
            fail "$(basename "$f" .pid) (pid $pid) left running"
        fi
    done
}

# ---- 1. add, remove, a SIGKILL, the bookkeeping ------------------------------------
launch one -S 1 -n 2 min_workers=1 max_workers=4
[ "$(cat "$RUN/transport")" = ipc ] || fail "transport file: '$(cat "$RUN/transport")'"
[ "$(cat "$RUN/coordinator")" = "ipc://$RUN/coordinator.sock" ] || fail "coordinator file: '$(cat "$RUN/coordinator")'"
grep -q "run directory $RUN" "$T/one.out" || fail "wren-local did not print its run directory"
argv=$(cat "$CTL"/argv.coordinator.*)
for kv in min_workers=1 max_workers=4 workers=2; do
    [[ " $argv " == *" $kv "* ]] || fail "the coordinator was not given $kv: $argv"
done
for n in coordinator shard0 worker0 worker1; do
    kill -0 "$(pid_of $n)" 2>/dev/null || fail "$n.pid does not name a live process"
    [ -f "$RUN/$n.log" ] || fail "no $n.log in the run directory"
done
out=$("$WL" add --run-dir "$RUN" 2) || fail "add 2 failed: $out"
for n in worker2 worker3; do
    grep -q "started $n (pid $(pid_of $n)" <<<"$out" || fail "add 2 did not report $n: $out"
    kill -0 "$(pid_of $n)" 2>/dev/null || fail "added $n is not running"
done
for _ in $(seq 50); do [ -f "$CTL/argv.worker.$(pid_of worker3)" ] && break; sleep 0.1; done
same_opts() { sed -E 's/--summary [^ ]*//' "$CTL/argv.worker.$(pid_of "$1")"; }
[ "$(same_opts worker3)" = "$(same_opts worker0)" ] ||
    fail "worker3's options differ: '$(same_opts worker3)' vs worker0's '$(same_opts worker0)'"
out=$("$WL" scale --run-dir "$RUN" 3) || fail "scale 3 failed: $out"
grep -q "worker3 (pid $(pid_of worker3))" <<<"$out" || fail "scale 3 of 4 did not remove worker3: $out"
[ "$(wait_status worker3)" = 0 ] || fail "removed worker3 ended with $(cat "$RUN/worker3.status")"
grep -q 'leaving the job' "$RUN/worker3.log" || fail "worker3's log has no 'leaving' line"
out=$("$WL" remove --run-dir "$RUN" 1) || fail "second remove failed: $out"
grep -q "worker2 (pid" <<<"$out" || fail "the second remove did not pick worker2: $out"
[ "$(wait_status worker2)" = 0 ] || fail "removed worker2 ended with $(cat "$RUN/worker2.status")"
out=$("$WL" scale --run-dir "$RUN" 2) || fail "scale 2 (of 2) failed: $out"
grep -q '2 workers live already' <<<"$out" || fail "scale 2 of 2 live: $out"
old_shard=$(pid_of shard0)
"$WL" restart-shard --run-dir "$RUN" 0 >"$T/restart.out" 2>&1 &
rs=$!
[ "$(wait_status shard0)" = 137 ] || fail "the restarted shard0's status: $(cat "$RUN/shard0.status")"
sleep 0.5
[ -f "$RUN/shard0-r1.pid" ] && fail "shard0-r1 started before the coordinator reported the loss"
echo "00:00:00.000 coordinator [warn] shard 0 is dead; waiting up to 30 s (register_timeout) for a shard to take its place" \
    >>"$RUN/coordinator.log"
wait "$rs" || fail "restart-shard 0 failed: $(cat "$T/restart.out")"
out=$(cat "$T/restart.out")
grep -q "killed shard0 (pid $old_shard, SIGKILL); started shard0-r1 (pid $(pid_of shard0-r1)" <<<"$out" ||
    fail "restart-shard 0: $out"
for _ in $(seq 50); do [ -f "$CTL/argv.shard.$(pid_of shard0-r1)" ] && break; sleep 0.1; done
[ "$(cat "$CTL/argv.shard.$(pid_of shard0-r1)")" = "$(cat "$CTL/argv.shard.$old_shard")" ] ||
    fail "shard0-r1's command line differs from shard0's"
"$WL" restart-shard --run-dir "$RUN" >/dev/null 2>&1
rc=$?
[ "$rc" = "$WR_EXIT_CONFIG" ] || fail "restart-shard without S: status $rc (expected 2)"
"$WL" restart-shard --run-dir "$RUN" 3 >/dev/null 2>&1
rc=$?
[ "$rc" = "$WR_EXIT_FAILURE" ] || fail "restart-shard 3 (no such shard): status $rc (expected 1)"
old_coord=$(pid_of coordinator)
out=$("$WL" restart-coordinator --run-dir "$RUN") || fail "restart-coordinator failed: $out"
new_coord=$(pid_of coordinator)
[ "$new_coord" != "$old_coord" ] || fail "restart-coordinator: coordinator.pid still names pid $old_coord"
grep -q "killed the coordinator (pid $old_coord, SIGKILL); started it again (pid $new_coord" <<<"$out" ||
    fail "restart-coordinator: $out"
[ "$(cat "$RUN/coordinator-k1.status")" = 137 ] || fail "the killed coordinator's status: $(cat "$RUN/coordinator-k1.status")"
[ -f "$RUN/coordinator.status" ] && fail "coordinator.status written while the new coordinator runs"
for _ in $(seq 50); do [ -f "$CTL/argv.coordinator.$new_coord" ] && break; sleep 0.1; done
[ "$(cat "$CTL/argv.coordinator.$new_coord")" = "$(cat "$CTL/argv.coordinator.$old_coord")" ] ||
    fail "the restarted coordinator's command line differs from the first one's"
for _ in $(seq 50); do [ "$(grep -c 'listening on' "$RUN/coordinator.log")" = 2 ] && break; sleep 0.1; done
[ "$(grep -c 'listening on' "$RUN/coordinator.log")" = 2 ] || fail "coordinator.log was not continued: $(cat "$RUN/coordinator.log")"
"$WL" restart-coordinator --run-dir "$RUN" 1 >/dev/null 2>&1
rc=$?
[ "$rc" = "$WR_EXIT_CONFIG" ] || fail "restart-coordinator 1: status $rc (expected 2)"
kill -KILL "$(pid_of worker1)"
[ "$(wait_status worker1)" = 137 ] || fail "worker1 (SIGKILL) status: $(cat "$RUN/worker1.status")"
finish 0
[ "$RC" = "$WR_EXIT_OK" ] || fail "SIGKILL of a worker, 2 removed, a killed coordinator, the new one 0: wren-local exited $RC (expected 0)"
grep -q 'worker1 was killed by SIGKILL' "$T/one.out" || fail "wren-local did not say worker1 was killed"
for n in coordinator shard0-r1 worker0; do [ "$(cat "$RUN/$n.status")" = 0 ] || fail "$n.status is not 0"; done
[ -f "$RUN/launcher.pid" ] && fail "launcher.pid left after the end"
no_leftovers
"$WL" add --run-dir "$RUN" >"$T/late.out" 2>&1
rc=$?
[ "$rc" = "$WR_EXIT_FAILURE" ] || fail "add after the job ended: status $rc (expected 1)"
grep -q 'no longer running' "$T/late.out" || fail "add after the end: $(cat "$T/late.out")"
echo "  add 2, scale 3, remove, restart-shard 0, restart-coordinator, SIGKILL of worker1, coordinator 0: wren-local 0, statuses recorded"

# ---- 2. an added worker failing by itself; client errors -----------------------------
launch two -S 1 -n 1
"$WL" add --run-dir "$RUN" 0 >/dev/null 2>&1
rc=$?
[ "$rc" = "$WR_EXIT_CONFIG" ] || fail "add 0: status $rc (expected 2)"
"$WL" remove --run-dir "$RUN" x >/dev/null 2>&1
rc=$?
[ "$rc" = "$WR_EXIT_CONFIG" ] || fail "remove x: status $rc (expected 2)"
"$WL" scale --run-dir "$RUN" >/dev/null 2>&1
rc=$?
[ "$rc" = "$WR_EXIT_CONFIG" ] || fail "scale without N: status $rc (expected 2)"
"$WL" remove --run-dir "$T/nowhere" >/dev/null 2>&1
rc=$?
[ "$rc" = "$WR_EXIT_FAILURE" ] || fail "remove in a dir without a launcher: status $rc (expected 1)"
touch "$CTL/refuse"
"$WL" add --run-dir "$RUN" >/dev/null || fail "add (refused worker) failed at the launcher"
[ "$(wait_status worker1)" = 1 ] || fail "the refused worker1's status: $(cat "$RUN/worker1.status")"
finish 0
[ "$RC" = "$WR_EXIT_FAILURE" ] || fail "an added worker exiting 1 by itself: wren-local exited $RC (expected 1)"
no_leftovers
echo "  a worker's own exit 1 fails the job; bad K is 2, no launcher is 1"

# ---- 3. TERM of wren-local stops the added workers ------------------------------------
launch three -S 1 -n 1
out=$("$WL" scale --run-dir "$RUN" 3) || fail "scale 3 failed: $out"
grep -q 'started worker2 (pid' <<<"$out" || fail "scale 3 of 1 did not start worker1 and worker2: $out"
kill -TERM "$JOB_PID"
for _ in $(seq 150); do kill -0 "$JOB_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$JOB_PID" 2>/dev/null && fail "wren-local still running 15 s after TERM"
wait "$JOB_PID"
rc=$?
[ "$rc" = 143 ] || fail "wren-local exited $rc after TERM (expected 143)"
no_leftovers
for n in worker1 worker2; do [ -f "$RUN/$n.status" ] || fail "no $n.status after TERM"; done
pass "run directory, add/remove/scale, exit statuses and clean-up of added workers"
