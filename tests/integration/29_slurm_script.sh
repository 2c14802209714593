#!/usr/bin/env bash
# deploy/slurm/wren.sbatch's own logic, without Slurm: the script runs under a
# fake scontrol, srun and ss (on PATH) and fake wren programs that log their
# command lines (keygen is the real one). tests/slurm/run.sh (make test-slurm)
# runs the script under a real Slurm.
# 1. 3 nodes x 2 tasks: coordinator on the batch node with shards=3 workers=6
#    batch=126, advertised at its node's address; one shard per node, each
#    advertising its own node's address; six workers; exit 0; keys removed;
#    a process beside the script in its process group survives.
# 2. the coordinator exits 5 while the shards and workers linger: exit 5, the
#    lingering steps stopped after WREN_GRACE.
# 3. refusals before anything starts (exit 2, no srun): batch= smaller than
#    the tasks (argument, and in --config FILE), workers= given, no task count,
#    a node at a loopback address in a multi-node job, WREN_SHARDS too large,
#    a WREN_KEY_DIR that exists (the script would remove it at the end).
# 4. one node at 127.0.0.1 runs (loopback is fine on one host); the batch
#    node whose name maps to 127.0.1.1 (Debian's /etc/hosts) advertises the
#    first address of `hostname -I` instead.
source "$(dirname "$0")/lib/common.bash"

SBATCH=${WREN_SBATCH:-$ROOT/deploy/slurm/wren.sbatch}
FAKE=$T/fake
mkdir -p "$FAKE/path" "$FAKE/bin" "$T/job"
CALLS=$T/calls.log

# scontrol: `show hostnames LIST` (LIST = node names separated by commas) and
# `show node -o NAME` (NodeAddr from FAKE_ADDR_<NAME>, else the name).
cat >"$FAKE/path/scontrol" <<'EOF'
#!/usr/bin/env bash
case "$1 $2" in
    "show hostnames") tr ',' '\n' <<<"$3" ;;
    "show node") a=FAKE_ADDR_$4; echo "NodeName=$4 Arch=x86_64 NodeAddr=${!a:-$4} NodeHostName=$4" ;;
    *) echo "fake scontrol: $*" >&2; exit 1 ;;
esac
EOF
# srun: logs its options, then runs the command once per task (passing TERM
# on to them) with
# SLURMD_NODENAME and SLURM_PROCID set: -w NODE or the first --nodes nodes
# one task each (--ntasks-per-node=1), else FAKE_PER_NODE tasks per node.
cat >"$FAKE/path/srun" <<'EOF'
#!/usr/bin/env bash
name="" nodes=0 ntasks=1 w="" per=${FAKE_PER_NODE:-1}
while [[ $1 == -* ]]; do
    case $1 in
        --job-name=*) name=${1#*=} ;; --nodes=*) nodes=${1#*=} ;; --ntasks=*) ntasks=${1#*=} ;;
        --ntasks-per-node=*) per=${1#*=} ;; -w) w=$2 && shift ;;
    esac
    shift
done
echo "srun $name nodes=$nodes ntasks=$ntasks w=$w" >>"$FAKE_CALLS"
mapfile -t all < <(tr ',' '\n' <<<"$SLURM_JOB_NODELIST")
pids=()
trap 'kill -TERM "${pids[@]}" 2>/dev/null; exit 143' TERM  # as srun: to the tasks
for ((i = 0; i < ntasks; i++)); do
    node=${w:-${all[i / per]}}
    SLURMD_NODENAME=$node SLURM_PROCID=$i "$@" &
    pids+=("$!")
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
exit "$rc"
EOF
printf '#!/bin/sh\necho "LISTEN 0 100 *:7000 *:*"\n' >"$FAKE/path/ss"
# The wren programs: keygen is real; the others log "NODE: command line" (and
# their pids to calls.log.pids) and run FAKE_<ROLE>_SECONDS, then exit with
# FAKE_<ROLE>_STATUS.
cat >"$FAKE/bin/wren-server" <<'EOF'
#!/usr/bin/env bash
[ "$1" = keygen ] && exec "$REAL_BIN/wren-server" "$@"
echo "$SLURMD_NODENAME: wren-server $*" >>"$FAKE_CALLS"
s=FAKE_${1^^}_SECONDS st=FAKE_${1^^}_STATUS
trap 'kill "$p"; exit 143' TERM
sleep "${!s:-0.2}" &
p=$!
echo "$$ $p" >>"$FAKE_CALLS.pids"
wait "$p"
exit "${!st:-0}"
EOF
cat >"$FAKE/bin/wren-worker" <<'EOF'
#!/usr/bin/env bash
echo "$SLURMD_NODENAME: wren-worker $*" >>"$FAKE_CALLS"
trap 'kill "$p"; exit 143' TERM
sleep "${FAKE_WORKER_SECONDS:-0.2}" &
p=$!
echo "$$ $p" >>"$FAKE_CALLS.pids"
wait "$p"
exit "${FAKE_WORKER_STATUS:-0}"
EOF
chmod +x "$FAKE"/path/* "$FAKE"/bin/*

# running PID: PID runs (a zombie waiting for init to reap it does not).
running() {
    local st
    st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)
    [ -n "$st" ] && [ "$st" != Z ]
}

# run_job NODES NTASKS [key=value...]: the script as sbatch would run it on
# the first of NODES (comma-separated), in its own process group beside a
# sleeping sibling; sets RC, OUT (its output) and SIB (the sibling's pid).
# Extra environment (FAKE_*, WREN_*) is passed through.
run_job() {
    local nodes=$1 ntasks=$2
    shift 2
    : >"$CALLS"
    : >"$CALLS.pids"
    OUT=$T/job.out
    (
        cd "$T/job" || exit 1
        export PATH="$FAKE/path:$PATH" FAKE_CALLS=$CALLS REAL_BIN=$BIN WREN_BIN=$FAKE/bin
        export SLURM_JOB_ID=77 SLURM_JOB_NODELIST=$nodes SLURMD_NODENAME=${nodes%%,*}
        export SLURM_JOB_NUM_NODES=$(($(tr -cd , <<<"$nodes" | wc -c) + 1))
        [ "$ntasks" = - ] || export SLURM_NTASKS=$ntasks
        # shellcheck disable=SC2016  # expanded by the inner bash
        exec setsid bash -c 'sleep 60 & echo $! >"$1/sib.pid"; bash "$2" "${@:3}"' _ "$T" "$SBATCH" "$@"
    ) >"$OUT" 2>&1
    RC=$?
    SIB=$(cat "$T/sib.pid")
    running "$SIB" || fail "the sibling of the script in its process group was killed"
    kill "$SIB"
}
# refused WHAT TEXT: the last run exited 2 with TEXT and started no step.
refused() {
    [ "$RC" = "$WR_EXIT_CONFIG" ] || fail "$1: exited with $RC (expected $WR_EXIT_CONFIG): $(cat "$OUT")"
    grep -qF "$2" "$OUT" || fail "$1: the output does not say '$2': $(cat "$OUT")"
    grep -q srun "$CALLS" && fail "$1: started steps: $(cat "$CALLS")"
    [ -z "$(ls -A "$T/job")" ] || fail "$1: left files: $(ls -A "$T/job")"
}
called() { grep -qF -- "$1" "$CALLS" || fail "$2: no '$1' in the calls: $(cat "$CALLS")"; }

# ---- 1. three nodes x 2 tasks ------------------------------------------------------
export FAKE_ADDR_n0=10.9.0.1 FAKE_ADDR_n1=10.9.0.2 FAKE_ADDR_n2=10.9.0.3 FAKE_PER_NODE=2
run_job n0,n1,n2 6 model=synthetic:1000 steps=3
[ "$RC" = 0 ] || fail "3x2: exited with $RC: $(cat "$OUT")"
called "n0: wren-server coordinator --bind tcp://*:7000 --advertise tcp://10.9.0.1:7000" 3x2
called "shards=3 workers=6 batch=126 model=synthetic:1000 steps=3" 3x2
for i in 0 1 2; do
    called "n$i: wren-server shard --coordinator tcp://10.9.0.1:7000 --key $T/job/wren-keys-77/s$i.key" 3x2
    called "--bind tcp://*:7001 --advertise tcp://10.9.0.$((i + 1)):7001" "3x2 shard $i"
    [ "$(grep -c "^n$i: wren-worker" "$CALLS")" = 2 ] || fail "3x2: not 2 workers on n$i: $(cat "$CALLS")"
done
called "srun wren-coordinator nodes=1 ntasks=1 w=n0" 3x2
called "srun wren-shards nodes=3 ntasks=3" 3x2
called "srun wren-workers nodes=0 ntasks=6" 3x2
grep -q "the coordinator exited with status 0" "$OUT" || fail "3x2: no status line: $(cat "$OUT")"
[ -z "$(ls -A "$T/job")" ] || fail "3x2: left files (the keys?): $(ls -A "$T/job")"
pass "3 nodes x 2 tasks: placement, per-node --advertise, batch 126, exit 0, keys removed, sibling alive"

# ---- 2. the coordinator fails while the others linger -------------------------------
FAKE_COORDINATOR_STATUS=5 FAKE_SHARD_SECONDS=60 FAKE_WORKER_SECONDS=60 WREN_GRACE=1 \
    run_job n0,n1,n2 6 model=synthetic:1000
[ "$RC" = "$WR_EXIT_NODE_LOST" ] || fail "coordinator 5: exited with $RC: $(cat "$OUT")"
grep -q "still running after 1 s: stopping it" "$OUT" || fail "coordinator 5: lingering steps not stopped: $(cat "$OUT")"
sleep 0.5
left=""
for p in $(tr -s " " "\n" <"$CALLS.pids"); do running "$p" && left+="$p "; done
if [ -n "$left" ]; then
    # shellcheck disable=SC2086  # one pid per word; ours, by pid
    kill $left
    fail "coordinator 5: left running: $left"
fi
pass "coordinator status 5: exit 5, the lingering shards and workers stopped after WREN_GRACE"

# ---- 3. refusals -------------------------------------------------------------------------
run_job n0 3 batch=2
refused "batch=2 for 3 tasks" "batch 2 is smaller than the 3 workers"
printf 'lr = 0.01\nbatch = 2  # too small\n' >"$T/job.conf"
run_job n0 3 --config "$T/job.conf"
refused "batch 2 in --config" "batch 2 is smaller than the 3 workers"
run_job n0 3 workers=4
refused "workers=4" "argument 'workers=4': the allocation sets the worker and shard counts"
run_job n0 -
refused "no task count" "no task count: submit with --ntasks=N or --ntasks-per-node=N"
FAKE_ADDR_n1=127.0.1.1 run_job n0,n1 2
refused "loopback node" "node n1: address 127.0.1.1 is loopback"
WREN_SHARDS=3 run_job n0,n1 2
refused "WREN_SHARDS=3 on 2 nodes" "WREN_SHARDS=3: give 1 .. 2"
mkdir "$T/mine" && echo keep >"$T/mine/f"
WREN_KEY_DIR=$T/mine run_job n0 2
refused "an existing WREN_KEY_DIR" "key directory $T/mine exists: give WREN_KEY_DIR a new path"
[ -f "$T/mine/f" ] || fail "an existing WREN_KEY_DIR: its files were removed"
pass "refused before any step: small batch (argument, config file), workers=, no task count, loopback node, WREN_SHARDS, an existing key directory"

# ---- 4. loopback on one node; the batch node's name at 127.0.1.1 ---------------------------
FAKE_ADDR_n0=127.0.0.1 FAKE_PER_NODE=2 run_job n0 2
[ "$RC" = 0 ] || fail "one node at 127.0.0.1: exited with $RC: $(cat "$OUT")"
called "--advertise tcp://127.0.0.1:7000" "one node at 127.0.0.1"
called "batch=128" "2 workers"
own=$(hostname -I | awk '{print $1}')
if [ -n "$own" ] && [[ $own != 127.* ]]; then
    FAKE_ADDR_n0=127.0.1.1 FAKE_PER_NODE=1 run_job n0,n1 2
    [ "$RC" = 0 ] || fail "batch node at 127.0.1.1: exited with $RC: $(cat "$OUT")"
    called "--advertise tcp://$own:7000" "batch node at 127.0.1.1"
    pass "one node at 127.0.0.1 runs; a batch node named at 127.0.1.1 advertises $own (hostname -I)"
else
    pass "one node at 127.0.0.1 runs (no non-loopback address here to check the 127.0.1.1 fallback)"
fi
