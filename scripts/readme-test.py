#!/usr/bin/env python3
"""README as a test (`make readme-test`): every ```sh / ```bash block of
README.md, in order, against a fresh `ledger serve` on a temporary directory
and port, in one bash session (so variables carry from block to block, as
they do for a reader pasting them into one terminal).

Conventions README follows so that it can be checked:
- `<!-- readme-test: skip REASON -->` on the line before a block's fence skips
  it, printing REASON (blocks that need NATS, a long run, or `make run` itself).
- A command is the lines up to where bash can parse them whole (so loops and
  `\\` continuations are one command). Each must exit 0.
- `# -> 201 ...` right after a command promises the HTTP statuses of the curl
  calls it makes, in order (`# -> 201 409 409` for three calls); without a
  promise every call must answer 2xx. Statuses are taken by wrapping curl
  (its `-w` goes to stderr), so the commands stay as a reader runs them.
- `curl -N` (a live stream) is cut after 3 seconds; its status is not checked.
- The harness exports DATA (the data directory) and ADDR (host:port); README's
  first block defaults them to `make run`'s `data` and `127.0.0.1:8080`.

Usage: scripts/readme-test.py [--ledger target/release/ledger] [--readme README.md]
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

FENCE = re.compile(r"^(\s*)```(sh|bash)\s*$")
SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s*(.*?)\s*-->")
PROMISE = re.compile(r"^#\s*->\s*((?:\d{3}\s*)+)")

PRELUDE = r"""
set -u
# curl as README calls it, with each answer's status also written to stderr.
curl() {
  local arg stream=0
  for arg in "$@"; do [ "$arg" = "-N" ] && stream=1; done
  if [ $stream = 1 ]; then
    timeout 3 curl "$@"; local rc=$?
    [ $rc = 124 ] && return 0
    return $rc
  fi
  command curl "$@" -w '%{stderr}readme-test-status %{http_code}\n'
}
check() {  # check LINE RC EXPECTED
  local line=$1 rc=$2 expected=$3 statuses
  grep -v '^readme-test-status ' "$RT/err" >&2
  statuses=$(grep -o '^readme-test-status [0-9]*' "$RT/err" | cut -d' ' -f2 | tr '\n' ' ' | sed 's/ $//')
  [ -n "$statuses" ] && echo "   [statuses: $statuses]"
  if [ "$rc" != 0 ]; then
    echo "README.md:$line: the command exited $rc" >&2; exit 1
  fi
  if [ -n "$expected" ]; then
    if [ "$statuses" != "$expected" ]; then
      echo "README.md:$line: README promises $expected, the server answered ${statuses:-nothing}" >&2; exit 1
    fi
  else
    for s in $statuses; do
      case $s in 2??) ;; *) echo "README.md:$line: answered $s where README promises no refusal" >&2; exit 1 ;; esac
    done
  fi
}
"""


def blocks(lines):
    """(first line number, lines, skip reason or None) of each sh/bash block."""
    found = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent = m.group(1)
        skip = None
        j = i - 1
        while j >= 0 and lines[j].strip() == "":
            j -= 1
        if j >= 0:
            s = SKIP.search(lines[j])
            if s:
                skip = s.group(1) or "marked skip"
        body = []
        k = i + 1
        while k < len(lines) and lines[k].strip() != "```":
            body.append(lines[k][len(indent):] if lines[k].startswith(indent) else lines[k])
            k += 1
        found.append((i + 2, body, skip))
        i = k + 1
    return found


def parses(text):
    return subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True).returncode == 0


def commands(start, body):
    """(line number, command text, promised statuses) of each command of a block."""
    found = []
    pending = []
    first = None
    for offset, line in enumerate(body):
        number = start + offset
        stripped = line.strip()
        if not pending:
            promise = PROMISE.match(stripped)
            if promise and found and found[-1][2] is None:
                found[-1] = (found[-1][0], found[-1][1], " ".join(promise.group(1).split()))
                continue
            if stripped == "" or stripped.startswith("#"):
                continue
            first = number
        pending.append(line)
        text = "\n".join(pending) + "\n"
        if not line.rstrip().endswith("\\") and parses(text):
            found.append((first, text, None))
            pending = []
    if pending:
        sys.exit(f"README.md:{first}: this command never parses as complete shell")
    return found


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ledger", default="target/release/ledger")
    parser.add_argument("--readme", default="README.md")
    args = parser.parse_args()
    root = os.path.dirname(os.path.abspath(args.readme))
    lines = open(args.readme, encoding="utf-8").read().split("\n")

    script = [PRELUDE]
    for start, body, skip in blocks(lines):
        if skip:
            print(f"README.md:{start}: skipped: {skip}")
            continue
        for line, text, expected in commands(start, body):
            shown = text.rstrip("\n").replace("\n", "\n     ")
            script.append(f"printf '%s\\n' {sh_quote('$ ' + shown)}")
            script.append("{\n" + text + '} >"$RT/out" 2>"$RT/err"; rc=$?')
            script.append('sed "s/^/   /" "$RT/out"; [ -s "$RT/out" ] && [ -n "$(tail -c1 "$RT/out")" ] && echo')
            script.append(f"check {line} $rc {sh_quote(expected or '')}")
    script.append('echo "README: every block ran, every promised status answered"')

    scratch = tempfile.mkdtemp(prefix="readme-test-")
    server = None
    try:
        data = os.path.join(scratch, "data")
        server = subprocess.Popen(
            [os.path.abspath(args.ledger), "serve", "--data", data, "--listen", "127.0.0.1:0"],
            stderr=subprocess.PIPE, text=True, env={**os.environ, "RUST_LOG": "info", "NO_COLOR": "1"},
        )
        addr = None
        for line in server.stderr:
            m = re.search(r"listening on (\S+)", line)
            if m:
                addr = m.group(1)
                break
        if addr is None:
            sys.exit("the server exited before listening")
        # Keep draining its log so it never blocks on a full pipe.
        log = open(os.path.join(scratch, "server.log"), "w")
        drain = subprocess.Popen(["cat"], stdin=server.stderr, stdout=log)
        wait_ready(addr)
        rt = os.path.join(scratch, "rt")
        os.mkdir(rt)
        tmp = os.path.join(scratch, "tmp")
        os.mkdir(tmp)
        path = os.path.join(scratch, "readme.sh")
        open(path, "w").write("\n".join(script) + "\n")
        env = {**os.environ, "DATA": data, "ADDR": addr, "RT": rt, "TMPDIR": tmp}
        print(f"server on {addr}, data in {data}")
        result = subprocess.run(["bash", path], cwd=root, env=env)
        if result.returncode != 0:
            log.flush()
            print("--- the server's log ---")
            print(open(os.path.join(scratch, "server.log")).read()[-4000:])
        return result.returncode
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(scratch, ignore_errors=True)


def wait_ready(addr):
    import time
    import urllib.request
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"http://{addr}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.05)
    sys.exit("the server did not become ready")


def sh_quote(text):
    return "'" + text.replace("'", "'\\''") + "'"


if __name__ == "__main__":
    sys.exit(main())
