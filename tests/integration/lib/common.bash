# common.bash — helpers for tests/integration/*.sh (sourced, not run).
# Each test gets its own temp dir ($T), kills what it started in an EXIT trap
# and fails with a clear message through `fail`. The wren exit statuses are
# checked by name (WR_EXIT_*, scripts/lib/exit-status.sh).
set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
source "$ROOT/scripts/lib/exit-status.sh"
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
BIN=$BUILD/bin
export BUILD
TEST_NAME=$(basename "$0" .sh)
T=$(mktemp -d "${TMPDIR:-/tmp}/wren-itest-$TEST_NAME.XXXXXX")
STARTED=()   # pids of what this test started in the background

cleanup_test() {
    local pid
    for pid in "${STARTED[@]+"${STARTED[@]}"}"; do kill -TERM "$pid" 2>/dev/null; done
    sleep 0.2
    for pid in "${STARTED[@]+"${STARTED[@]}"}"; do kill -KILL "$pid" 2>/dev/null; done
    if [ "${KEEP_T:-0}" = 1 ]; then echo "($TEST_NAME: files kept in $T)"; else rm -rf "$T"; fi
}
trap cleanup_test EXIT

fail() {
    echo "FAIL $TEST_NAME: $*" >&2
    local f
    for f in "$T"/logs/*.log "$T"/*.out "$T"/*.err; do
        [ -f "$f" ] || continue
        echo "---- last lines of $f" >&2
        tail -n 15 "$f" >&2
    done
    # Tests that start processes by hand keep their logs in subdirectories:
    # their error lines (the CI shows only the output, not $T).
    find "$T" -mindepth 2 -maxdepth 3 -type f -not -path "$T/logs/*" \( -name '*.log' -o -name '*.err' \) 2>/dev/null |
        sort | while read -r f; do
        grep -H -m 4 -E '\[(error|warn)\]' "$f" >&2
    done
    exit 1
}
pass() { echo "PASS $TEST_NAME: $*"; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# json_get FILE KEY -> the value of KEY in a summary JSON
json_get() { python3 -c 'import json,sys; v=json.load(open(sys.argv[1])).get(sys.argv[2]); print("" if v is None else v)' "$1" "$2"; }

# float comparison: fge A B -> true when A >= B
fge() { python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) >= float(sys.argv[2]) else 1)' "$1" "$2"; }

for b in wren-server wren-worker; do
    [ -x "$BIN/$b" ] || fail "$BIN/$b is missing (build first: make -j2 $BIN/$b)"
done

# run_local NAME args... : runs scripts/wren-local with logs and summaries in $T,
# stdout+stderr into $T/NAME.out; sets RC (wren-local's exit status).
run_local() {
    local name=$1
    shift
    mkdir -p "$T/logs" "$T/sum"
    TMPDIR=$T "$ROOT/scripts/wren-local" --log-dir "$T/logs" --summary-dir "$T/sum" "$@" \
        >"$T/$name.out" 2>&1
    # shellcheck disable=SC2034  # RC is read by the test that sourced this file
    RC=$?
}

# The coordinator's end-of-job digest line: "digest checks: N passed, M failed".
check_digests() {
    local line n m
    line=$(grep -ho 'digest checks: [0-9]* passed, [0-9]* failed' "$T/logs/coordinator.log" | tail -n 1)
    [ -n "$line" ] || fail "the coordinator logged no 'digest checks: N passed, M failed' line"
    n=$(echo "$line" | sed -E 's/digest checks: ([0-9]+) passed.*/\1/')
    m=$(echo "$line" | sed -E 's/.*passed, ([0-9]+) failed/\1/')
    [ "$n" -ge 1 ] || fail "no digest check happened ($line)"
    [ "$m" = 0 ] || fail "replica digests disagreed ($line)"
    # shellcheck disable=SC2034  # DIGESTS_PASSED is read by the test that sourced this file
    DIGESTS_PASSED=$n
}

# Jobs started by hand in DIR (coord.log, s<i>.log), COORD = the coordinator's pid:
# shard_digests DIR -> the shards' final master-copy digests, sorted, one line.
shard_digests() { grep -ho "master copy digest [0-9a-f]*" "$1"/s*.log | sort | tr '\n' ' '; }

# await_coordinator WHAT: waits up to 60 s for the coordinator ($COORD) to
# end, which must be with status 0; WHAT names the job in the failure.
await_coordinator() {
    local rc=0
    for _ in $(seq 600); do kill -0 "$COORD" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$COORD" 2>/dev/null && fail "$1 did not finish within 60 s"
    wait "$COORD" || rc=$?
    [ "$rc" = "$WR_EXIT_OK" ] || fail "$1 ended with status $rc (expected $WR_EXIT_OK)"
}

# finish_job DIR: waits for the coordinator, which must end with 0, then for the rest.
finish_job() {
    local rc=0
    wait "$COORD" || rc=$?
    [ "$rc" = "$WR_EXIT_OK" ] || fail "$1: coordinator exited with $rc: $(tail -n 3 "$1/coord.log")"
    wait
}
