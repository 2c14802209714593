#!/usr/bin/env bash
# The systemd units, installed and checked without systemd as PID 1:
# 1. `make install DESTDIR=$T/root PREFIX=/usr` puts the programs, units (no
#    @PREFIX@ left), wren-unit and the examples in place.
# 2. `systemd-analyze verify` passes on the installed units (--root: the
#    executables are looked up in the staging root), and flags a unit broken
#    on purpose (a bad Restart= value, a missing executable) — once, here.
# 3. `systemd-analyze security --offline` rates each unit at most 2.0.
# 4. Every variable an ExecStart uses is in its unit's env example, and the
#    example job.conf is a valid config.
# 5. A job runs from the units' own command lines (ExecStart expanded by
#    lib/unit-cmd.py with the env examples, only the addresses and the job's
#    size changed): coordinator, shard@0 and worker@0 end with 0, digests agree.
# 6. wren-unit: an unset variable is named (exit 2, no restart loop); a
#    coordinator restart (ExecStopPost's record present, as systemd keeps
#    RuntimeDirectory across restarts) is refused with 2 when it would start
#    the job again from step 0 and allowed with checkpoint_dir (after a kill)
#    or checkpoint_dir + checkpoint_every + resume=on (after exit 1).
source "$(dirname "$0")/lib/common.bash"

command -v systemd-analyze >/dev/null ||
    fail "systemd-analyze is missing (Debian package systemd: scripts/install-deps.sh installs it)"

# ---- 1. make install ---------------------------------------------------------
R=$T/root
make -s -C "$ROOT" BUILD="$BUILD" install DESTDIR="$R" PREFIX=/usr >"$T/install.out" 2>&1 ||
    fail "make install DESTDIR=$R PREFIX=/usr failed: $(tail -n 5 "$T/install.out")"
UD=$R/usr/lib/systemd/system
for f in usr/bin/wren-server usr/bin/wren-worker usr/lib/wren/wren-unit usr/lib/wren/exit-status.sh \
    usr/lib/systemd/system/wren-coordinator.service usr/lib/systemd/system/wren-shard@.service \
    usr/lib/systemd/system/wren-worker@.service usr/share/wren/job.conf.example \
    usr/share/wren/coordinator.env.example usr/share/wren/shard.env.example \
    usr/share/wren/worker.env.example usr/share/wren/wren.sysusers.conf; do
    [ -f "$R/$f" ] || fail "make install did not install /$f"
done
[ -x "$R/usr/lib/wren/wren-unit" ] || fail "wren-unit is not executable"
if grep -l '@PREFIX@' "$UD"/wren-* "$R"/usr/share/wren/*; then fail "@PREFIX@ left in the files above"; fi
grep -q '^ExecStart=/usr/lib/wren/wren-unit start coordinator' "$UD/wren-coordinator.service" ||
    fail "the coordinator's ExecStart does not start /usr/lib/wren/wren-unit"
echo "ok   make install: programs, units, wren-unit and examples under $R/usr"

# ---- 2. systemd-analyze verify -------------------------------------------------
# --root: unit and executable paths resolve inside the staging root;
# --recursive-errors=no: the root has none of the system's own units
# (sysinit.target), which are not ours to check.
verify() { systemd-analyze verify --root="$R" --recursive-errors=no "$@"; }
UNITS=("$UD/wren-coordinator.service" "$UD/wren-shard@0.service" "$UD/wren-worker@0.service")
verify "${UNITS[@]}" >"$T/verify.out" 2>&1 || fail "systemd-analyze verify failed: $(cat "$T/verify.out")"
[ ! -s "$T/verify.out" ] || fail "systemd-analyze verify printed warnings: $(cat "$T/verify.out")"
sed 's/^Restart=on-failure$/Restart=sometimes/' "$UD/wren-coordinator.service" >"$UD/wren-broken.service"
verify "$UD/wren-broken.service" >"$T/broken.out" 2>&1 && fail "verify passed a unit with Restart=sometimes"
grep -q 'wren-broken.service:[0-9]*: Failed to parse service restart specifier' "$T/broken.out" ||
    fail "verify did not name the bad Restart= line: $(cat "$T/broken.out")"
sed 's|^ExecStart=/usr/lib/wren/wren-unit |ExecStart=/usr/lib/wren/wren-unitx |' \
    "$UD/wren-coordinator.service" >"$UD/wren-broken.service"
verify "$UD/wren-broken.service" >"$T/broken.out" 2>&1 && fail "verify passed a unit whose program is missing"
grep -q 'wren-unitx is not executable' "$T/broken.out" ||
    fail "verify did not name the missing program: $(cat "$T/broken.out")"
rm -f "$UD/wren-broken.service"
echo "ok   systemd-analyze verify passes the units and flags a bad Restart= and a missing program"

# ---- 3. hardening ------------------------------------------------------------------
levels=()
for u in "${UNITS[@]}"; do
    systemd-analyze security --offline=yes --root="$R" "$u" >"$T/security.out" 2>&1
    lvl=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' "$T/security.out")
    [ -n "$lvl" ] || fail "systemd-analyze security printed no exposure level for $(basename "$u")"
    fge 2.0 "$lvl" || fail "$(basename "$u"): exposure $lvl > 2.0: $(grep '✗' "$T/security.out")"
    levels+=("$(basename "$u" .service)=$lvl")
done
echo "ok   systemd-analyze security --offline: ${levels[*]}"

# ---- 4. env examples and job.conf ------------------------------------------------
UC=(python3 "$ROOT/tests/integration/lib/unit-cmd.py")
for role in coordinator shard worker; do
    case $role in coordinator) u=$UD/wren-coordinator.service ;; *) u=$UD/wren-$role@.service ;; esac
    ex=$R/usr/share/wren/$role.env.example
    vars=$("${UC[@]}" "$u" vars) || fail "unit-cmd.py could not read $u"
    [ -n "$vars" ] || fail "no variables found in $u's ExecStart"
    for v in $vars; do
        grep -q "^$v=" "$ex" || fail "$(basename "$u") uses \$$v, which $(basename "$ex") does not list"
    done
done
"$R/usr/bin/wren-server" coordinator --config "$R/usr/share/wren/job.conf.example" --print-config \
    >"$T/printed.conf" 2>&1 || fail "job.conf.example is not a valid config: $(cat "$T/printed.conf")"
echo "ok   every variable of the units' ExecStart is in their env examples; job.conf.example is valid"

# ---- 5. a job from the units' command lines -----------------------------------
# /etc/wren and /var/lib/wren live under $T; the programs are the installed ones.
E=$T/etc/wren
mkdir -p "$E/keys" "$T/var/lib/wren" "$T/logs" "$T/run/wren-coordinator"
chmod 700 "$E/keys"
MAPS=(--map "/usr=$R/usr" --map "/etc/wren=$E" --map "/var/lib/wren=$T/var/lib/wren")
S=$R/usr/bin/wren-server
"$S" keygen --dir "$E/keys" coordinator >"$E/allow.txt" 2>/dev/null || fail "keygen coordinator failed"
"$S" keygen --dir "$E/keys" shard0 >>"$E/allow.txt" 2>/dev/null || fail "keygen shard0 failed"
"$S" keygen --dir "$E/keys" worker0 >>"$E/allow.txt" 2>/dev/null || fail "keygen worker0 failed"
cp "$R/usr/share/wren/job.conf.example" "$E/job.conf"

# set_var FILE VAR VALUE: VAR's line of an env file (copied from an example) set to VALUE.
set_var() {
    grep -q "^$2=" "$1" || fail "$(basename "$1") has no $2= line"
    sed -i "s|^$2=.*|$2=$3|" "$1"
}
CPORT=$(free_port)
SPORT=$(free_port)
cp "$R/usr/share/wren/coordinator.env.example" "$E/coordinator.env"
cp "$R/usr/share/wren/shard.env.example" "$E/shard-0.env"
cp "$R/usr/share/wren/worker.env.example" "$E/worker.env"
for f in coordinator.env shard-0.env worker.env; do
    set_var "$E/$f" WREN_COORD_ADDR "tcp://127.0.0.1:$CPORT"
done
set_var "$E/coordinator.env" WREN_COORD_BIND "tcp://127.0.0.1:$CPORT"
set_var "$E/shard-0.env" WREN_SHARD_BIND "tcp://127.0.0.1:$SPORT"
set_var "$E/shard-0.env" WREN_SHARD_ADDR "tcp://127.0.0.1:$SPORT"
# The job's size, through the variable meant for overrides (split at spaces).
SMALL="shards=1 workers=1 min_workers=1 max_workers=1 model=synthetic:100000 steps=40"
SMALL+=" digest_every=10 progress_every=0 register_timeout=30 checkpoint_every=10"
set_var "$E/coordinator.env" WREN_COORD_ARGS "$SMALL"

# unit_argv UNIT INSTANCE KEY -> ARGV (the command), UENV (its environment).
unit_argv() {
    local opts=("$1" --instance "$2" --cred-dir "$T/cred/$(basename "$1")$2" "${MAPS[@]}")
    "${UC[@]}" "${opts[@]}" creds || fail "credentials of $(basename "$1") $2"
    mapfile -d '' ARGV < <("${UC[@]}" "${opts[@]}" cmd "$3")
    mapfile -d '' UENV < <("${UC[@]}" "${opts[@]}" env)
    [ ${#ARGV[@]} -gt 0 ] || fail "no $3 command from $(basename "$1")"
}
# run_unit UNIT INSTANCE LOG: runs ExecStart as systemd would (its
# environment only, RUNTIME_DIRECTORY for the coordinator), in the background.
run_unit() {
    unit_argv "$1" "$2" ExecStart
    env -i PATH="$PATH" RUNTIME_DIRECTORY="$T/run/wren-coordinator" "${UENV[@]}" "${ARGV[@]}" >"$3" 2>&1 &
    STARTED+=("$!")
}
# the coordinator's checkpoint_dir comes from job.conf: /var/lib/wren/checkpoints
sed -i "s|^checkpoint_dir *=.*|checkpoint_dir = $T/var/lib/wren/checkpoints|" "$E/job.conf"
run_unit "$UD/wren-coordinator.service" "" "$T/logs/coordinator.log"
COORD=$!
run_unit "$UD/wren-shard@.service" 0 "$T/logs/shard0.log"
SHARD=$!
run_unit "$UD/wren-worker@.service" 0 "$T/logs/worker0.log"
WORKER=$!
await_coordinator "the job started from the units' command lines"
check_digests
for p in "$SHARD:shard@0" "$WORKER:worker@0"; do
    rc=0
    wait "${p%%:*}" || rc=$?
    [ "$rc" = "$WR_EXIT_OK" ] || fail "${p#*:} (run from its unit) exited $rc"
done
[ -s "$T/var/lib/wren/worker-0.json" ] || fail "worker@0 wrote no summary to /var/lib/wren/worker-0.json"
ls "$T/var/lib/wren/checkpoints"/shard0-*.ckpt >/dev/null 2>&1 || fail "no shard checkpoint in checkpoint_dir"
grep -q 'CURVE keys' "$T/logs/coordinator.log" || fail "the coordinator did not run with the unit's keys"
echo "ok   coordinator, shard@0 and worker@0 from their ExecStart lines: exit 0, $DIGESTS_PASSED digest checks agreed"

# ---- 6. wren-unit's refusals ------------------------------------------------------
# An unset variable: named, with the file to set it in; status 2 (not restarted).
sed -i '/^WREN_SHARD_BIND=/d' "$E/shard-0.env"
unit_argv "$UD/wren-shard@.service" 0 ExecStart
rc=0
env -i PATH="$PATH" "${UENV[@]}" "${ARGV[@]}" >"$T/unset.out" 2>&1 || rc=$?
[ "$rc" = "$WR_EXIT_CONFIG" ] || fail "a shard without WREN_SHARD_BIND exited $rc (expected $WR_EXIT_CONFIG)"
grep -q "WREN_SHARD_BIND not set (set in $E/shard-0.env" "$T/unset.out" ||
    fail "wren-unit did not name WREN_SHARD_BIND and its file: $(cat "$T/unset.out")"
echo "ok   an unset WREN_SHARD_BIND is named with its file (exit $rc)"

# restart_case NAME "RESULT CODE STATUS" "OVERRIDES" RC WORDS: the coordinator's
# ExecStopPost records RESULT CODE STATUS as systemd would pass them, then
# ExecStart runs with OVERRIDES (register_timeout=1: an allowed start ends with
# 3, no nodes come); it must exit RC and say WORDS.
restart_case() {
    local rc=0 rec
    read -r -a rec <<<"$2"
    set_var "$E/coordinator.env" WREN_COORD_ARGS "$3 register_timeout=1"
    unit_argv "$UD/wren-coordinator.service" "" ExecStopPost
    env -i PATH="$PATH" RUNTIME_DIRECTORY="$T/run/wren-coordinator" SERVICE_RESULT="${rec[0]}" \
        EXIT_CODE="${rec[1]}" EXIT_STATUS="${rec[2]}" "${ARGV[@]}" || fail "$1: ExecStopPost failed"
    [ -f "$T/run/wren-coordinator/last-exit" ] || fail "$1: ExecStopPost recorded nothing"
    unit_argv "$UD/wren-coordinator.service" "" ExecStart
    env -i PATH="$PATH" RUNTIME_DIRECTORY="$T/run/wren-coordinator" "${UENV[@]}" "${ARGV[@]}" \
        >"$T/restart-$1.out" 2>&1 || rc=$?
    [ "$rc" = "$4" ] || fail "$1: the coordinator's restart exited $rc (expected $4): $(cat "$T/restart-$1.out")"
    grep -q "$5" "$T/restart-$1.out" || fail "$1: wren-unit did not say '$5': $(cat "$T/restart-$1.out")"
    echo "ok   restart after $2 with '${3:-job.conf}': exit $rc, '$5'"
}
NORESUME="resume=off checkpoint_every=0"
restart_case exit1-noresume "exit-code exited 1" "$NORESUME" "$WR_EXIT_CONFIG" "again from step 0"
restart_case exit1-resume "exit-code exited 1" "" "$WR_EXIT_REGISTER_TIMEOUT" "resumes from the newest checkpoint"
restart_case kill-nodir "signal killed KILL" "$NORESUME checkpoint_dir=" "$WR_EXIT_CONFIG" "checkpoint_dir is not set"
restart_case kill-dir "signal killed KILL" "$NORESUME" "$WR_EXIT_REGISTER_TIMEOUT" "takes the running job back"
rm -f "$T/run/wren-coordinator/last-exit"
set_var "$E/coordinator.env" WREN_COORD_ARGS "$NORESUME register_timeout=1"
unit_argv "$UD/wren-coordinator.service" "" ExecStart
rc=0
env -i PATH="$PATH" RUNTIME_DIRECTORY="$T/run/wren-coordinator" "${UENV[@]}" "${ARGV[@]}" \
    >"$T/first.out" 2>&1 || rc=$?
[ "$rc" = "$WR_EXIT_REGISTER_TIMEOUT" ] || fail "a first start without resume exited $rc: $(cat "$T/first.out")"
echo "ok   a first start (no record) runs whatever the config"

pass "make install, systemd-analyze verify (and a broken unit flagged), exposure ${levels[*]}," \
    "a job from the units' command lines, and wren-unit's restart rule"
