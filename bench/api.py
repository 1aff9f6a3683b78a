#!/usr/bin/env python3
"""HTTP API throughput beside the CLI's time per call (issue 18).

Usage: bench/api.py [TOLLGATE_BINARY]   (default target/release/tollgate)

Starts `tollgate serve` with the API on a loopback port and a SQLite
journal in a temporary directory, makes an API token, then measures, in
ROUNDS rounds of SECONDS each (medians printed, with min and max):
  - POST /api/v1/sessions (issue), WORKERS client processes, one
    keep-alive connection each;
  - GET /api/v1/sessions/{id} (a session with its history), likewise;
  - the CLI: `tollgate session issue` and `tollgate session show`, one
    process per call, CLI_CALLS calls, median milliseconds per call.
Nothing passes or fails: it prints figures.
"""
import http.client
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROUNDS = int(os.environ.get("ROUNDS", "3"))
SECONDS = float(os.environ.get("SECONDS_PER_ROUND", "5"))
WORKERS = int(os.environ.get("WORKERS", "4"))
CLI_CALLS = int(os.environ.get("CLI_CALLS", "30"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(args):
    port, token, method, path, body, seconds = args
    c = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    n, lat = 0, []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.monotonic()
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        r.read()
        if r.status >= 300:
            raise SystemExit(f"{method} {path}: {r.status}")
        lat.append(time.monotonic() - t)
        n += 1
    return n, lat


def rate(port, token, method, path, body):
    with multiprocessing.Pool(WORKERS) as p:
        t = time.monotonic()
        out = p.map(worker, [(port, token, method, path, body, SECONDS)] * WORKERS)
        took = time.monotonic() - t
    n = sum(o[0] for o in out)
    lat = [x for o in out for x in o[1]]
    return n / took, statistics.median(lat) * 1000


def main():
    binary = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/tollgate")
    d = tempfile.mkdtemp(prefix="tollgate-bench-api-")
    ssh_port, api_port = free_port(), free_port()
    user = "nobody" if os.getuid() == 0 else os.environ.get("USER", "nobody")
    cfg = os.path.join(d, "tollgate.toml")
    with open(cfg, "w") as f:
        f.write(f"""[server]
listen = ["127.0.0.1:{ssh_port}"]
host_keys = ["{d}/host_key"]
journal = "{d}/journal.db"
log_level = "warn"
[api]
listen = ["127.0.0.1:{api_port}"]
[profiles.console]
user = "{user}"
command = "/bin/true"
""")
    cli = [binary, "--config", cfg]
    serve = subprocess.Popen(cli + ["serve"], stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", api_port)).close()
                break
            except OSError:
                time.sleep(0.05)
        out = subprocess.run(cli + ["--output", "json", "api-token", "create", "--name", "bench",
                                    "--scope", "sessions:write"], capture_output=True, check=True)
        token = json.loads(out.stdout)["token"]
        body = json.dumps({"profile": "console", "login_user": "ops"})
        c = http.client.HTTPConnection("127.0.0.1", api_port)
        c.request("POST", "/api/v1/sessions", body=body,
                  headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        sid = json.loads(c.getresponse().read())["id"]
        rows = []
        for name, method, path, b in [
            ("POST /api/v1/sessions (issue)", "POST", "/api/v1/sessions", body),
            ("GET /api/v1/sessions/{id}", "GET", f"/api/v1/sessions/{sid}", None),
        ]:
            rs = [rate(api_port, token, method, path, b) for _ in range(ROUNDS)]
            per_s = [r[0] for r in rs]
            lat = [r[1] for r in rs]
            rows.append((name, per_s, lat))
        cli_rows = []
        for name, args in [
            ("tollgate session issue", ["session", "issue", "--profile", "console", "--login-user", "ops"]),
            ("tollgate session show", ["session", "show", sid]),
        ]:
            ms = []
            for _ in range(CLI_CALLS):
                t = time.monotonic()
                subprocess.run(cli + ["--output", "json"] + args, capture_output=True, check=True)
                ms.append((time.monotonic() - t) * 1000)
            cli_rows.append((name, ms))
    finally:
        serve.terminate()
        serve.wait()
        shutil.rmtree(d, ignore_errors=True)
    print(f"HTTP API, {WORKERS} keep-alive clients, {ROUNDS} x {SECONDS:g} s, SQLite journal, {os.cpu_count()} cores")
    print(f"{'request':<32} {'req/s median':>12} {'min':>8} {'max':>8} {'latency ms':>11}")
    for name, per_s, lat in rows:
        print(f"{name:<32} {statistics.median(per_s):>12.0f} {min(per_s):>8.0f} {max(per_s):>8.0f} "
              f"{statistics.median(lat):>11.2f}")
    print(f"CLI, one process per call, {CLI_CALLS} calls")
    print(f"{'command':<32} {'ms median':>12} {'min':>8} {'max':>8} {'calls/s':>11}")
    for name, ms in cli_rows:
        m = statistics.median(ms)
        print(f"{name:<32} {m:>12.1f} {min(ms):>8.1f} {max(ms):>8.1f} {1000 / m:>11.1f}")


if __name__ == "__main__":
    main()
