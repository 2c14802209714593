#!/usr/bin/env bash
# --threads in a cluster: the workers' Birder encode and the apply of the
# shards' broadcasts run on the job's threads (common/parallel.h), split by
# element so every element's arithmetic and random counter are those of one
# thread. The same job (2 shards, 2 workers, Birder, 2 x 2^18-element slices)
# with --threads 1 and --threads 3 must end with the same master-copy digests
# on the shards, and the replicas' digest checks must pass in both.
source "$(dirname "$0")/lib/common.bash"

JOB=(-S 2 -n 2 model=synthetic:524288 codec=birder steps=40 digest_every=10 progress_every=0)
declare -A DIG
for th in 1 3; do
    mkdir -p "$T/t$th"
    TMPDIR=$T "$ROOT/scripts/wren-local" --log-dir "$T/t$th" --threads "$th" "${JOB[@]}" >"$T/t$th.out" 2>&1
    rc=$?
    [ "$rc" = "$WR_EXIT_OK" ] || fail "--threads $th: wren-local exited with $rc: $(tail -n 5 "$T/t$th.out")"
    grep -q "digest checks: [1-9][0-9]* passed, 0 failed" "$T/t$th/coordinator.log" ||
        fail "--threads $th: the replicas' digest checks did not all pass"
    DIG[$th]=$(grep -ho "master copy digest [0-9a-f]*" "$T/t$th"/shard*.log | sort | tr '\n' ' ')
    [ -n "${DIG[$th]}" ] || fail "--threads $th: no shard logged its master copy digest"
done
[ "${DIG[1]}" = "${DIG[3]}" ] ||
    fail "the shards' digests differ between --threads 1 (${DIG[1]}) and --threads 3 (${DIG[3]})"
pass "--threads 1 and 3 end with the same shard digests: ${DIG[1]}"
