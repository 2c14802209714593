#!/usr/bin/env bash
# Bad configuration is refused with status 2 (WR_EXIT_CONFIG) and a message naming the key:
# an unknown key and a bad value through wren-local (the coordinator's check,
# before wren-local starts any process: one line of output),
# and the same through wren-worker --standalone; missing data files name the file.
source "$(dirname "$0")/lib/common.bash"

run_local unknown -S 1 -n 1 no_such_key=1 register_timeout=5
[ "$RC" = "$WR_EXIT_CONFIG" ] || fail "unknown key: wren-local exited with $RC (expected $WR_EXIT_CONFIG)"
grep -q "no_such_key" "$T/unknown.out" || fail "unknown key: the message does not name 'no_such_key'"
# wren-local checks the config before it starts anything: the one message.
[ "$(wc -l <"$T/unknown.out")" = 1 ] ||
    fail "unknown key: wren-local printed more than the one message (processes started?): $(head -n 5 "$T/unknown.out")"

run_local badval -S 1 -n 1 lr=abc register_timeout=5
[ "$RC" = "$WR_EXIT_CONFIG" ] || fail "bad value: wren-local exited with $RC (expected $WR_EXIT_CONFIG)"
grep -q "'lr'" "$T/badval.out" || fail "bad value: the message does not name 'lr'"

"$BIN/wren-worker" --standalone bogus_key=3 >"$T/s.out" 2>"$T/s.err"
rc=$?
[ "$rc" = "$WR_EXIT_CONFIG" ] || fail "standalone: unknown key gave status $rc (expected $WR_EXIT_CONFIG)"
grep -q bogus_key "$T/s.err" || fail "standalone: the message does not name 'bogus_key'"

"$BIN/wren-worker" --standalone "data_dir=$T/nowhere" steps=1 >"$T/d.out" 2>"$T/d.err"
rc=$?
[ "$rc" != "$WR_EXIT_OK" ] || fail "standalone: missing data files were not an error"
grep -q "$T/nowhere" "$T/d.err" || fail "missing data: the message does not name the file: $(cat "$T/d.err")"

"$BIN/wren-worker" --frobnicate >"$T/o.out" 2>"$T/o.err"
rc=$?
[ "$rc" = "$WR_EXIT_CONFIG" ] || fail "unknown option gave status $rc (expected $WR_EXIT_CONFIG)"
# And a good standalone command line (options after key=value too) works.
"$BIN/wren-worker" --standalone model=mlp steps=5 eval=off --summary "$T/ok.json" >"$T/ok.out" 2>"$T/ok.err"
rc=$?
[ "$rc" = "$WR_EXIT_OK" ] || fail "a valid standalone run gave status $rc: $(tail -n 3 "$T/ok.err")"
[ "$(json_get "$T/ok.json" steps)" = 5 ] || fail "the standalone summary does not say 5 steps"
# --version: the build's version and the kernels' ISA level, exit 0.
for p in wren-server wren-worker; do
    v=$("$BIN/$p" --version) || fail "$p --version exited $?"
    re="^$p [^ ]+, kernels (scalar|avx2|avx512) \\(this CPU: "
    [[ $v =~ $re ]] || fail "$p --version printed '$v'"
done
pass "unknown key, bad value, standalone key, missing data and unknown option refused clearly; --version"
