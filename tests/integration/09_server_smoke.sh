#!/usr/bin/env bash
# The server against protocol-only fake workers (tests/tools/wren_fake_worker.c):
# 27 scenarios over ipc and tcp — normal ends for every codec, and the hostile
# or broken ones: digest mismatch (exit 4), dead worker or shard (exit 5),
# registration timeout (3), config errors (2), bad pushes refused, PULL floods
# and oversized frames with bounded memory, late and missing digests, a shard
# stalled on a peer that stops reading. The script fails on any scenario.
set -u
here=$(cd "$(dirname "$0")" && pwd)
out=$(bash "$here/../tools/server_smoke.sh" "${BUILD:-build}" 2>&1)
rc=$?
printf '%s\n' "$out" | grep -E '^(ok|FAIL)' | sed 's/^/  /'
n=$(printf '%s\n' "$out" | grep -c '^ok')
if [ $rc -ne 0 ]; then
    echo "FAIL 09_server_smoke: exit $rc"
    exit 1
fi
echo "PASS 09_server_smoke: $n server scenarios"
