#!/usr/bin/env bash
# The installed units under a real systemd (lib/sdbox.bash: the host's
# systemd 252 as PID 1 in namespaces, on an overlay of / that keeps nothing):
# `make install PREFIX=/usr/local` into it, the env examples with local
# addresses, CURVE keys as credentials, a small synthetic job (WREN_COORD_ARGS),
# job.conf.example's checkpoint_dir in the units' StateDirectory. Then:
# A. the job ends: every unit inactive with status 0, no restart; the units
#    share the dynamic user wren and /var/lib/wren.
# B. the coordinator killed (SIGKILL) mid-job: systemd restarts it, wren-unit
#    allows it (checkpoint_dir), it takes the job back; the job ends with 0.
# C. the coordinator ends with 1 (SIGTERM from outside systemd) and resume=on:
#    every unit restarts, the new job resumes from the newest checkpoint
#    (step > 0) and ends with 0.
# D. the same with resume=off: wren-unit refuses the coordinator's restart
#    (status 2, failed, not restarted again); the shards and workers, unable
#    to reach it (exit 6), stop at the start limit.
# E. a shard instance without its env file: status 2 naming the variables,
#    no restart. F. a worker instance without its key: 243, no restart.
# The shards' and workers' RestartSec is 2 s here (a drop-in; 15 s in the
# unit) and their connect timeout 2 s in D, to keep the test short.
source "$(dirname "$0")/lib/common.bash"
source "$ROOT/tests/integration/lib/sdbox.bash"

if ! sdbox_usable; then
    echo "SKIP $TEST_NAME: this machine cannot run systemd in namespaces (above)"
    exit 0
fi
sdbox_boot
R=$SDBOX_ROOT
echo "ok   systemd $(sdbox systemctl --version | head -n 1 | cut -d' ' -f2) runs as PID 1 in the box (host pid $SDBOX_PID)"

make -s -C "$ROOT" BUILD="$BUILD" install DESTDIR="$R" PREFIX=/usr/local >"$T/install.out" 2>&1 ||
    fail "make install into the box failed: $(tail -n 5 "$T/install.out")"
E=$R/etc/wren
mkdir -p "$E/keys"
chmod 700 "$E/keys"
: >"$E/allow.txt"
for n in coordinator shard0 shard1 worker0 worker1; do
    "$BIN/wren-server" keygen --dir "$E/keys" "$n" >>"$E/allow.txt" 2>/dev/null || fail "keygen $n failed"
done
SH=$R/usr/local/share/wren
cp "$SH/job.conf.example" "$E/job.conf"
cp "$SH/coordinator.env.example" "$E/coordinator.env"
cp "$SH/shard.env.example" "$E/shard-0.env"
cp "$SH/worker.env.example" "$E/worker.env"
# set_var FILE VAR VALUE (FILE inside /etc/wren of the box)
set_var() {
    grep -q "^$2=" "$E/$1" || fail "$1 has no $2= line"
    sed -i "s|^$2=.*|$2=$3|" "$E/$1"
}
for f in coordinator.env shard-0.env worker.env; do set_var "$f" WREN_COORD_ADDR tcp://127.0.0.1:7000; done
set_var shard-0.env WREN_SHARD_ADDR tcp://127.0.0.1:7001
for u in wren-shard@ wren-worker@; do
    mkdir -p "$R/etc/systemd/system/$u.service.d"
    printf '[Service]\nRestartSec=2s\n' >"$R/etc/systemd/system/$u.service.d/test.conf"
done
sdbox systemctl daemon-reload

JOB="shards=1 workers=2 min_workers=1 max_workers=2 model=synthetic:100000 progress_every=0"
UNITS=(wren-coordinator wren-shard@0 wren-worker@0 wren-worker@1)
CKPT=/var/lib/private/wren/checkpoints

# prop UNIT PROPERTY -> its value
prop() { sdbox systemctl show -p "$2" --value "$1"; }
# settled UNIT: inactive or failed, and not waiting to restart
settled() {
    local s
    s=$(prop "$1" ActiveState)
    [ "$s" = inactive ] || [ "$s" = failed ]
}
# await_settled SECONDS UNIT...: waits for every UNIT to settle
await_settled() {
    local limit=$1 u
    shift
    for _ in $(seq $((limit * 5))); do
        for u in "$@"; do
            if ! settled "$u"; then
                sleep 0.2
                continue 2
            fi
        done
        return 0
    done
    for u in "$@"; do
        settled "$u" || fail "$u has not settled within $limit s: $(prop "$u" ActiveState)/$(prop "$u" SubState)"
    done
}
# journal_has UNIT TEXT: the unit's journal since this scenario began says TEXT
# (grep reads it all: `grep -q` quits at the first match, journalctl then dies of
# SIGPIPE, and under pipefail a found line read as missing.)
journal_has() { sdbox journalctl --no-pager -o cat -u "$1" --since "@$SINCE" | grep -- "$2" >/dev/null; }
# expect_ok WHAT: every unit ended with 0 (Result success)
expect_ok() {
    local u
    for u in "${UNITS[@]}"; do
        [ "$(prop "$u" Result)/$(prop "$u" ExecMainStatus)" = success/0 ] ||
            fail "$1: $u ended $(prop "$u" Result) with status $(prop "$u" ExecMainStatus)"
    done
}
# scenario ARGS: a fresh start of every unit with WREN_COORD_ARGS = $JOB ARGS
scenario() {
    sdbox systemctl reset-failed >/dev/null 2>&1
    sdbox rm -rf "$CKPT"
    set_var coordinator.env WREN_COORD_ARGS "$JOB $1"
    SINCE=$(date +%s)
    sleep 1
    sdbox systemctl start "${UNITS[@]}" || fail "systemctl start failed"
}
# await_formed: the coordinator's job formed (training runs)
await_formed() {
    for _ in $(seq 100); do
        journal_has wren-coordinator "job formed" && return 0
        sleep 0.1
    done
    fail "the job did not form within 10 s"
}
# await_checkpoint WHAT: the job is under way: the coordinator's state file and a
# shard checkpoint after step 0 (step checkpoint_every of 10000) exist. A signal a
# fixed time after "job formed" may come before that checkpoint on a loaded
# machine (C would then resume from step 0) or after the job on a fast one.
await_checkpoint() {
    for _ in $(seq 300); do
        sdbox sh -c "ls $CKPT/coordinator* && ls $CKPT/shard0-* | grep -v 'shard0-0*\.ckpt'" >/dev/null 2>&1 &&
            return 0
        sleep 0.1
    done
    fail "$1: no coordinator state and shard checkpoint in $CKPT within 30 s"
}
# coord_signal SIG: SIG to the running coordinator (a fail when it is not running)
coord_signal() {
    local pid
    pid=$(prop wren-coordinator MainPID)
    [ "${pid:-0}" != 0 ] || fail "the coordinator is not running (it ended before the signal): $(coord_journal)"
    sdbox kill "-$1" "$pid"
}
# coord_journal: the coordinator's last journal lines of this scenario (for failures)
coord_journal() {
    sdbox journalctl --no-pager -o cat -u wren-coordinator --since "@$SINCE" | grep -v "stats from\|left (" |
        tail -n 30
}

# ---- A. a job that ends -------------------------------------------------------
scenario "steps=3000 checkpoint_every=500"
await_settled 60 "${UNITS[@]}"
expect_ok "A"
for u in "${UNITS[@]}"; do
    [ "$(prop "$u" NRestarts)" = 0 ] || fail "A: $u restarted after the job ended"
done
journal_has wren-coordinator "digest checks: [1-9][0-9]* passed, 0 failed" || fail "A: no passing digest checks"
# The dynamic user is released when the units stop: its UID (61184-65519) owns the files.
owners=$(sdbox sh -c "stat -c %u /var/lib/wren/worker-0.json /var/lib/wren/worker-1.json $CKPT/shard0-*" | sort -u)
if [ "$(echo "$owners" | wc -l)" != 1 ] || [ "$owners" -lt 61184 ] || [ "$owners" -gt 65519 ]; then
    fail "A: the files of /var/lib/wren are not owned by one dynamic UID: $owners"
fi
echo "ok   A: the job ended with 0 in all 4 units, none restarted; one dynamic user wren owns /var/lib/wren"

# ---- B. the coordinator killed ----------------------------------------------------
scenario "steps=10000 checkpoint_every=200"
await_formed
await_checkpoint "B"
coord_signal KILL
await_settled 90 "${UNITS[@]}"
expect_ok "B"
journal_has wren-coordinator "takes the running job back" ||
    fail "B: wren-unit did not allow the restart; the coordinator's journal: $(coord_journal)"
journal_has wren-coordinator "coordinator restarted: job 1" || fail "B: the coordinator did not take the job back"
echo "ok   B: SIGKILL mid-job: systemd restarted the coordinator, it took the job back, all ended with 0"

# ---- C. the coordinator ends with 1, resume = on ------------------------------------
scenario "steps=10000 checkpoint_every=200"
await_formed
await_checkpoint "C"
coord_signal TERM
await_settled 120 "${UNITS[@]}"
expect_ok "C"
journal_has wren-coordinator "resumes from the newest checkpoint" ||
    fail "C: wren-unit did not allow the restart; the coordinator's journal: $(coord_journal)"
journal_has wren-coordinator "the newest checkpoint every shard holds is step [1-9]" ||
    fail "C: the new job did not resume from a checkpoint after step 0"
for u in wren-shard@0 wren-worker@0; do
    journal_has "$u" "status 1" || fail "C: $u did not stop with the job's status 1"
done
echo "ok   C: exit 1 with resume=on: every unit restarted, the job resumed from a checkpoint and ended with 0"

# ---- D. the coordinator ends with 1, resume = off -----------------------------------
set_var shard-0.env WREN_SHARD_ARGS "--connect-timeout 2"
set_var worker.env WREN_WORKER_ARGS "--connect-timeout 2"
scenario "steps=1000000 resume=off checkpoint_every=0"
await_formed
coord_signal TERM
await_settled 120 "${UNITS[@]}"
[ "$(prop wren-coordinator ActiveState)/$(prop wren-coordinator ExecMainStatus)" = "failed/$WR_EXIT_CONFIG" ] ||
    fail "D: the coordinator is $(prop wren-coordinator ActiveState) with status $(prop wren-coordinator ExecMainStatus)"
[ "$(prop wren-coordinator NRestarts)" = 1 ] || fail "D: the coordinator restarted $(prop wren-coordinator NRestarts) times"
journal_has wren-coordinator "would start it again from step 0" || fail "D: wren-unit did not say why it refused"
for u in wren-shard@0 wren-worker@0 wren-worker@1; do
    [ "$(prop "$u" ActiveState)/$(prop "$u" ExecMainStatus)" = "failed/$WR_EXIT_NO_COORDINATOR" ] ||
        fail "D: $u is $(prop "$u" ActiveState) with status $(prop "$u" ExecMainStatus)"
done
echo "ok   D: exit 1 with resume=off: the coordinator's restart refused (status 2, failed);" \
    "the nodes gave up after $(prop wren-worker@0 NRestarts) restarts (status 6)"

# ---- E. an instance without its env file; F. one without its key ------------------
SINCE=$(date +%s)
sleep 1
sdbox systemctl start wren-shard@1 2>/dev/null || true  # Type=exec: started once wren-unit runs
await_settled 10 wren-shard@1
[ "$(prop wren-shard@1 ExecMainStatus)/$(prop wren-shard@1 NRestarts)" = "$WR_EXIT_CONFIG/0" ] ||
    fail "E: wren-shard@1 ended with $(prop wren-shard@1 ExecMainStatus) after $(prop wren-shard@1 NRestarts) restarts"
journal_has wren-shard@1 "WREN_COORD_ADDR WREN_SHARD_BIND WREN_SHARD_ADDR not set" ||
    fail "E: wren-unit did not name the missing variables"
echo "ok   E: wren-shard@1 without /etc/wren/shard-1.env: status 2 naming the variables, no restart"
sdbox systemctl start wren-worker@2 2>/dev/null || true  # fails before the exec
await_settled 10 wren-worker@2
[ "$(prop wren-worker@2 ExecMainStatus)/$(prop wren-worker@2 NRestarts)" = "243/0" ] ||
    fail "F: wren-worker@2 ended with $(prop wren-worker@2 ExecMainStatus) after $(prop wren-worker@2 NRestarts) restarts"
echo "ok   F: wren-worker@2 without /etc/wren/keys/worker2.key: systemd's 243 (CREDENTIALS), no restart"

pass "the installed units under systemd: a job ends for good; a killed coordinator takes the job back;" \
    "exit 1 resumes with resume=on and is refused without; a missing env file or key stops at once"
