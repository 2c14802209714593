# shellcheck shell=bash disable=SC2153  # NAME, HOSTS, COORD_PORT, ... are scripts/netsim's
# netsim-run.bash — `scripts/netsim run`: one wren job on a simulated net
# (sourced by scripts/netsim, which defines the net functions: net_up,
# net_down, counters, lock, host_index, parse_net_opts, check_net_opts).
# Processes run inside the host namespaces with `ip netns exec` (which execs,
# so the pid we hold is the program's own). The trap removes the net whatever
# happens; a SIGKILLed run leaves it, and the next `up`/`run` of the same
# name (or `down`) removes it.

COORD_HOST=0
SHARD_LIST=""
SHARD_LIST_SET=0
WORKER_LIST=""
OUT=""
TIMEOUT=900
SAMPLE=0.5
THREADS=1
LOG_LEVEL=""
CONFIG=""
DEFAULT_ADV=0  # 1: shards bind tcp://*:PORT and advertise what wren picks (no --advertise)
KV=()

run_parse() {
    while [ $# -gt 0 ]; do
        case $1 in
            --coordinator-host) need_arg "$@"; COORD_HOST=$2; shift 2 ;;
            --shards) need_arg "$@"; SHARD_LIST=$2; SHARD_LIST_SET=1; shift 2 ;;
            --workers) need_arg "$@"; WORKER_LIST=$2; shift 2 ;;
            --out) need_arg "$@"; OUT=$2; shift 2 ;;
            --timeout) need_arg "$@"; TIMEOUT=$2; shift 2 ;;
            --sample) need_arg "$@"; SAMPLE=$2; shift 2 ;;
            --threads) need_arg "$@"; THREADS=$2; shift 2 ;;
            --log-level) need_arg "$@"; LOG_LEVEL=$2; shift 2 ;;
            --config) need_arg "$@"; CONFIG=$2; shift 2 ;;
            --default-advertise) DEFAULT_ADV=1; shift ;;
            --) shift ;;
            *=*) KV+=("$1"); shift ;;
            *) die "run: unknown argument '$1' (try --help)" ;;
        esac
    done
}

# kv_get KEY: KEY's value from the last key=value override, else the config file.
kv_get() {
    local v="" kv
    [ -z "$CONFIG" ] ||
        v=$(sed -n -E "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*([^#[:space:]]*).*/\1/p" "$CONFIG" | tail -n 1)
    for kv in "${KV[@]+"${KV[@]}"}"; do
        case $kv in "$1="*) v=${kv#*=} ;; esac
    done
    echo "$v"
}

# host_list WHAT LIST: LIST's host indexes, space-separated, each < HOSTS.
host_list() {
    local h out=() items
    IFS=, read -r -a items <<<"$2"
    for h in "${items[@]}"; do
        { is_uint "$h" && [ "$h" -lt "$HOSTS" ]; } ||
            die "run: $1: '$h' is not a host index in [0, $((HOSTS - 1))]"
        out+=("$((10#$h))")
    done
    echo "${out[*]}"
}

# run_plan: checks the options and places every process (SHARD_HOSTS, WORKER_HOSTS).
run_plan() {
    local mode i hs
    check_net_opts
    { is_uint "$COORD_HOST" && [ "$COORD_HOST" -lt "$HOSTS" ]; } ||
        die "run: --coordinator-host: '$COORD_HOST' is not a host index in [0, $((HOSTS - 1))]"
    { is_uint "$TIMEOUT" && [ "$TIMEOUT" -ge 1 ]; } || die "run: --timeout: '$TIMEOUT' is not a positive integer"
    [[ $SAMPLE =~ ^[0-9]*\.?[0-9]+$ ]] || die "run: --sample: '$SAMPLE' is not a number of seconds"
    is_uint "$THREADS" || die "run: --threads: '$THREADS' is not an integer"
    [ -z "$CONFIG" ] || [ -r "$CONFIG" ] || die "run: --config: cannot read '$CONFIG'"
    mode=$(kv_get mode)
    MODE=${mode:-ps}
    if [ "$MODE" = allreduce ]; then
        [ -z "$SHARD_LIST" ] || die "run: mode=allreduce runs no shards: drop --shards $SHARD_LIST"
    elif [ $SHARD_LIST_SET = 0 ]; then
        SHARD_LIST=$COORD_HOST
    fi
    [ "$MODE" = allreduce ] || [ -n "$SHARD_LIST" ] || die "run: --shards: give at least one host"
    if [ -z "$WORKER_LIST" ]; then
        for ((i = 0; i < HOSTS; i++)); do [ "$i" = "$COORD_HOST" ] || WORKER_LIST+="${WORKER_LIST:+,}$i"; done
        WORKER_LIST=${WORKER_LIST:-0}
    fi
    hs=$(host_list --shards "$SHARD_LIST") || exit "$WR_EXIT_CONFIG"
    read -r -a SHARD_HOSTS <<<"$hs"
    hs=$(host_list --workers "$WORKER_LIST") || exit "$WR_EXIT_CONFIG"
    read -r -a WORKER_HOSTS <<<"$hs"
    [ ${#WORKER_HOSTS[@]} -ge 1 ] || die "run: --workers: give at least one host"
    [ -n "$OUT" ] || OUT=$BUILD/netsim/$NAME-$(date +%Y%m%d-%H%M%S)
    for b in wren-server wren-worker; do
        [ -x "$BIN/$b" ] || die "$BIN/$b not found: build it first (make -j2 $BIN/$b)"
    done
}

# ---- processes -------------------------------------------------------------------
PIDS=()
PNAMES=()
declare -A STATUS=()  # pid -> exit status, once it ended

addr_of() { echo "$SUBNET.$(($1 + 1))"; }

# start NAME HOST cmd...: cmd inside host HOST, output into logs/NAME.log.
start() {
    local name=$1 h=$2
    shift 2
    # Without the lock's descriptor: a process outliving a killed run must not hold the lock.
    ip netns exec "$NAME-h$h" "$@" >"$OUT/logs/$name.log" 2>&1 {LOCK_FD}>&- &
    PIDS+=($!)
    PNAMES+=("$name")
    printf '%s\tpid %s\thost %s-h%s\t%s\n' "$name" "$!" "$NAME" "$h" "$*" >>"$OUT/netsim.txt"
}

start_coordinator() {
    local i n=()
    COORD_ADDR=tcp://$(addr_of "$COORD_HOST"):$COORD_PORT
    [ "$MODE" = allreduce ] || n=("shards=${#SHARD_HOSTS[@]}")  # the key is [1, 1024], ignored there
    start coordinator "$COORD_HOST" "$BIN/wren-server" coordinator --bind "$COORD_ADDR" \
        --advertise "$COORD_ADDR" --summary "$OUT/sum/coordinator.json" --allow-insecure "${LL[@]+"${LL[@]}"}" "${CFG[@]+"${CFG[@]}"}" \
        "${KV[@]+"${KV[@]}"}" allow_insecure=on "${n[@]+"${n[@]}"}" "workers=${#WORKER_HOSTS[@]}"
    COORD_PID=${PIDS[0]}
    for i in $(seq 50); do  # up to 5 s to listen (or fail, e.g. a bad config)
        grep -q 'listening on' "$OUT/logs/coordinator.log" 2>/dev/null && return 0
        kill -0 "$COORD_PID" 2>/dev/null || return 1
        sleep 0.1
    done
    echo "netsim: the coordinator did not say 'listening on' within 5 s; going on" >&2
}

start_nodes() {
    local s i h a ar=()
    for s in "${!SHARD_HOSTS[@]}"; do
        h=${SHARD_HOSTS[$s]}
        a=tcp://$(addr_of "$h"):$((SHARD_PORT0 + s))
        ar=(--bind "$a" --advertise "$a")
        [ "$DEFAULT_ADV" = 0 ] || ar=(--bind "tcp://*:$((SHARD_PORT0 + s))")
        start "shard$s" "$h" "$BIN/wren-server" shard --coordinator "$COORD_ADDR" "${ar[@]}" \
            --allow-insecure --host "$NAME-h$h" "${LL[@]+"${LL[@]}"}"
    done
    for i in "${!WORKER_HOSTS[@]}"; do
        h=${WORKER_HOSTS[$i]}
        ar=()
        [ "$MODE" = allreduce ] && ar=(--group "$NAME-h$h")
        [ "$MODE" = allreduce ] && [ "$DEFAULT_ADV" = 0 ] && ar+=(--data-bind "tcp://$(addr_of "$h"):0")
        start "worker$i" "$h" "$BIN/wren-worker" --coordinator "$COORD_ADDR" --host "$NAME-h$h" \
            --allow-insecure --threads "$THREADS" --summary "$OUT/sum/worker-$i.json" \
            "${ar[@]+"${ar[@]}"}" "${LL[@]+"${LL[@]}"}"
    done
}

# reap: records the status of every process that ended.
reap() {
    local pid
    for pid in "${PIDS[@]}"; do
        [ -z "${STATUS[$pid]+x}" ] || continue
        kill -0 "$pid" 2>/dev/null && continue
        wait "$pid"
        STATUS[$pid]=$?
    done
}

all_ended() {
    local pid
    for pid in "${PIDS[@]}"; do [ -n "${STATUS[$pid]+x}" ] || return 1; done
}

# wait_job: until the coordinator ends and the others follow (10 s after a 0,
# 2 s after a failure), or --timeout. Sets REASON when it cut the job short.
wait_job() {
    local deadline=$(($(date +%s) + TIMEOUT)) grace=""
    REASON=""
    while :; do
        reap
        if [ -n "${STATUS[$COORD_PID]+x}" ]; then
            all_ended && return
            if [ -z "$grace" ]; then
                grace=2
                [ "${STATUS[$COORD_PID]}" != "$WR_EXIT_OK" ] || grace=10
                grace=$(($(date +%s) + grace))
            fi
            [ "$(date +%s)" -lt "$grace" ] || return
        elif [ "$(date +%s)" -ge "$deadline" ]; then
            REASON="timed out after $TIMEOUT s (--timeout)"
            return
        fi
        sleep 0.2
    done
}

# stop_all: TERM (and CONT) to what still runs, up to 3 s, then KILL; the
# names of the processes it had to stop go to STOPPED.
STOPPED=()
stop_all() {
    local pid i alive
    for i in "${!PIDS[@]}"; do
        pid=${PIDS[$i]}
        { [ -z "${STATUS[$pid]+x}" ] && kill -0 "$pid" 2>/dev/null; } || continue
        STOPPED+=("${PNAMES[$i]}")
        kill -TERM "$pid" 2>/dev/null && kill -CONT "$pid" 2>/dev/null
    done
    for i in $(seq 30); do
        alive=0
        for pid in "${PIDS[@]+"${PIDS[@]}"}"; do
            [ -z "${STATUS[$pid]+x}" ] && kill -0 "$pid" 2>/dev/null && alive=1
        done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for pid in "${PIDS[@]+"${PIDS[@]}"}"; do
        [ -n "${STATUS[$pid]+x}" ] && continue
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        STATUS[$pid]=$?
    done
}

# ---- measuring ---------------------------------------------------------------------
# sampler: every SAMPLE seconds `t host tx rx` of every host into link.tsv
# (t from T0). Runs in the background until killed, or until the run (pid
# $$ in this subshell too) or the net is gone, so a SIGKILLed run leaves no loop.
sampler() {
    while kill -0 $$ 2>/dev/null && [ -e "/run/netns/$NAME-sw" ]; do
        counters "$NAME" | awk -v t="$EPOCHREALTIME" -v t0="$T0" \
            '{printf "%.3f %s %s %s\n", t - t0, $1, $2, $3}' >>"$OUT/link.tsv"
        sleep "$SAMPLE"
    done
}

# write_bytes: bytes.tsv from the counters before (.c0) and after (.c1) the
# job, and per step of rank 0's summary.
write_bytes() {
    counters "$NAME" >"$OUT/.c1" 2>/dev/null || return
    python3 - "$OUT" "${SHARD_HOSTS[*]-}" "${WORKER_HOSTS[*]}" "$COORD_HOST" <<'EOF'
import glob, json, os, sys
out, shards, workers, coord = sys.argv[1:5]
def load(p):
    return {l.split()[0]: (int(l.split()[1]), int(l.split()[2])) for l in open(p) if l.strip()}
def index(host):
    return int(host.rsplit("-h", 1)[1])
c0, c1 = load(os.path.join(out, ".c0")), load(os.path.join(out, ".c1"))
steps = 0
for p in glob.glob(os.path.join(out, "sum", "worker-*.json")):
    try:
        s = json.load(open(p))
    except (OSError, ValueError):
        continue
    if s.get("rank") == 0:
        steps = int(s.get("steps") or 0)
roles = {int(coord): ["coordinator"]}
for k, h in enumerate(shards.split()):
    roles.setdefault(int(h), []).append(f"shard{k}")
for k, h in enumerate(workers.split()):
    roles.setdefault(int(h), []).append(f"worker{k}")
with open(os.path.join(out, "bytes.tsv"), "w") as f:
    f.write("host\troles\ttx_bytes\trx_bytes\tsteps\ttx_bytes_per_step\trx_bytes_per_step\n")
    for h in sorted(c1, key=index):
        tx = c1[h][0] - c0.get(h, (0, 0))[0]
        rx = c1[h][1] - c0.get(h, (0, 0))[1]
        r = ",".join(roles.get(index(h), [])) or "-"
        per = f"{tx / steps:.0f}\t{rx / steps:.0f}" if steps else "-\t-"
        f.write(f"{h}\t{r}\t{tx}\t{rx}\t{steps}\t{per}\n")
EOF
    rm -f "$OUT/.c0" "$OUT/.c1"
}

# ---- the run -------------------------------------------------------------------------
# result: the job's status: the coordinator's; a failed process's when the
# coordinator said 0; 1 when it was cut short or a process had to be stopped.
result() {
    local i st coord=${STATUS[$COORD_PID]:-}
    if [ -n "$REASON" ] || [ -z "$coord" ]; then
        echo "$WR_EXIT_FAILURE"
        return
    fi
    [ "$coord" = "$WR_EXIT_OK" ] || { echo "$coord"; return; }
    [ ${#STOPPED[@]} = 0 ] || { echo "$WR_EXIT_FAILURE"; return; }
    for i in "${!PIDS[@]}"; do
        st=${STATUS[${PIDS[$i]}]}
        [ "$st" = "$WR_EXIT_OK" ] || { echo "$st"; return; }
    done
    echo "$WR_EXIT_OK"
}

# describe: one line per process that did not end with 0, for the status file.
describe() {
    local i st
    for i in "${!PIDS[@]}"; do
        st=${STATUS[${PIDS[$i]}]:-?}
        [ "$st" = "$WR_EXIT_OK" ] || echo "${PNAMES[$i]} exited with status $st"
    done
    [ ${#STOPPED[@]} = 0 ] || echo "stopped by netsim (still running at the end): ${STOPPED[*]}"
}

CLEANED=0
SAMPLER_PID=""
run_cleanup() {
    [ $CLEANED = 1 ] && return
    CLEANED=1
    [ -z "$SAMPLER_PID" ] || { kill "$SAMPLER_PID" 2>/dev/null; wait "$SAMPLER_PID" 2>/dev/null; }
    stop_all
    net_down "$NAME" || echo "netsim: could not remove everything of '$NAME': run scripts/netsim down --name $NAME" >&2
}
# shellcheck disable=SC2317  # reached through the traps
run_signal() {
    echo "netsim: $1: stopping the job and removing the net '$NAME'" >&2
    REASON=$1
    run_cleanup
    echo "status $2 $1" >"$OUT/status" 2>/dev/null
    exit "$2"
}

netsim_run() {
    local st
    parse_net_opts "$@"
    run_parse "${REST[@]+"${REST[@]}"}"
    run_plan
    need_root
    lock "$NAME"
    LL=()
    [ -z "$LOG_LEVEL" ] || LL=(--log-level "$LOG_LEVEL")
    CFG=()
    [ -z "$CONFIG" ] || CFG=(--config "$(cd "$(dirname "$CONFIG")" && pwd)/$(basename "$CONFIG")")
    mkdir -p "$OUT/logs" "$OUT/sum" || die "run: cannot create --out $OUT"
    OUT=$(cd "$OUT" && pwd)
    rm -f "$OUT"/{netsim.txt,link.tsv,bytes.tsv,status} "$OUT"/logs/*.log "$OUT"/sum/worker-*.json
    trap 'run_signal interrupted 130' INT
    trap 'run_signal terminated 143' TERM
    trap 'run_signal hangup 129' HUP
    trap run_cleanup EXIT
    net_up "$NAME" "$HOSTS" "$BPS" || { echo "netsim: building the net '$NAME' failed" >&2; exit "$WR_EXIT_FAILURE"; }
    printf 'net %s: %s hosts, %s each way (tbf burst %s B, queue %s B), mode %s\n' "$NAME" "$HOSTS" \
        "$RATE" "$(burst_bytes "$BPS")" "$(queue_bytes "$BPS")" "$MODE" >"$OUT/netsim.txt"
    echo "netsim: $NAME up ($HOSTS hosts, $RATE); coordinator on h$COORD_HOST, shards on [${SHARD_HOSTS[*]-}], workers on [${WORKER_HOSTS[*]}]; output in $OUT" >&2
    counters "$NAME" >"$OUT/.c0"
    T0=$EPOCHREALTIME
    echo "start $T0 (Unix time of t = 0 in link.tsv)" >>"$OUT/netsim.txt"
    sampler {LOCK_FD}>&- &
    SAMPLER_PID=$!
    if start_coordinator; then start_nodes; fi
    wait_job
    T1=$EPOCHREALTIME
    stop_all
    kill "$SAMPLER_PID" 2>/dev/null
    wait "$SAMPLER_PID" 2>/dev/null
    SAMPLER_PID=""
    write_bytes
    st=$(result)
    { echo "status $st ${REASON:-coordinator status ${STATUS[$COORD_PID]:-?}}"; describe; } >"$OUT/status"
    run_cleanup
    trap - EXIT INT TERM HUP
    echo "netsim: job ended with status $st after $(awk -v a="$T0" -v b="$T1" 'BEGIN{printf "%.1f", b - a}') s${REASON:+ ($REASON)}; net '$NAME' removed; output in $OUT" >&2
    if [ "$st" != "$WR_EXIT_OK" ]; then
        sed -n '2,$p' "$OUT/status" | sed 's/^/netsim: /' >&2
        echo "netsim: the coordinator's last lines ($OUT/logs/coordinator.log):" >&2
        tail -n 3 "$OUT/logs/coordinator.log" | sed 's/^/    /' >&2
    fi
    exit "$st"
}
