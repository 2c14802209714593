#!/usr/bin/python3
"""pod-cmd.py: a container's command line as a manifest of deploy/k8s gives it.

Usage: pod-cmd.py FILE.yaml CONTAINER [VAR=VALUE ...]
Prints the command and args of the container (or init container) named
CONTAINER in FILE's workload, NUL-separated, with every $(VAR) replaced by
VALUE as the kubelet does from the pod's env. A $(VAR) without a VALUE is an
error (exit 1), so the caller runs exactly what the manifest says.
"""
import re
import sys

import yaml


def main():
    path, name, pairs = sys.argv[1], sys.argv[2], sys.argv[3:]
    values = dict(p.split("=", 1) for p in pairs)
    with open(path) as f:
        for doc in yaml.safe_load_all(f):
            spec = ((doc or {}).get("spec") or {}).get("template", {}).get("spec") or {}
            for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
                if c.get("name") != name:
                    continue
                argv = (c.get("command") or []) + (c.get("args") or [])

                def sub(m):
                    if m.group(1) not in values:
                        sys.exit(f"pod-cmd.py: {path}: container {name}: $({m.group(1)}) has no value given")
                    return values[m.group(1)]

                out = [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", sub, str(a)) for a in argv]
                sys.stdout.write("\0".join(out) + "\0")
                return 0
    sys.exit(f"pod-cmd.py: {path}: no container named {name}")


if __name__ == "__main__":
    sys.exit(main())
