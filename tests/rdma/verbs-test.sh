#!/bin/sh
# verbs-test.sh — the VM's default test (tests/rdma/vm.sh without --run):
# proves verbs work on the Soft-RoCE device rxe0 that /init set up.
#   1. ibv_devices lists rxe0, ibv_devinfo shows its port 1 PORT_ACTIVE
#   2. ibv_rc_pingpong: a server and a client process exchange messages over
#      a reliable-connected queue pair on rxe0 (GID index from /init)
#   3. rping: the same over rdma_cm, addressed by 10.0.0.1 on dummy0
# Exit status 0 when every step passed, else the number of the first step
# that failed. Environment: WR_RDMA_DEV, WR_RDMA_GID_INDEX, WR_RDMA_ADDR.

dev=${WR_RDMA_DEV:?} gid=${WR_RDMA_GID_INDEX:?} addr=${WR_RDMA_ADDR:?}

step() { echo "verbs-test: $*"; }

# pair NAME SERVER-CMD CLIENT-CMD: starts the server, retries the client
# until the server listens (TCG boots are slow), then waits for both.
pair() {
    name=$1 server=$2 client=$3
    $server >"/tmp/$name-server.log" 2>&1 &
    spid=$!
    tries=0
    until $client >"/tmp/$name-client.log" 2>&1; do
        tries=$((tries + 1))
        if [ "$tries" -ge 20 ] || ! kill -0 "$spid" 2>/dev/null; then
            kill "$spid" 2>/dev/null
            cat "/tmp/$name-server.log" "/tmp/$name-client.log"
            return 1
        fi
        sleep 0.5
    done
    wait "$spid" || { cat "/tmp/$name-server.log"; return 1; }
    tail -n 3 "/tmp/$name-client.log"
    return 0
}

ibv_devices | tee /tmp/devices.log
grep -q "$dev" /tmp/devices.log || { step "FAILED 1: ibv_devices does not list $dev"; exit 1; }
ibv_devinfo -d "$dev" | tee /tmp/devinfo.log
grep -q PORT_ACTIVE /tmp/devinfo.log || { step "FAILED 1: $dev port not PORT_ACTIVE"; exit 1; }
step "passed 1: $dev listed and active"

pair rc "ibv_rc_pingpong -d $dev -g $gid -n 200" \
    "ibv_rc_pingpong -d $dev -g $gid -n 200 127.0.0.1" ||
    { step "FAILED 2: ibv_rc_pingpong on $dev GID index $gid"; exit 2; }
step "passed 2: ibv_rc_pingpong (RC queue pair, 200 iterations)"

pair rping "rping -s -a $addr -C 20 -v" "rping -c -a $addr -C 20 -v" ||
    { step "FAILED 3: rping over rdma_cm at $addr"; exit 3; }
n=$(grep -c '^ping data: rdma-ping-' /tmp/rping-client.log)
[ "$n" -eq 20 ] || { step "FAILED 3: rping client saw $n of 20 ping data lines"; exit 3; }
step "passed 3: rping (rdma_cm, 20 ping-pongs)"
exit 0
