# sdbox.bash — a throw-away systemd for the tests (sourced after common.bash):
# the host's own /lib/systemd/systemd as PID 1 of new PID, mount, network,
# UTS, IPC and cgroup namespaces, on an overlay of the host's / whose writes
# go to a tmpfs (lib/sdbox-init.sh builds it). The units under test run there
# as on a host: real DynamicUser=, LoadCredential=, sandboxing, restarts.
#   sdbox_usable            0, or 1 after saying why this machine cannot
#   sdbox_boot              boots it; SDBOX_PID = its PID 1 seen from here
#   sdbox CMD...            runs CMD inside (all its namespaces)
#   SDBOX_ROOT              its / seen from here (/proc/PID/root)
#   sdbox_halt              powers it off and removes its cgroup (also on EXIT)
# Needs root, unshare/nsenter (util-linux) and a writable cgroup2 hierarchy.

SDBOX_PID=
SDBOX_ROOT=
SDBOX_CG=

sdbox_usable() {
    if [ "$(id -u)" != 0 ]; then
        echo "sdbox: needs root (namespaces, mounts)" >&2
        return 1
    fi
    local t
    for t in unshare nsenter ip; do
        command -v "$t" >/dev/null || { echo "sdbox: $t is missing" >&2; return 1; }
    done
    [ -x /lib/systemd/systemd ] || { echo "sdbox: /lib/systemd/systemd is missing (Debian package systemd)" >&2; return 1; }
    local cg2
    cg2=$(findmnt -n -t cgroup2 -o TARGET | head -n 1)
    if [ -z "$cg2" ] || [ ! -w "$cg2/cgroup.procs" ]; then
        echo "sdbox: no writable cgroup2 hierarchy" >&2
        return 1
    fi
    SDBOX_CG=$cg2/wren-sdbox-$$
}

sdbox() { nsenter -t "$SDBOX_PID" -a "$@"; }

sdbox_boot() {
    local b=$T/sdbox
    mkdir -p "$b/rw" "$b/root" "$SDBOX_CG"
    trap 'sdbox_halt; cleanup_test' EXIT
    # The subshell joins the new cgroup first, so the namespace's root is it.
    bash -c "echo \$\$ >'$SDBOX_CG/cgroup.procs' && exec unshare --mount --pid --fork --net --uts \
        --ipc --cgroup --propagation private bash '$ROOT/tests/integration/lib/sdbox-init.sh' '$b'" \
        >"$b/boot.log" 2>&1 &
    local st=
    for _ in $(seq 150); do
        SDBOX_PID=$(head -n 1 "$SDBOX_CG/init.scope/cgroup.procs" 2>/dev/null)
        if [ -n "$SDBOX_PID" ]; then
            st=$(sdbox systemctl is-system-running --wait 2>/dev/null) && break
        fi
        sleep 0.2
    done
    [ "$st" = running ] || fail "sdbox: systemd did not come up (state '$st'): $(tail -n 5 "$b/boot.log" "$b/console.log")"
    # shellcheck disable=SC2034  # SDBOX_ROOT is read by the test that sourced this file
    SDBOX_ROOT=/proc/$SDBOX_PID/root
}

sdbox_halt() {
    [ -n "$SDBOX_PID" ] || return 0
    kill -s SIGRTMIN+4 "$SDBOX_PID" 2>/dev/null
    for _ in $(seq 100); do
        kill -0 "$SDBOX_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$SDBOX_PID" 2>/dev/null
    sleep 0.2
    find "$SDBOX_CG" -depth -type d -exec rmdir {} \; 2>/dev/null
    SDBOX_PID=
}
