#!/usr/bin/env bash
# tests/slurm/run.sh (make test-slurm) — deploy/slurm/wren.sbatch under a real
# Slurm: Debian's slurm-wlm and munge (installed with apt-get when missing),
# configured here with a cluster of their own (ports, state, spool, logs and
# munge socket under a temp dir; slurm.conf.in beside this file), on three
# simulated hosts (scripts/netsim: network namespaces with 198.18.0.x
# addresses that exist only inside them). One slurmd per host, started with
# `nsenter --net` (not `ip netns exec`, whose mount namespace hides the cgroup
# mounts from slurmd); slurmctld beside host 0's slurmd; munged in the root
# namespace (its socket is a path, which every namespace reaches).
#   1. one node, 2 tasks: the Birder job completes, digests agree, sacct shows
#      COMPLETED 0:0
#   2. three nodes x 2 tasks: the same, with a shard on each host (its own
#      address) and two workers registered from each host
#   3. batch=2 for 3 tasks: refused before anything starts: FAILED 2:0 and
#      the script's message
#   4. three nodes, the workers' step killed mid-job: the coordinator's status
#      5 (a node died): FAILED 5:0, and no wren process or job step is left
#   5. three nodes, the coordinator's step killed: FAILED 137:0 (srun's status
#      for SIGKILL), the shards and workers stopped after WREN_GRACE, nothing left
# Always tears down (trap): jobs, daemons, namespaces, temp dir.
# Every sbatch, scontrol and sacct runs under `timeout`; every job has --time.
# Needs root (network namespaces, apt-get): skipped otherwise.
source "$(dirname "$0")/../integration/lib/common.bash"
TEST_NAME=slurm

if [ "$(id -u)" != 0 ]; then
    echo "SKIP $TEST_NAME: needs root (network namespaces, apt-get, Slurm daemons)"
    exit 0
fi
NETSIM=$ROOT/scripts/netsim
SBATCH=${WREN_SBATCH:-$ROOT/deploy/slurm/wren.sbatch}  # another script to test: WREN_SBATCH
NET=wslurm$$              # the namespaces NET-h0 .. NET-h2
NHOSTS=3
CTLD_PORT=${SLURM_TEST_CTLD_PORT:-16817}
SLURMD_PORT=${SLURM_TEST_SLURMD_PORT:-16818}
JOB_TIMEOUT=90            # seconds a job may take here before it is cancelled
JOB=(mode=ps codec=birder model=synthetic:100000 steps=30 digest_every=10 register_timeout=20)
DAEMONS=()                # pids of slurmctld and the slurmds
PASSED=0

# in_host I cmd...: cmd in host I's network namespace, the rest shared.
in_host() {
    local i=$1
    shift
    nsenter --net="/run/netns/$NET-h$i" "$@"
}
# client cmd...: a Slurm client command, bounded, from host 0 (where slurmctld is).
client() { timeout 20 nsenter --net="/run/netns/$NET-h0" "$@"; }
ok() {
    PASSED=$((PASSED + 1))
    pass "$*"
}

# ---- setup ---------------------------------------------------------------------
install_slurm() {
    local missing="" c
    for c in slurmctld slurmd sbatch sacct munged; do command -v "$c" >/dev/null || missing+=" $c"; done
    [ -z "$missing" ] && return 0
    echo "== installing slurm-wlm and munge (missing:$missing)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends slurm-wlm munge >"$T/apt.log" 2>&1 ||
        { apt-get update -q >>"$T/apt.log" 2>&1 && apt-get install -y -q --no-install-recommends slurm-wlm munge >>"$T/apt.log" 2>&1; } ||
        fail "apt-get install slurm-wlm munge failed ($T/apt.log: $(tail -n 3 "$T/apt.log"))"
}

# munge: a key and a socket of this run's own; its socket's directory must be
# searchable by all, its key's private (munged checks both).
start_munge() {
    mkdir -p "$T/munge" "$T/run" && chmod 700 "$T/munge" && chmod 755 "$T" "$T/run"
    head -c 1024 /dev/urandom >"$T/munge/munge.key" && chmod 600 "$T/munge/munge.key"
    MUNGE_SOCKET=$T/run/munge.sock
    munged --socket="$MUNGE_SOCKET" --key-file="$T/munge/munge.key" --log-file="$T/munge/munged.log" \
        --pid-file="$T/run/munged.pid" --seed-file="$T/munge/seed" ||
        fail "munged did not start: $(tail -n 3 "$T/munge/munged.log")"
    munge -n -S "$MUNGE_SOCKET" | unmunge -S "$MUNGE_SOCKET" >/dev/null ||
        fail "munge round trip through $MUNGE_SOCKET failed"
}

# write_conf: slurm.conf from the template; node<i> = host i at 198.18.0.(i+1).
write_conf() {
    local i nodes=""
    mkdir -p "$T/state" "$T/logs" "$T/jobs"
    for ((i = 0; i < NHOSTS; i++)); do
        mkdir -p "$T/spool/node$i"
        nodes+="NodeName=node$i NodeAddr=198.18.0.$((i + 1)) CPUs=$(nproc) State=UNKNOWN"$'\n'
    done
    sed -e "s|@CTLD_HOST@|$(hostname -s)|; s|@CTLD_ADDR@|198.18.0.1|" \
        -e "s|@CTLD_PORT@|$CTLD_PORT|; s|@SLURMD_PORT@|$SLURMD_PORT|" \
        -e "s|@MUNGE_SOCKET@|$MUNGE_SOCKET|; s|@DIR@|$T|g" "$(dirname "$0")/slurm.conf.in" |
        awk -v nodes="$nodes" '$0 == "@NODES@" {printf "%s", nodes; next} {print}' >"$T/slurm.conf"
    export SLURM_CONF=$T/slurm.conf
}

start_slurm() {
    local i state
    in_host 0 slurmctld -D -i >"$T/logs/slurmctld.out" 2>&1 &
    DAEMONS+=("$!")
    for ((i = 0; i < NHOSTS; i++)); do
        in_host "$i" slurmd -D -N "node$i" >"$T/logs/slurmd-node$i.out" 2>&1 &
        DAEMONS+=("$!")
    done
    for ((i = 0; i < 300; i++)); do
        state=$(client sinfo -h -o '%T %D' 2>/dev/null)
        [ "$state" = "idle $NHOSTS" ] && return 0
        sleep 0.1
    done
    fail "the $NHOSTS Slurm nodes are not idle after 30 s (sinfo: '$state'; logs in $T/logs)"
}

# ---- teardown (EXIT trap): jobs, daemons, namespaces, munged, temp dir ------------
# shellcheck disable=SC2317  # reached through the trap
teardown() {
    local pid i ids
    if [ ${#DAEMONS[@]} -gt 0 ]; then
        ids=$(client squeue -h -o %i 2>/dev/null)
        # shellcheck disable=SC2086  # one job id per word
        [ -n "$ids" ] && client scancel $ids 2>/dev/null
        for ((i = 0; i < 100; i++)); do
            [ -z "$(client squeue -h -o %i 2>/dev/null)" ] && break
            sleep 0.1
        done
    fi
    for pid in "${DAEMONS[@]+"${DAEMONS[@]}"}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${DAEMONS[@]+"${DAEMONS[@]}"}"; do
        for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
    done
    # what is left in the namespaces (a job step's slurmstepd, a wren process)
    "$NETSIM" down --name "$NET" >/dev/null 2>&1
    rm -f "/run/wren-netsim/$NET.lock"
    pid=$(cat "$T/run/munged.pid" 2>/dev/null)
    if [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null; then
        for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    cleanup_test
}
trap teardown EXIT

# ---- jobs ------------------------------------------------------------------------
# submit NAME sbatch-options... -- key=value...: submits wren.sbatch, sets JOBID.
# The job runs in $T/jobs (its keys there too), its output in $T/jobs/NAME.out.
submit() {
    local name=$1 opts=()
    shift
    while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1") && shift; done
    shift
    rm -f "$T/jobs/$name.out"
    JOBID=$(WREN_BIN=$BIN WREN_GRACE=${WREN_GRACE:-15} client sbatch --parsable --chdir="$T/jobs" --output="$T/jobs/$name.out" \
        --time=2 --overcommit "${opts[@]}" "$SBATCH" "$@") || fail "sbatch of job '$name' failed: $JOBID"
    JOBID=${JOBID%%;*}
    JOB_OUT=$T/jobs/$name.out
}

# job_fail MSG: fail with the job's output.
job_fail() {
    echo "---- last lines of $JOB_OUT" >&2
    tail -n 25 "$JOB_OUT" >&2
    fail "job $JOBID: $*"
}

# wait_job: until the job has ended (at most JOB_TIMEOUT s; then cancelled: fail).
wait_job() {
    local i state=""
    for ((i = 0; i < JOB_TIMEOUT * 5; i++)); do
        state=$(client scontrol show job -o "$JOBID" 2>/dev/null | grep -o 'JobState=[A-Z_]*')
        case $state in JobState=PENDING | JobState=RUNNING | JobState=CONFIGURING | JobState=COMPLETING | "") ;;
            *) return 0 ;;
        esac
        sleep 0.2
    done
    client scancel "$JOBID"
    job_fail "still ${state#JobState=} after $JOB_TIMEOUT s: cancelled"
}

# expect_sacct STATE EXIT: sacct (job completion records: sacct -c) shows the
# job in STATE with exit code EXIT:0.
expect_sacct() {
    local got i
    for ((i = 0; i < 50; i++)); do  # the record is written as the job ends
        got=$(client sacct -c -n -P -j "$JOBID" --format=State,ExitCode 2>&1)
        [ -n "$got" ] && break
        sleep 0.1
    done
    [ "$got" = "$1|$2:0" ] || job_fail "sacct shows '$got' (expected '$1|$2:0')"
}

# check_job_ok WHAT: status 0 in sacct and the script's line; digests agree.
check_job_ok() {
    local line f
    expect_sacct COMPLETED 0
    grep -q "wren.sbatch: job $JOBID: the coordinator exited with status 0" "$JOB_OUT" ||
        job_fail "no 'the coordinator exited with status 0' line"
    line=$(grep -o 'digest checks: [0-9]* passed, [0-9]* failed' "$JOB_OUT" | tail -n 1)
    if ! [[ $line =~ ^digest\ checks:\ ([0-9]+)\ passed,\ 0\ failed$ ]] || [ "${BASH_REMATCH[1]}" -lt 1 ]; then
        job_fail "digests: '$line' (expected N >= 1 passed, 0 failed)"
    fi
    DIGESTS=${BASH_REMATCH[1]}
    for f in "$T"/jobs/*; do  # the keys are removed at the end
        [[ $f == *.out ]] || job_fail "left in the job's directory: $f"
    done
}

# registered_from ROLE: the distinct addresses ROLE (shard|worker) registered
# from, as "ADDRxCOUNT ..." sorted.
registered_from() {
    grep -o "coordinator \[info\] $1 [0-9]* registered from [0-9.]*" "$JOB_OUT" | awk '{print $NF}' |
        sort | uniq -c | awk '{printf "%sx%s ", $2, $1}'
}

# left_running: wren processes and job steps still in the namespaces.
left_running() {
    local i p c
    for ((i = 0; i < NHOSTS; i++)); do
        for p in $(ip netns pids "$NET-h$i" 2>/dev/null); do
            c=$(cat "/proc/$p/comm" 2>/dev/null)
            [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" = Z ] && continue  # exited; init reaps it
            case $c in wren-* | slurmstepd | srun) echo "h$i:$c($p)" ;; esac
        done
    done
}

# ---- the tests ---------------------------------------------------------------
test_one_node() {
    submit one --nodes=1 --ntasks=2 -- "${JOB[@]}"
    wait_job
    check_job_ok
    ok "1 node x 2 tasks: job $JOBID COMPLETED 0:0 in sacct, $DIGESTS digest checks passed"
}

test_three_nodes() {
    local shards workers
    submit three --nodes=3 --ntasks-per-node=2 -- "${JOB[@]}"
    wait_job
    check_job_ok
    grep -q 'batch 126;' "$JOB_OUT" || job_fail "6 workers: the batch is not the derived 126"
    shards=$(registered_from shard)
    workers=$(registered_from worker)
    [ "$shards" = "198.18.0.1x1 198.18.0.2x1 198.18.0.3x1 " ] ||
        job_fail "shards registered from '$shards' (expected one on each of the 3 hosts)"
    [ "$workers" = "198.18.0.1x2 198.18.0.2x2 198.18.0.3x2 " ] ||
        job_fail "workers registered from '$workers' (expected two on each of the 3 hosts)"
    ok "3 nodes x 2 tasks: job $JOBID COMPLETED 0:0, a shard and 2 workers from each host's address, batch 126, $DIGESTS digest checks passed"
}

test_batch_refused() {
    submit refused --nodes=1 --ntasks=3 -- "${JOB[@]}" batch=2
    wait_job
    expect_sacct FAILED "$WR_EXIT_CONFIG"
    grep -q 'wren.sbatch: batch 2 is smaller than the 3 workers' "$JOB_OUT" || job_fail "no refusal message"
    grep -q 'coordinator' "$JOB_OUT" && job_fail "started the job anyway"
    ok "batch=2 for 3 tasks: job $JOBID refused ($(grep -o 'batch 2 is smaller[^:]*' "$JOB_OUT")), FAILED 2:0"
}

# The workers' step killed mid-job: the coordinator stops the job with status
# 5 (a node died); the shards leave; nothing is left.
test_node_lost() {
    local i step left
    submit lost --nodes=3 --ntasks-per-node=1 -- "${JOB[@]}" steps=10000000 register_timeout=3
    for ((i = 0; i < 300; i++)); do
        grep -q 'job formed' "$JOB_OUT" 2>/dev/null && break
        sleep 0.1
    done
    grep -q 'job formed' "$JOB_OUT" || job_fail "did not form within 30 s"
    step=$(client squeue -h -s -j "$JOBID" -o '%i %j' | awk '$2 == "wren-workers" {print $1}')
    [ -n "$step" ] || job_fail "no step named wren-workers: $(client squeue -h -s -j "$JOBID" -o '%i %j')"
    client scancel --signal=KILL "$step" 2>>"$T/scancel.err"  # "No error" when the step ends at once
    wait_job
    expect_sacct FAILED "$WR_EXIT_NODE_LOST"
    for ((i = 0; i < 50; i++)); do
        left=$(left_running)
        [ -z "$left" ] && break
        sleep 0.2
    done
    [ -z "$left" ] || job_fail "left running after the job: $left"
    ok "workers' step $step killed: job $JOBID FAILED 5:0 (a node died), nothing left running"
}

# The coordinator's step killed mid-job: the script exits with srun's status
# for it (128 + 9), stops the shards and workers left after WREN_GRACE, and
# nothing is left.
test_coordinator_killed() {
    local i step left
    WREN_GRACE=2 submit nocoord --nodes=3 --ntasks-per-node=1 -- "${JOB[@]}" steps=10000000
    for ((i = 0; i < 300; i++)); do
        grep -q 'job formed' "$JOB_OUT" 2>/dev/null && break
        sleep 0.1
    done
    grep -q 'job formed' "$JOB_OUT" || job_fail "did not form within 30 s"
    step=$(client squeue -h -s -j "$JOBID" -o '%i %j' | awk '$2 == "wren-coordinator" {print $1}')
    [ -n "$step" ] || job_fail "no step named wren-coordinator: $(client squeue -h -s -j "$JOBID" -o '%i %j')"
    client scancel --signal=KILL "$step" 2>>"$T/scancel.err"  # "No error" when the step ends at once
    wait_job
    expect_sacct FAILED 137
    grep -q 'still running after 2 s: stopping it' "$JOB_OUT" || job_fail "no step was stopped after WREN_GRACE"
    for ((i = 0; i < 50; i++)); do
        left=$(left_running)
        [ -z "$left" ] && break
        sleep 0.2
    done
    [ -z "$left" ] || job_fail "left running after the job: $left"
    ok "coordinator's step $step killed: job $JOBID FAILED 137:0, shards and workers stopped after WREN_GRACE, nothing left running"
}

# ---- main ----------------------------------------------------------------------
T0=$SECONDS
install_slurm
"$NETSIM" up --hosts "$NHOSTS" --rate 10gbit --name "$NET" >/dev/null || fail "scripts/netsim up failed"
start_munge
write_conf
start_slurm
echo "== slurm: $(slurmctld -V), $NHOSTS nodes up after $((SECONDS - T0)) s"
test_one_node
test_three_nodes
test_batch_refused
test_node_lost
test_coordinator_killed
echo "== slurm: $((SECONDS - T0)) s in all"
echo "$PASSED passed, 0 failed"
