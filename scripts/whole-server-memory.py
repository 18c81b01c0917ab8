#!/usr/bin/env python3
"""Whole-server resident memory with closed days (`make bench-whole-server`):
`ledger serve` (release) under libfaketime. Books N bookings (default 100,000)
over 3 days at a fake date when they are open, with 16 keep-alive connections,
then restarts the server (a) at the same fake date, all open: the baseline,
(b) a year later, when the days close at start-up, (c) again, the closings in
the log, and (d) from a snapshot taken after them. Reads VmRSS of the server
3 s after it is ready, beside the empty server's, per booking, beside the
target (200 B an open booking; closed days about 0).

Usage: scripts/whole-server-memory.py target/release/ledger [N]"""
import http.client, json, os, shutil, subprocess, sys, tempfile, threading, time

LEDGER = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
SECRET = "ws-admin-secret-0000000"

def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

def start(data, cfg, fake):
    env = dict(os.environ, FAKETIME_DONT_FAKE_MONOTONIC="1", RUST_LOG="warn")
    env["LD_PRELOAD"] = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
    env["FAKETIME"] = "@" + fake
    p = subprocess.Popen([LEDGER, "serve", "--config", cfg, "--data", data, "--listen", "127.0.0.1:0"],
                         env=dict(env, RUST_LOG="info"), stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    port = None
    seen = []
    while port is None:
        line = p.stderr.readline()
        seen.append(line)
        if not line:
            raise SystemExit("server exited: " + "".join(seen[-5:]))
        if "listening on " in line:
            port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
    threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port); c.request("GET", "/readyz"); r = c.getresponse(); r.read()
            if r.status == 200:
                break
        except OSError:
            pass
        time.sleep(0.05)
    # The server's own pid under faketime's wrapper.
    pid = int(subprocess.check_output(["pgrep", "-P", str(p.pid)]).split()[0]) if subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True).stdout else p.pid
    return p, port, pid

def call(c, method, path, body):
    c.request(method, path, body=json.dumps(body), headers={"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"})
    r = c.getresponse(); data = r.read()
    return r.status, data

TARGET = 200

def main():
    d = tempfile.mkdtemp()
    cfg = os.path.join(d, "ledger.toml")
    open(cfg, "w").write(f'[[token]]\nname = "ops"\nsecret = "{SECRET}"\ntenants = ["*"]\nrole = "admin"\n')
    data = os.path.join(d, "data")
    p, port, pid = start(data, cfg, "2024-01-10 09:00:00")
    c = http.client.HTTPConnection("127.0.0.1", port)
    for doc in range(100):
        s, _ = call(c, "PUT", f"/v1/t/clinics/c{doc % 10}/doctors/d{doc}/schedule", {"slots_per_day": 1000})
        assert s == 200, s
    base = rss(pid)
    def worker(k, count):
        c = http.client.HTTPConnection("127.0.0.1", port)
        for i in range(k, N, count):
            doc, day, slot = i % 100, 8 + (i // 100) % 3, i // 300
            s, body = call(c, "POST", "/v1/t/bookings", {"clinic": f"c{doc % 10}", "doctor": f"d{doc}", "date": f"2024-01-{day:02d}", "slot": slot, "patient": f"Patient {i}"})
            assert s == 201, (s, body)
    t0 = time.time()
    threads = [threading.Thread(target=worker, args=(k, 16)) for k in range(16)]
    [t.start() for t in threads]; [t.join() for t in threads]
    booked = rss(pid)
    print(f"{N} bookings in {time.time() - t0:.1f} s; server RSS {base >> 20} MiB before, {booked >> 20} MiB after: {(booked - base) / N:.0f} B/booking (all open, the server that took them)")
    p.terminate(); p.wait()
    for label, fake in [("restarted, all open", "2024-01-10 09:00:00"), ("restarted a year later: the days close at start-up", "2025-01-10 09:00:00"), ("restarted again, the days closed in the log", "2025-01-10 09:01:00")]:
        p, port, pid = start(data, cfg, fake)
        time.sleep(3)
        c = http.client.HTTPConnection("127.0.0.1", port)
        c.request("GET", "/v1/t/audit", headers={"Authorization": f"Bearer {SECRET}"}); r = c.getresponse(); audit = json.loads(r.read())
        after = rss(pid)
        print(f"{label}: server RSS {after >> 20} MiB: {(after - base) / N:.0f} B/booking above the empty server's (target: closed about 0, open {TARGET}); audit violations {len(audit['violations'])}")
        p.terminate(); p.wait()
    snap = subprocess.run([LEDGER, "snapshot", "--data", data], capture_output=True, text=True)
    print(snap.stdout.strip())
    p, port, pid = start(data, cfg, "2025-01-10 09:02:00")
    time.sleep(3)
    after = rss(pid)
    print(f"restarted from a snapshot taken after the days closed: server RSS {after >> 20} MiB: {(after - base) / N:.0f} B/booking above the empty server's")
    p.terminate(); p.wait()
    shutil.rmtree(d)

main()
