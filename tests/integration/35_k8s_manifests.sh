#!/usr/bin/env bash
# deploy/k8s checked offline (no cluster), by lib/k8s-check.py:
# 1. make-keys.sh makes one key per process (shards, max(workers,
#    max_workers) workers, the coordinator), mode 0600, and the allow-list.
# 2. Every manifest against the Kubernetes API types of Debian's
#    python3-kubernetes (unknown fields, types, required fields), the
#    references inside them (selectors, volumes, ports, $(VAR)s), and what
#    wren needs: every option in --help (wren-server ROLE, wren-worker),
#    every job.conf key in docs/CONFIG.md and the file accepted by
#    --print-config, addresses and ports that agree with the Services,
#    --metrics with its probes and scrape annotations, the counts with the
#    job.conf, every key file the pods read in its Secret.
# 3. Each of a set of broken copies is refused, naming what is wrong.
# Depends on --metrics (issue 14 item 1): until wren-server and wren-worker
# list it in --help, step 2 fails naming it.
# shellcheck disable=SC2016  # the sed edits and patterns below quote $(VAR) on purpose
source "$(dirname "$0")/lib/common.bash"

PY=/usr/bin/python3   # Debian's: python3-kubernetes and python3-yaml are its modules
"$PY" -c 'import kubernetes, yaml' 2>/dev/null ||
    fail "$PY cannot import kubernetes and yaml: apt-get install python3-kubernetes python3-yaml (scripts/install-deps.sh)"
K8S=$ROOT/deploy/k8s
CHECK=$ROOT/tests/integration/lib/k8s-check.py

# ---- 1. keys -------------------------------------------------------------------
WREN_SERVER=$BIN/wren-server "$K8S/make-keys.sh" "$T/keys" >"$T/keys.out" 2>&1 ||
    fail "make-keys.sh $T/keys failed: $(cat "$T/keys.out")"
SECRETS=()
while read -r _ _ _ _ name from; do
    SECRETS+=(--secret "$name=${from#--from-file=}")
done < <(grep '^kubectl create secret generic ' "$T/keys.out")
[ ${#SECRETS[@]} = 6 ] || fail "make-keys.sh printed ${#SECRETS[@]}/2 of 3 'kubectl create secret' lines: $(cat "$T/keys.out")"
bad=$(find "$T/keys" -name '*.key' ! -perm 0600)
[ -z "$bad" ] || fail "key files not mode 0600: $bad"
[ "$(grep -c . "$T/keys/coordinator/allow.txt")" = 8 ] ||
    fail "allow.txt: want 8 lines (2 shards, 6 workers = max_workers), got: $(cat "$T/keys/coordinator/allow.txt")"
if "$K8S/make-keys.sh" "$T/keys" >/dev/null 2>&1; then fail "make-keys.sh wrote into an existing directory"; fi
echo "ok   make-keys.sh: coordinator, 2 shard and 6 worker keys (0600), allow-list, 3 Secrets"

# ---- 2. the manifests as they are -------------------------------------------------
# check DIR OUT: runs k8s-check.py on DIR/*.yaml; output in OUT; its status.
check() {
    mkdir -p "$T/out"
    "$PY" "$CHECK" --bin "$BIN" --config-doc "$ROOT/docs/CONFIG.md" --out "$T/out" \
        "${SECRETS[@]}" "$1"/*.yaml >"$2" 2>&1
}
check "$K8S" "$T/check.out" || fail "deploy/k8s refused:
$(cat "$T/check.out")"
echo "ok   $(tail -n 1 "$T/check.out")"

# ---- 3. broken copies are refused -----------------------------------------------------
# broken NAME FILE SED-EXPR WANT: a copy of deploy/k8s with FILE edited by
# SED-EXPR must be refused with a line matching WANT.
BROKEN=0
broken() {
    local d=$T/broken-$1
    BROKEN=$((BROKEN + 1))
    mkdir -p "$d"
    cp "$K8S"/*.yaml "$d/"
    sed -i -e "$3" "$d/$2"
    cmp -s "$K8S/$2" "$d/$2" && fail "broken $1: the edit '$3' changed nothing in $2"
    if check "$d" "$d.out"; then fail "broken $1 ($2: $3) passed the check"; fi
    grep -Eq -- "$4" "$d.out" || fail "broken $1: no line matches '$4':
$(cat "$d.out")"
    echo "ok   refused: $1: $(grep -E -- "$4" "$d.out" | head -n 1)"
}
broken unknown-field worker.yaml 's/imagePullPolicy: IfNotPresent/imagePullPolice: IfNotPresent/' \
    'containers\[0\]\.imagePullPolice: unknown field of V1Container'
broken int-as-string shard.yaml 's/replicas: 2/replicas: "2"/' 'spec\.replicas: want int'
broken annotation-bool coordinator.yaml 's/prometheus.io\/scrape: "true"/prometheus.io\/scrape: true/' \
    'annotations\.prometheus\.io/scrape: want str'
broken required-missing worker.yaml 's/^\(        \)- name: worker$/\1- tty: false/' 'must not be `None`'
broken volume-missing shard.yaml 's/- {name: run, mountPath: \/run\/wren}/- {name: runn, mountPath: \/run\/wren}/' \
    "volumeMount 'runn': no such volume"
broken service-port coordinator.yaml 's/targetPort: metrics/targetPort: metricz/' "targetPort 'metricz'"
broken wren-option worker.yaml 's/- --threads/- --thread/' 'option --thread: not in .*wren-worker --help'
broken shard-option shard.yaml 's/- --coordinator-key/- --coordinator-pub/' 'option --coordinator-pub: not in .*wren-server shard --help'
broken config-key configmap.yaml 's/^    epochs  = 3/    epoch = 3/' "key 'epoch' is not in .*CONFIG.md"
broken config-value configmap.yaml 's/^    lr      = 1e-3/    lr      = fast/' "print-config. exit 2: .*'lr'"
broken shard-count configmap.yaml 's/^    shards  = 2/    shards  = 3/' 'replicas 2: the job.conf says shards = 3'
broken worker-count worker.yaml 's/completions: 4/completions: 3/' 'completions 3, parallelism 4'
broken coord-address worker.yaml 's/tcp:\/\/wren-coordinator:7000/tcp:\/\/wren-coord:7000/' \
    '--coordinator tcp://wren-coord:7000: the coordinator.s Service is tcp://wren-coordinator:7000'
broken shard-port shard.yaml 's/tcp:\/\/$(POD_IP):7001/tcp:\/\/$(POD_IP):7002/' "shard --advertise .*:7002: the container port 'wren' is 7001"
broken env-var shard.yaml 's/\$(POD_IP)/$(POD_ADDR)/' 'POD_ADDR.*not in the container.s env'
broken metrics-loopback worker.yaml 's/- 0.0.0.0:9100/- 127.0.0.1:9100/' 'loopback, which the kubelet'
broken probe-path coordinator.yaml '0,/path: \/metrics,/s//path: \/healthz,/' 'livenessProbe: httpGet /healthz'
broken key-file shard.yaml 's/coordinator.pub/coordinator.key/' 'coordinator.key is not in Secret wren-shard-keys'
broken init-key worker.yaml 's/worker\${WORKER_INDEX}.key/wrk${WORKER_INDEX}.key/' 'no wrk0.key in'
pass "deploy/k8s: API schemas, references, options, config keys, addresses and counts; $BROKEN broken copies refused"
