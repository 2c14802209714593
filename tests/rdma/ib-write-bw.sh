#!/bin/sh
# ib-write-bw.sh — inside the Soft-RoCE VM (installed as wren-ib-write-bw):
# ib_write_bw between a server and a client process on rxe0, the baseline
# for the RDMA transport's throughput (issue 9's rdma_vs_ib_write_bw).
#   wren-ib-write-bw [BYTES [ITERATIONS]]   (defaults 1048576 200)
# Prints "ib_write_bw BYTES <average Gb/s>" and exits 0, or 1 on a failure.
# Environment: WR_RDMA_DEV, WR_RDMA_GID_INDEX (/etc/wren-rdma.env).
size=${1:-1048576} iters=${2:-200}
dev=${WR_RDMA_DEV:?} gid=${WR_RDMA_GID_INDEX:?}
args="-d $dev -x $gid -s $size -n $iters -F --report_gbits"
# shellcheck disable=SC2086 # args is a word list
ib_write_bw $args >/tmp/ib-write-bw-server.log 2>&1 &
spid=$!
tries=0
# shellcheck disable=SC2086
until ib_write_bw $args 127.0.0.1 >/tmp/ib-write-bw-client.log 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -ge 20 ] || ! kill -0 "$spid" 2>/dev/null; then
        kill "$spid" 2>/dev/null
        cat /tmp/ib-write-bw-server.log /tmp/ib-write-bw-client.log
        exit 1
    fi
    sleep 0.5
done
wait "$spid" || { cat /tmp/ib-write-bw-server.log; exit 1; }
# The result row: bytes, iterations, peak, average, message rate.
gbps=$(awk -v s="$size" '$1 == s && NF >= 5 { print $4 }' /tmp/ib-write-bw-client.log | tail -n 1)
[ -n "$gbps" ] || { cat /tmp/ib-write-bw-client.log; exit 1; }
echo "ib_write_bw $size $gbps"
