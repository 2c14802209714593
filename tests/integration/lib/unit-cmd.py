#!/usr/bin/env python3
"""unit-cmd.py — what systemd would run for a wren unit, without systemd.

tests/integration/31_systemd_units.sh uses it to run the installed units'
command lines with the env examples, so that units and examples cannot drift
apart. It follows systemd.service(5) and systemd.exec(5) for what the wren
units use: specifiers %i %H %d %%, line continuations, EnvironmentFile= (the
`-` prefix: a missing file is skipped; KEY=VALUE lines, # and ; comments,
surrounding quotes removed), ${VAR} (the value inside one word, empty when
unset) and $VAR as a word of its own (split at white space into zero or more
words), LoadCredential=NAME:PATH (copied to the credentials directory %d).

  unit-cmd.py UNIT --instance I --cred-dir DIR [--map FROM=TO ...] env
      NUL-separated VAR=VALUE of the unit's environment files, in order
  unit-cmd.py UNIT ... cmd KEY
      NUL-separated argv of KEY (ExecStart, ExecStopPost), variables from the
      environment files
  unit-cmd.py UNIT ... creds
      copies every LoadCredential= file into the --cred-dir
  unit-cmd.py UNIT ... vars
      the names of the variables ExecStart uses, one a line

--map FROM=TO rewrites a path (an argument, an environment file or a
credential's source) that starts with FROM, e.g. /etc/wren=/tmp/t/etc/wren.
Exit status 0, or 2 with a message naming the unit and what is wrong.
"""
import argparse
import os
import re
import shutil
import socket
import sys


def die(msg):
    print(f"unit-cmd.py: {msg}", file=sys.stderr)
    sys.exit(2)


def service_lines(path):
    """The [Service] section's (key, value) pairs, continuations joined."""
    out, section, cur = [], None, ""
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.rstrip("\n")
            if cur:
                line = cur + " " + line.strip()
                cur = ""
            if line.endswith("\\"):
                cur = line[:-1].rstrip()
                continue
            s = line.strip()
            if not s or s[0] in "#;":
                continue
            if s.startswith("["):
                section = s
                continue
            if section == "[Service]" and "=" in s:
                k, v = s.split("=", 1)
                out.append((k.strip(), v.strip()))
    return out


def specifiers(text, a):
    repl = {"i": a.instance, "H": socket.gethostname(), "d": a.cred_dir, "%": "%"}

    def one(m):
        c = m.group(1)
        if c not in repl:
            die(f"{a.unit}: specifier %{c} is not handled here")
        return repl[c]

    return re.sub(r"%(.)", one, text)


def mapped(word, maps):
    for src, dst in maps:
        if word == src or word.startswith(src + "/"):
            return dst + word[len(src):]
    return word


def read_env_file(path, env):
    with open(path, encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            s = raw.strip()
            if not s or s[0] in "#;":
                continue
            if "=" not in s:
                die(f"{path}:{n}: not KEY=VALUE: {s}")
            k, v = s.split("=", 1)
            v = v.strip()
            if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
                v = v[1:-1]
            env[k.strip()] = v


def unit_env(lines, a):
    env = {}
    for k, v in lines:
        if k != "EnvironmentFile":
            continue
        v = specifiers(v, a)
        optional = v.startswith("-")
        path = mapped(v.lstrip("-"), a.maps)
        if os.path.exists(path):
            read_env_file(path, env)
        elif not optional:
            die(f"{a.unit}: EnvironmentFile {path} is missing")
    return env


def expand(cmdline, env):
    argv = []
    for word in cmdline.split():
        m = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if m:
            argv.extend(env.get(m.group(1), "").split())
            continue
        argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda x: env.get(x.group(1), ""), word))
    return argv


def main():
    p = argparse.ArgumentParser()
    p.add_argument("unit")
    p.add_argument("--instance", default="")
    p.add_argument("--cred-dir", default="/run/credentials/x")
    p.add_argument("--map", action="append", default=[])
    p.add_argument("what", choices=["env", "cmd", "creds", "vars"])
    p.add_argument("key", nargs="?", default="ExecStart")
    a = p.parse_args()
    a.maps = [tuple(m.split("=", 1)) for m in a.map]
    lines = service_lines(a.unit)
    if a.what == "env":
        env = unit_env(lines, a)
        sys.stdout.write("".join(f"{k}={v}\0" for k, v in env.items()))
    elif a.what in ("cmd", "vars"):
        cmds = [v for k, v in lines if k == a.key]
        if len(cmds) != 1:
            die(f"{a.unit}: expected one {a.key}=, found {len(cmds)}")
        if a.what == "vars":
            names = re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", cmds[0])
            print("\n".join(sorted(set(names))))
            return
        argv = [mapped(w, a.maps) for w in expand(specifiers(cmds[0], a), unit_env(lines, a))]
        sys.stdout.write("".join(w + "\0" for w in argv))
    else:
        os.makedirs(a.cred_dir, exist_ok=True)
        for k, v in lines:
            if k == "LoadCredential":
                name, src = specifiers(v, a).split(":", 1)
                src = mapped(src, a.maps)
                if not os.path.exists(src):
                    die(f"{a.unit}: LoadCredential {name}: {src} is missing")
                shutil.copy(src, os.path.join(a.cred_dir, name))


if __name__ == "__main__":
    main()
