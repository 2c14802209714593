#!/usr/bin/python3
"""k8s-check.py: checks deploy/k8s/*.yaml offline, for tests/integration/35_k8s_manifests.sh.

Usage: k8s-check.py --bin DIR --config-doc docs/CONFIG.md --out DIR FILE.yaml...

1. Schema: every document against the Kubernetes API types of Debian's
   python3-kubernetes (its model classes: openapi_types, attribute_map):
   an unknown field, a wrong type or a missing required field is an error.
2. References inside the manifests: selectors match their pod labels, every
   volumeMount names a volume, every probe and Service port names a container
   port, every $(VAR) in command/args is in the container's env.
3. What wren needs: every --option a container passes is in the --help of
   the program and role it runs; every config key of the ConfigMap's job.conf
   is a key of docs/CONFIG.md and the file passes `wren-server coordinator
   --print-config --config`; the addresses and ports agree (Service, --bind,
   --advertise, --coordinator, --metrics, probes, scrape annotations); the
   shard and worker counts agree with the job.conf.
Writes job.conf to --out, and sizes.env (SHARDS, WORKERS, MAX_WORKERS) for
the caller. Prints one line per problem, `FILE: kind/name: path: what`; exit 1
if there is any, else 0.
"""
import argparse
import datetime
import os
import re
import subprocess
import sys

import yaml
import kubernetes.client.models as models
from kubernetes.client import ApiClient

ERRORS = []


def err(where, msg):
    ERRORS.append(f"{where}: {msg}")


# ---- 1. schema ----------------------------------------------------------------
def model_for(api_version, kind):
    """The model class name of apiVersion/kind, e.g. apps/v1 Deployment -> V1Deployment."""
    version = api_version.split("/")[-1]
    name = version[0].upper() + version[1:] + kind
    return name if hasattr(models, name) else None


def check_type(value, typ, path, where):
    """Checks value against an openapi_types string, recursively."""
    if value is None:
        return
    if typ == "object":
        return
    m = re.fullmatch(r"list\[(.+)\]", typ)
    if m:
        if not isinstance(value, list):
            return err(where, f"{path}: want a list, got {type(value).__name__}")
        for i, v in enumerate(value):
            check_type(v, m.group(1), f"{path}[{i}]", where)
        return
    m = re.fullmatch(r"dict\(str, (.+)\)", typ)
    if m:
        if not isinstance(value, dict):
            return err(where, f"{path}: want a map, got {type(value).__name__}")
        for k, v in value.items():
            check_type(v, m.group(1), f"{path}.{k}", where)
        return
    simple = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,),
              "datetime": (str, datetime.datetime)}
    if typ in simple:
        ok = isinstance(value, simple[typ]) and not (typ in ("int", "float") and isinstance(value, bool))
        if not ok:
            err(where, f"{path}: want {typ}, got {type(value).__name__} {value!r}")
        return
    cls = getattr(models, typ, None)
    if cls is None:
        return err(where, f"{path}: unknown type {typ} in the client's models")
    if not isinstance(value, dict):
        return err(where, f"{path}: want an object ({typ}), got {type(value).__name__}")
    by_json = {j: a for a, j in cls.attribute_map.items()}
    for k, v in value.items():
        if k not in by_json:
            err(where, f"{path}.{k}: unknown field of {typ}")
        else:
            check_type(v, cls.openapi_types[by_json[k]], f"{path}.{k}", where)


def check_schema(doc, where):
    cls = model_for(doc.get("apiVersion", ""), doc.get("kind", ""))
    if cls is None:
        return err(where, f"apiVersion {doc.get('apiVersion')!r} kind {doc.get('kind')!r}: no such API type")
    check_type(doc, cls, "", where)
    # Required fields and enums: the client's own deserializer refuses them.
    try:
        ApiClient()._ApiClient__deserialize(doc, cls)
    except (ValueError, TypeError) as e:
        err(where, f"{cls}: {e}")


# ---- 2. references ------------------------------------------------------------
def pod_spec(doc):
    return ((doc.get("spec") or {}).get("template") or {}).get("spec")


def check_refs(doc, where):
    spec = doc.get("spec") or {}
    tmpl_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    sel = (spec.get("selector") or {}).get("matchLabels")
    if doc["kind"] in ("Deployment", "StatefulSet") and sel is not None:
        for k, v in sel.items():
            if tmpl_labels.get(k) != v:
                err(where, f"spec.selector.matchLabels {k}={v}: not a label of the pod template")
    ps = pod_spec(doc)
    if not ps:
        return
    volumes = {v.get("name") for v in ps.get("volumes") or []}
    for c in (ps.get("initContainers") or []) + (ps.get("containers") or []):
        cw = f"{where}: container {c.get('name')}"
        for vm in c.get("volumeMounts") or []:
            if vm.get("name") not in volumes:
                err(cw, f"volumeMount {vm.get('name')!r}: no such volume")
        ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            port = ((c.get(probe) or {}).get("httpGet") or {}).get("port")
            if isinstance(port, str) and port not in ports:
                err(cw, f"{probe}: port {port!r} is not a named container port")
        env = {e.get("name") for e in c.get("env") or []}
        for a in (c.get("command") or []) + (c.get("args") or []):
            for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", str(a)):
                if var not in env:
                    err(cw, f"$({var}) in {a!r}: not in the container's env")


def check_service(svc, workloads, where):
    sel = (svc.get("spec") or {}).get("selector") or {}
    match = [w for w in workloads
             if all(((w["spec"]["template"].get("metadata") or {}).get("labels") or {}).get(k) == v
                    for k, v in sel.items())]
    if not match:
        return err(where, f"selector {sel}: selects no pod template")
    for p in svc["spec"].get("ports") or []:
        tp = p.get("targetPort", p.get("port"))
        for w in match:
            names = {cp.get("name"): cp.get("containerPort") for c in pod_spec(w)["containers"]
                     for cp in c.get("ports") or []}
            if (isinstance(tp, str) and tp not in names) or (isinstance(tp, int) and tp not in names.values()):
                err(where, f"port {p.get('name')}: targetPort {tp!r} is not a port of {w['metadata']['name']}")


# ---- 3. what wren needs -----------------------------------------------------------
def help_options(bin_dir, command):
    """{option: takes_value} from the --help of the program (and role) in command."""
    prog = os.path.basename(command[0])
    argv = [os.path.join(bin_dir, prog)] + (command[1:2] if prog == "wren-server" else []) + ["--help"]
    out = subprocess.run(argv, capture_output=True, text=True)
    text = out.stdout + out.stderr
    opts = {}
    for m in re.finditer(r"(--[a-z][a-z0-9-]*)((?: |=)[A-Z][A-Z|]*)?", text):
        opts[m.group(1)] = opts.get(m.group(1), False) or bool(m.group(2))
    return " ".join(argv), opts


def parse_args(argv, opts, cw):
    """{option: value} of a wren command line; unknown options are errors."""
    got, i = {}, 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--"):
            if a not in opts:
                err(cw, f"option {a}: not in `{opts['__help__']}`")
                if i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                    i += 1  # its value, so that the check goes on
                    got[a] = argv[i]
            elif opts[a]:
                i += 1
                got[a] = argv[i] if i < len(argv) else None
            else:
                got[a] = True
        elif "=" not in a:
            err(cw, f"argument {a!r}: neither an option nor key=value")
        i += 1
    return got


def tcp_host_port(addr):
    m = re.fullmatch(r"tcp://(.+):(\d+)", addr or "")
    return (m.group(1), int(m.group(2))) if m else (None, None)


def job_conf(docs, out_dir, config_doc, bin_dir):
    cms = [(w, d) for w, d in docs if d["kind"] == "ConfigMap" and "job.conf" in (d.get("data") or {})]
    if len(cms) != 1:
        err("manifests", f"want one ConfigMap with a job.conf, found {len(cms)}")
        return None, {}
    where, cm = cms[0]
    path = os.path.join(out_dir, "job.conf")
    with open(path, "w") as f:
        f.write(cm["data"]["job.conf"])
    with open(config_doc) as f:
        known = set(re.findall(r"^\| ([a-z_0-9]+) \|", f.read(), re.M))
    conf = {}
    for n, line in enumerate(cm["data"]["job.conf"].splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        k, _, v = line.partition("=")
        conf[k.strip()] = v.strip()
        if k.strip() not in known:
            err(where, f"job.conf:{n}: key {k.strip()!r} is not in {config_doc}")
    p = subprocess.run([os.path.join(bin_dir, "wren-server"), "coordinator", "--print-config",
                        "--config", path], capture_output=True, text=True)
    if p.returncode != 0:
        err(where, f"job.conf: `wren-server coordinator --print-config` exit {p.returncode}: "
            f"{(p.stderr or p.stdout).strip()}")
    return cm, conf


def volume_of(ps, c, path):
    """(volume, mountPath) holding path in container c, or (None, None)."""
    for vm in c.get("volumeMounts") or []:
        mp = vm["mountPath"].rstrip("/") + "/"
        if path.startswith(mp):
            vol = next((v for v in ps.get("volumes") or [] if v["name"] == vm["name"]), None)
            return vol, vm["mountPath"].rstrip("/")
    return None, None


def check_paths(ps, c, got, secrets, cw):
    """Files the options name: in the ConfigMap, a Secret, or written by the init container."""
    inits = " ".join(" ".join(i.get("command") or []) for i in ps.get("initContainers") or [])
    for opt in ("--config", "--key", "--allow", "--coordinator-key"):
        path = got.get(opt)
        if not isinstance(path, str):
            continue
        vol, mp = volume_of(ps, c, path)
        name = path[len(mp) + 1:] if mp else None
        if vol is None:
            err(cw, f"{opt} {path}: on no volume of the pod")
        elif "secret" in vol:
            d = secrets.get(vol["secret"]["secretName"])
            if d is None:
                err(cw, f"{opt} {path}: Secret {vol['secret']['secretName']!r} is not one make-keys.sh makes")
            elif not os.path.exists(os.path.join(d, name)):
                err(cw, f"{opt} {path}: {name} is not in Secret {vol['secret']['secretName']} ({d})")
        elif "configMap" in vol and name != "job.conf":
            err(cw, f"{opt} {path}: the ConfigMap's key is job.conf")
        elif "emptyDir" in vol and path not in inits:
            err(cw, f"{opt} {path}: no init container writes it")


def check_init_keys(ps, count, secrets, cw):
    """The init container's per-ordinal/index key exists for 0 .. count-1."""
    for ic in ps.get("initContainers") or []:
        cmd = " ".join(ic.get("command") or [])
        m = re.search(r"(/[\w/.-]+/)([a-z]+)\$\{[^}]+\}\.key", cmd)
        if not m:
            continue
        vol, mp = volume_of(ps, ic, m.group(1) + "x")
        d = secrets.get(vol["secret"]["secretName"]) if vol and "secret" in vol else None
        if d is None:
            err(cw, f"init container {ic['name']}: {m.group(1)} is not a Secret make-keys.sh makes")
            continue
        for i in range(count):
            if not os.path.exists(os.path.join(d, f"{m.group(2)}{i}.key")):
                err(cw, f"init container {ic['name']}: no {m.group(2)}{i}.key in {d} (make-keys.sh)")


def metrics_checks(w, ps, c, got, cw):
    """--metrics, the metrics port, the probes and the scrape annotations agree."""
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
    m = re.fullmatch(r"(.+):(\d+)", str(got.get("--metrics", "")))
    if not m:
        return err(cw, f"--metrics {got.get('--metrics')!r}: want HOST:PORT")
    if m.group(1) in ("127.0.0.1", "localhost", "[::1]"):
        err(cw, f"--metrics {m.group(0)}: loopback, which the kubelet's probes cannot reach")
    port = int(m.group(2))
    if ports.get("metrics") != port:
        err(cw, f"--metrics port {port}: the container port 'metrics' is {ports.get('metrics')}")
    ann = (w["spec"]["template"].get("metadata") or {}).get("annotations") or {}
    if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != str(port):
        err(cw, f"annotations prometheus.io/scrape, /port: want \"true\", \"{port}\", got "
            f"{ann.get('prometheus.io/scrape')!r}, {ann.get('prometheus.io/port')!r}")
    for probe in ("livenessProbe", "readinessProbe"):
        hg = (c.get(probe) or {}).get("httpGet")
        if not hg:
            err(cw, f"{probe}: none (want httpGet on the metrics endpoint)")
            continue
        p = ports.get(hg.get("port"), hg.get("port"))
        if p != port or hg.get("path") != ann.get("prometheus.io/path", "/metrics"):
            err(cw, f"{probe}: httpGet {hg.get('path')} port {hg.get('port')}: not the metrics endpoint {port}")


def check_wren(docs, args, secrets):
    cm, conf = job_conf(docs, args.out, args.config_doc, args.bin)
    workloads = [(w, d) for w, d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")]
    services = [(w, d) for w, d in docs if d["kind"] == "Service"]
    roles = {}
    for where, w in workloads:
        ps = pod_spec(w)
        for c in ps.get("containers") or []:
            cmd = c.get("command") or []
            if not cmd or os.path.basename(cmd[0]) not in ("wren-server", "wren-worker"):
                continue
            role = cmd[1] if os.path.basename(cmd[0]) == "wren-server" and len(cmd) > 1 else "worker"
            cw = f"{where}: container {c['name']} ({role})"
            shown, opts = help_options(args.bin, cmd)
            opts["__help__"] = shown
            got = parse_args(cmd[2 if role != "worker" else 1:] + (c.get("args") or []), opts, cw)
            roles[role] = (where, w, c, got)
            check_paths(ps, c, got, secrets, cw)
            metrics_checks(w, ps, c, got, cw)
    for want in ("coordinator", "shard", "worker"):
        if want not in roles:
            err("manifests", f"no container runs the {want}")
    if len(roles) < 3 or cm is None:
        return
    # Addresses: the coordinator's Service is what the others dial.
    cwhere, cdep, cc, cgot = roles["coordinator"]
    cports = {p.get("name"): p.get("containerPort") for p in cc.get("ports") or []}
    _, bind_port = tcp_host_port(cgot.get("--bind", "").replace("*", "any"))
    if bind_port is None or cports.get("wren") != bind_port:
        err(cwhere, f"--bind {cgot.get('--bind')}: the container port 'wren' is {cports.get('wren')}")
    clabels = cdep["spec"]["template"]["metadata"]["labels"]
    svc = [s for _, s in services if s["spec"].get("selector") and
           all(clabels.get(k) == v for k, v in s["spec"]["selector"].items())]
    if len(svc) != 1:
        return err(cwhere, f"want one Service selecting the coordinator, found {len(svc)}")
    sport = next((p["port"] for p in svc[0]["spec"]["ports"] if p.get("targetPort") in ("wren", bind_port)), None)
    want = f"tcp://{svc[0]['metadata']['name']}:{sport}"
    for role, opt in (("coordinator", "--advertise"), ("shard", "--coordinator"), ("worker", "--coordinator")):
        where, _, _, got = roles[role]
        if got.get(opt) != want:
            err(where, f"{opt} {got.get(opt)}: the coordinator's Service is {want}")
    swhere, ss, sc, sgot = roles["shard"]
    sports = {p.get("name"): p.get("containerPort") for p in sc.get("ports") or []}
    for opt in ("--bind", "--advertise"):
        _, p = tcp_host_port(str(sgot.get(opt, "")).replace("*", "any"))
        if p != sports.get("wren"):
            err(swhere, f"shard {opt} {sgot.get(opt)}: the container port 'wren' is {sports.get('wren')}")
    # Sizes: the job.conf's against the replicas and completions.
    shards, workers = int(conf.get("shards", 2)), int(conf.get("workers", 4))
    maxw = int(conf.get("max_workers", 0)) or workers
    if ss["spec"].get("replicas") != shards:
        err(swhere, f"replicas {ss['spec'].get('replicas')}: the job.conf says shards = {shards}")
    wwhere, wj, _, _ = roles["worker"]
    comp, par = wj["spec"].get("completions"), wj["spec"].get("parallelism")
    if comp != workers or par != workers:
        err(wwhere, f"completions {comp}, parallelism {par}: the job.conf says workers = {workers}")
    if wj["spec"].get("completionMode") != "Indexed":
        err(wwhere, "completionMode: want Indexed (each index takes its own key)")
    check_init_keys(pod_spec(ss), shards, secrets, swhere)
    check_init_keys(pod_spec(wj), maxw, secrets, wwhere)
    with open(os.path.join(args.out, "sizes.env"), "w") as f:
        f.write(f"SHARDS={shards}\nWORKERS={workers}\nMAX_WORKERS={maxw}\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--config-doc", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--secret", action="append", default=[], help="NAME=DIR: a Secret's files")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    secrets = dict(s.split("=", 1) for s in args.secret)
    docs = []
    for path in args.files:
        try:
            with open(path) as f:
                loaded = list(yaml.safe_load_all(f))
        except yaml.YAMLError as e:
            err(path, f"not YAML: {e}")
            continue
        for d in loaded:
            if not isinstance(d, dict):
                continue
            where = f"{os.path.basename(path)}: {d.get('kind')}/{(d.get('metadata') or {}).get('name')}"
            check_schema(d, where)
            docs.append((where, d))
    for where, d in docs:
        if d.get("kind") in ("Deployment", "StatefulSet", "Job"):
            check_refs(d, where)
    workloads = [d for _, d in docs if d.get("kind") in ("Deployment", "StatefulSet", "Job")]
    for where, d in docs:
        if d.get("kind") == "Service":
            check_service(d, workloads, where)
    if not ERRORS:
        check_wren(docs, args, secrets)
    for e in ERRORS:
        print(e)
    print(f"k8s-check: {len(docs)} documents in {len(args.files)} files, {len(ERRORS)} problems")
    return 1 if ERRORS else 0


if __name__ == "__main__":
    sys.exit(main())
