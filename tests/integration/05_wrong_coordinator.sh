#!/usr/bin/env bash
# A worker given an address where no coordinator listens fails within its
# --connect-timeout with status 6 (WR_EXIT_NO_COORDINATOR) and a message naming the address.
source "$(dirname "$0")/lib/common.bash"

port=$(free_port)
t0=$(date +%s.%N)
"$BIN/wren-worker" --coordinator "tcp://127.0.0.1:$port" --connect-timeout 2 >"$T/w.out" 2>"$T/w.err"
rc=$?
t1=$(date +%s.%N)
el=$(python3 -c "print(round($t1 - $t0, 1))")
[ "$rc" = "$WR_EXIT_NO_COORDINATOR" ] ||
    fail "wren-worker exited with $rc (expected $WR_EXIT_NO_COORDINATOR, coordinator unreachable)"
grep -q "no reply from coordinator at tcp://127.0.0.1:$port within 2 s" "$T/w.err" ||
    fail "the error does not name the address and timeout: $(cat "$T/w.err")"
fge 10 "$el" || fail "took $el s for a 2 s connect timeout"
# A malformed address is a command-line error (2), not a hang.
"$BIN/wren-worker" --coordinator "nonsense://x" --connect-timeout 2 >"$T/w2.out" 2>"$T/w2.err"
rc2=$?
[ "$rc2" != "$WR_EXIT_OK" ] || fail "a malformed coordinator address was accepted"
grep -qi 'nonsense' "$T/w2.err" || fail "the error for a malformed address does not name it: $(cat "$T/w2.err")"
pass "status $rc after $el s: $(grep -o 'no reply.*' "$T/w.err" | head -n 1); bad scheme -> status $rc2"
