# shellcheck shell=bash
# netsim.bash — for tests on scripts/netsim's simulated hosts (sourced after
# common.bash). netsim_test_init TAG: skips the test (exit 0, a SKIP line)
# without root; else sets NETSIM and N (a net name of this test's own, TAG plus
# the pid) and an EXIT trap that removes the net, its lock file and then what
# common.bash's cleanup removes.
netsim_test_init() {
    if [ "$(id -u)" != 0 ]; then
        echo "SKIP $TEST_NAME: needs root (network namespaces, tc)"
        exit 0
    fi
    NETSIM=$ROOT/scripts/netsim
    N=$1$$
    trap cleanup_netsim EXIT
}

cleanup_netsim() {
    "$NETSIM" down --name "$N" >/dev/null 2>&1
    rm -f "/run/wren-netsim/$N.lock"  # a name of its own each time: do not pile them up
    cleanup_test
}
