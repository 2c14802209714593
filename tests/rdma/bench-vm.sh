#!/bin/sh
# bench-vm.sh — inside the Soft-RoCE VM (busybox sh), for tests/rdma/bench.sh:
# ib_write_bw, wren's rdma transport and wren's zmq transport (tcp on
# dummy0's address) at 1 MiB messages (best of WR_BENCH_REPS rounds, default
# 3), then 64 B round trips of both transports; prints the FIGURE lines of
# issue 9 (throughput ratios).
#   sh bench-vm.sh WREN_PERF [COUNT]
perf=${1:?usage: bench-vm.sh WREN_PERF [COUNT]}
count=${2:-200}
addr=${WR_RDMA_ADDR:?}
export WREN_RDMA_GID_INDEX="${WREN_RDMA_GID_INDEX:-$WR_RDMA_GID_INDEX}"

# pair MODE-SERVER MODE-CLIENT ADDR SIZE COUNT: runs both wren-perf sides and
# prints the FIGURE line of the side that reports.
pair() {
    if [ "$1" = lat-server ]; then
        "$perf" "$1" "$3" >/tmp/perf-server.log 2>&1 &
    else
        "$perf" "$1" "$3" "$4" "$5" >/tmp/perf-server.log 2>&1 &
    fi
    spid=$!
    sleep 1
    if [ "$1" = lat-server ]; then
        "$perf" "$2" "$3" 64 "$5" >/tmp/perf-client.log 2>&1 || { cat /tmp/perf-*.log; kill "$spid"; return 1; }
        wait "$spid" 2>/dev/null  # the client's SHUTDOWN ends it
        grep '^FIGURE' /tmp/perf-client.log
    else
        "$perf" "$2" "$3" "$4" "$5" >/tmp/perf-client.log 2>&1 || { cat /tmp/perf-*.log; kill "$spid"; return 1; }
        wait "$spid" || { cat /tmp/perf-server.log; return 1; }
        grep '^FIGURE' /tmp/perf-server.log
    fi
}

# Throughput: REPS rounds of ib_write_bw, wren rdma, wren zmq in turn (drift
# on the shared host hits all three alike); the best of each is kept.
reps=${WR_BENCH_REPS:-3}
ib_gbps=0 rg=0 zg=0
best() { awk -v a="$1" -v b="$2" 'BEGIN { print (b + 0 > a + 0) ? b : a }'; }
i=0
while [ "$i" -lt "$reps" ]; do
    i=$((i + 1))
    ib=$(wren-ib-write-bw 1048576 "$count") || { echo "bench: ib_write_bw failed"; exit 1; }
    echo "round $i: $ib"
    ib_gbps=$(best "$ib_gbps" "$(echo "$ib" | awk '{ print $3 }')")  # Gb/s
    r=$(pair thr-recv thr-send "rdma://$addr:$((7600 + 2 * i))" 1MiB "$count") ||
        { echo "$r"; echo "bench: step 2 failed"; exit 2; }
    echo "round $i: $r"
    rg=$(best "$rg" "$(echo "$r" | awk '{ print $3 }')")  # GB/s
    z=$(pair thr-recv thr-send "tcp://$addr:$((7601 + 2 * i))" 1MiB "$count") ||
        { echo "$z"; echo "bench: step 3 failed"; exit 3; }
    echo "round $i: $z"
    zg=$(best "$zg" "$(echo "$z" | awk '{ print $3 }')")
done
rl=$(pair lat-server lat-client "rdma://$addr:7603" 64 1000) || { echo "$rl"; echo "bench: step 4 failed"; exit 4; }
echo "$rl"
zl=$(pair lat-server lat-client "tcp://$addr:7604" 64 1000) || { echo "$zl"; echo "bench: step 5 failed"; exit 5; }
echo "$zl"
# wren-perf reports GB/s (bytes), ib_write_bw Gb/s (bits).
awk -v ib="$ib_gbps" -v r="$rg" -v z="$zg" \
    -v rl="$(echo "$rl" | awk '{ print $3 }')" -v zl="$(echo "$zl" | awk '{ print $3 }')" 'BEGIN {
    printf "FIGURE rdma_vs_ib_write_bw %.3f  (goal >= 0.5; wren rdma %.3f Gb/s, ib_write_bw %.3f Gb/s, 1 MiB)\n", r * 8 / ib, r * 8, ib
    printf "FIGURE rdma_vs_zmq_in_vm %.3f  (goal > 1; wren rdma %.3f GB/s, wren zmq tcp %.3f GB/s, 1 MiB)\n", r / z, r, z
    printf "FIGURE ib_write_bw_vs_zmq_in_vm %.3f  (the bound of rdma_vs_zmq_in_vm here: Soft-RoCE itself against loopback tcp)\n", ib / 8 / z
    printf "FIGURE rdma_lat64_us %.1f  (wren rdma, 64 B round trip; zmq tcp beside it: %.1f us)\n", rl, zl
    printf "FIGURE zmq_in_vm_lat64_us %.1f  (wren zmq tcp, 64 B round trip)\n", zl
}'
