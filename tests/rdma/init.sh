#!/bin/sh
# init.sh — /init of the Soft-RoCE VM (tests/rdma/vm.sh builds the image and
# boots it). Runs under busybox sh as PID 1 of an initramfs root:
#   1. mounts proc, sys, dev (devtmpfs: /dev/port is the isa-debug-exit door)
#   2. loads the kernel modules listed in /etc/wren-modules, in that order
#      (vm.sh wrote them dependencies first, from each module's depends=)
#   3. puts 10.0.0.1/24 on a dummy0 device (rdma_cm does not resolve on lo)
#      and adds the Soft-RoCE link rxe0 on it
#   4. finds the GID index of 10.0.0.1 in /sys/class/infiniband/rxe0 and
#      writes WR_RDMA_DEV, WR_RDMA_GID_INDEX, WR_RDMA_ADDR to /etc/wren-rdma.env
#   5. runs /etc/wren-test.sh (the verbs self-test, or vm.sh --run's command)
#      with that environment, and hands its exit code to the host by writing
#      it to I/O port 0xf4 (qemu exits with (code << 1) | 1).
# A step that fails reports code 100 + step so the host can name it.

/bin/busybox --install -s /bin
echo # the firmware leaves the console mid-line
export PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
mkdir -p /proc /sys /dev /tmp /run
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/shm /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t devpts devpts /dev/pts

# report CODE: qemu's isa-debug-exit ends the VM with status (CODE << 1) | 1;
# CODE is kept in 0..127 so the host's 8-bit exit status holds it.
report() {
    code=$1
    [ "$code" -gt 127 ] && code=127
    echo "wren-vm: result $code"
    # shellcheck disable=SC2059 # the format is the octal escape of CODE
    printf "\\$(printf %o "$code")" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
    # Only reached without the isa-debug-exit device: the host sees no result.
    poweroff -f
}

fail() {  # fail STEP MESSAGE
    echo "wren-vm: FAILED at $2" >&2
    report $((100 + $1))
}

while read -r ko; do
    [ -n "$ko" ] || continue
    insmod "$ko" || fail 1 "insmod $ko"
done </etc/wren-modules

ip link set lo up || fail 2 "ip link set lo up"
# dummy.ko makes dummy0 itself (numdummies=1); add it only when missing.
ip link show dummy0 >/dev/null 2>&1 ||
    ip link add dummy0 type dummy || fail 2 "ip link add dummy0 type dummy"
ip addr add 10.0.0.1/24 dev dummy0 || fail 2 "ip addr add 10.0.0.1/24 dev dummy0"
# Jumbo frames, as RoCE fabrics use: rxe's path MTU follows the netdev's
# (1500 gives 1024-byte RDMA packets, 9000 gives 4096).
ip link set dummy0 mtu 9000 || fail 2 "ip link set dummy0 mtu 9000"
ip link set dummy0 up || fail 2 "ip link set dummy0 up"
rdma link add rxe0 type rxe netdev dummy0 || fail 3 "rdma link add rxe0 type rxe netdev dummy0"

# The RoCE v2 GID of 10.0.0.1 is its IPv4-mapped IPv6 address.
want=0000:0000:0000:0000:0000:ffff:0a00:0001
gid_index=
for g in /sys/class/infiniband/rxe0/ports/1/gids/*; do
    if [ "$(cat "$g" 2>/dev/null)" = "$want" ]; then
        gid_index=${g##*/}
        break
    fi
done
[ -n "$gid_index" ] || fail 4 "no GID $want under /sys/class/infiniband/rxe0/ports/1/gids"
{
    echo "export WR_RDMA_DEV=rxe0"
    echo "export WR_RDMA_GID_INDEX=$gid_index"
    echo "export WR_RDMA_ADDR=10.0.0.1"
} >/etc/wren-rdma.env
echo "wren-vm: rxe0 up on dummy0 10.0.0.1, GID index $gid_index"

# shellcheck disable=SC3045 # busybox sh has ulimit -l (locked memory)
ulimit -l unlimited
# shellcheck disable=SC1091 # written above
. /etc/wren-rdma.env
cd / || fail 5 "cd /"
sh /etc/wren-test.sh
report $?
