#!/bin/sh
# cluster.sh — inside the Soft-RoCE VM (busybox sh): a small wren job whose
# data goes over rdma:// while control stays on ZeroMQ (tcp):
#   coordinator  --bind tcp://127.0.0.1:PORT
#   2 shards     --bind rdma://$WR_RDMA_ADDR:P1, P2 (mode=ps)
#   2 workers    (their shard endpoints are rdma://, their coordinator tcp://)
# Birder codec (the default), a synthetic model, digest checks every 5 steps.
#   sh cluster.sh BIN_DIR [ps|allreduce] [STEPS] [curve]
# With "curve" every node has CURVE keys (wren-server keygen; the rdma side
# channels then authenticate with them); without, the data endpoints bind
# with --allow-insecure (rdma:// is held to tcp://'s loopback-only default).
# Passes (exit 0) when every process exits 0 and the coordinator logs
# "digest checks: N passed, 0 failed" with N >= 1; else prints the logs and
# exits 1. In mode=allreduce the workers' all-reduce data endpoints take the
# scheme of --data-bind (rdma://).
bin=${1:?usage: cluster.sh BIN_DIR [ps|allreduce] [STEPS] [curve]}
mode=${2:-ps}
steps=${3:-30}
curve=${4:-}
addr=${WR_RDMA_ADDR:?}
export WREN_RDMA_GID_INDEX="${WREN_RDMA_GID_INDEX:-$WR_RDMA_GID_INDEX}"
# Smaller rings than the default 16 x 1 MiB: 4 connections in a 1 GiB VM.
export WREN_RDMA_SLOTS="${WREN_RDMA_SLOTS:-8}" WREN_RDMA_SLOT_BYTES="${WREN_RDMA_SLOT_BYTES:-262144}"
dir=/tmp/cluster-$mode
rm -rf "$dir"
mkdir -p "$dir"
port=$((7300 + $$ % 100))
coord=tcp://127.0.0.1:$port
t0=$(date +%s)

common="workers=2 model=synthetic:200000 steps=$steps digest_every=5 eval=off progress_every=10"
ckeys='' skeys0='' skeys1='' wkeys0='' wkeys1='' insecure=--allow-insecure
if [ "$curve" = curve ]; then
    k=$dir/keys
    mkdir -p "$k"
    chmod 700 "$k"
    "$bin/wren-server" keygen --dir "$k" coordinator >/dev/null 2>&1 || { echo "cluster: keygen failed"; exit 1; }
    for n in s0:shard s1:shard w0:worker w1:worker; do
        "$bin/wren-server" keygen --dir "$k" --role "${n#*:}" "${n%:*}" >>"$k/allow.txt" 2>/dev/null ||
            { echo "cluster: keygen $n failed"; exit 1; }
    done
    ckeys="--key $k/coordinator.key --allow $k/allow.txt"
    skeys0="--key $k/s0.key --coordinator-key $k/coordinator.pub --allow $k/allow.txt"
    skeys1="--key $k/s1.key --coordinator-key $k/coordinator.pub --allow $k/allow.txt"
    wkeys0="--key $k/w0.key --coordinator-key $k/coordinator.pub"
    wkeys1="--key $k/w1.key --coordinator-key $k/coordinator.pub"
    insecure=
fi
# shellcheck disable=SC2086 # ckeys and common are word lists
if [ "$mode" = ps ]; then
    "$bin/wren-server" coordinator --bind "$coord" $ckeys mode=ps shards=2 $common >"$dir/coordinator.log" 2>&1 &
else
    "$bin/wren-server" coordinator --bind "$coord" $ckeys mode=allreduce $common >"$dir/coordinator.log" 2>&1 &
fi
pids=$!
sleep 1
if [ "$mode" = ps ]; then
    for s in 0 1; do
        if [ "$s" = 0 ]; then keys=$skeys0; else keys=$skeys1; fi
        # shellcheck disable=SC2086 # keys and insecure are word lists
        "$bin/wren-server" shard --coordinator "$coord" --bind "rdma://$addr:$((port + 10 + s))" $keys $insecure \
            >"$dir/shard$s.log" 2>&1 &
        pids="$pids $!"
    done
fi
for w in 0 1; do
    extra=
    [ "$mode" = allreduce ] && extra="--data-bind rdma://$addr:$((port + 20 + w)) $insecure"
    if [ "$w" = 0 ]; then keys=$wkeys0; else keys=$wkeys1; fi
    # shellcheck disable=SC2086 # extra and keys are word lists
    "$bin/wren-worker" --coordinator "$coord" $extra $keys >"$dir/worker$w.log" 2>&1 &
    pids="$pids $!"
done
failed=0
for p in $pids; do
    wait "$p" || failed=$((failed + 1))
done
t1=$(date +%s)
line=$(grep -o 'digest checks: [0-9]* passed, [0-9]* failed' "$dir/coordinator.log" | tail -n 1)
echo "cluster-$mode${curve:+ ($curve)}: $failed processes failed; ${line:-no digest line}; $((t1 - t0)) s"
case $line in
"digest checks: 0 passed"*) failed=$((failed + 100)) ;;
*" 0 failed") ;;
*) failed=$((failed + 100)) ;;
esac
if [ "$failed" -ne 0 ]; then
    for f in "$dir"/*.log; do
        echo "==== $f"
        tail -n 30 "$f"
    done
    echo "cluster-$mode: FAILED"
    exit 1
fi
grep -h 'rdma://' "$dir"/*.log | head -n 4
echo "cluster-$mode: passed"
exit 0
