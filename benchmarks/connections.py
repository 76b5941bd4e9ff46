"""Connection budgets of `edgerun serve`, measured: a normal request next to the same request while
hostile connections are open, and the cost of an oversized header.

One `edgerun serve` (blazeface, the default limits unless told otherwise, at most 1024 descriptors as
under systemd's default) on 127.0.0.1; --repo runs another checkout, e.g. an older one.
Printed side by side:
  - GET /v2/health/live latency, normal (median of 50);
  - the same while N silent connections are open (default 1000, ten times limits.max_connections):
    how long until a real request is answered (503 + Retry-After once the cap is full) and until
    it is answered 200 again (the silent ones are closed after limits.header_timeout_s);
  - one request with a 200 MB header line: bytes the server read before its 431, the time, and the
    server's CPU seconds for it;
  - the server's peak RSS (VmHWM) before and after.
Targets (issue 12): no input raises peak RSS by more than 150 MB or costs more than 10x a normal request.

Run:  python benchmarks/connections.py [--silent 1000] [--repo OTHER_CHECKOUT] [-- serve options]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def start(repo: Path, options: list[str], nofile: int | None) -> tuple[subprocess.Popen[str], int, list[str]]:
    """`edgerun serve` from ``repo`` (with at most ``nofile`` descriptors, as under systemd's default
    1024); its stderr is drained by a thread into the returned list."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGERUN_")}
    env["PYTHONPATH"] = str(repo)
    command = [sys.executable, "-m", "edgerun", "serve", "--port", "0", *options]
    def limit() -> None:
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    process = subprocess.Popen(command, cwd=repo, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               text=True, preexec_fn=limit)
    assert process.stderr is not None
    for line in process.stderr:
        found = re.search(r"running on http://127\.0\.0\.1:(\d+)", line)
        if found:
            port = int(found.group(1))
            break
    else:
        raise SystemExit("edgerun serve did not start")
    log: list[str] = []
    threading.Thread(target=lambda: log.extend(process.stderr or ()), daemon=True).start()
    while httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code != 200:
        time.sleep(0.05)
    return process, port, log


def status(pid: int) -> tuple[float, float]:
    """(peak RSS in MB, CPU seconds) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    hwm = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return (int(hwm.group(1)) / 1024 if hwm else 0.0), cpu


def live_ms(port: int, timeout: float = 60.0) -> tuple[int, float]:
    """(status, ms) of GET /v2/health/live on a new connection; status 0 when none came in time."""
    started = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            line = sock.recv(64).split(b"\r\n", 1)[0]
        code = int(line.split()[1]) if line.startswith(b"HTTP/1.1 ") else 0
    except OSError:
        code = 0
    return code, (time.perf_counter() - started) * 1000


def silent_connections(port: int, count: int, give_up_s: float) -> tuple[float, float, int]:
    """(ms until a real request is answered, s until it is answered 200, its first status); a status
    of 0 is no answer within ``give_up_s``."""
    sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    try:
        time.sleep(0.5)  # the server has seen them all
        started = time.perf_counter()
        first, first_ms = live_ms(port, give_up_s)
        while live_ms(port, give_up_s)[0] != 200 and time.perf_counter() - started < give_up_s:
            time.sleep(0.05)
        return first_ms, time.perf_counter() - started, first
    finally:
        for sock in sockets:
            sock.close()


def huge_header(port: int, megabytes: int) -> tuple[int, float, bytes]:
    """(bytes sent before the server stopped reading, seconds, the answer's status line)."""
    sent = 0
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: ")
        chunk = b"a" * 65536
        try:
            while sent < megabytes * 1024 * 1024:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        sock.settimeout(60)
        try:
            answer = sock.recv(200)
        except OSError:
            answer = b"(connection reset)"
    return sent, time.perf_counter() - started, answer.split(b"\r\n", 1)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--silent", type=int, default=1000, help="silent connections to open")
    parser.add_argument("--header-mb", type=int, default=200, help="size of the oversized header line")
    parser.add_argument("--give-up", type=float, default=30.0, help="seconds to wait for an answer")
    parser.add_argument("--server-nofile", type=int, default=1024,
                        help="the server's descriptor limit (systemd's default soft limit: 1024)")
    parser.add_argument("--repo", type=Path, default=REPO, help="edgerun checkout to run (e.g. an older one)")
    parser.add_argument("serve_options", nargs="*", default=["--model", "blazeface"],
                        help="options for edgerun serve (default: --model blazeface)")
    args = parser.parse_args()
    process, port, log = start(args.repo, args.serve_options, args.server_nofile)
    try:
        rss_before, _ = status(process.pid)
        normal = statistics.median(live_ms(port)[1] for _ in range(50))
        print(f"normal GET /v2/health/live: {normal:.2f} ms (median of 50); peak RSS {rss_before:.1f} MB")
        lines = len(log)
        first_ms, recovered_s, first = silent_connections(port, args.silent, args.give_up)
        print(f"{args.silent} silent connections: a real request answered {first or 'nothing'} in "
              f"{first_ms:.2f} ms ({first_ms / normal:.1f}x normal); 200 again after {recovered_s:.1f} s; "
              f"{len(log) - lines} log line(s)")
        errors = [line for line in log[lines:] if line.startswith(("ERROR", "WARNING"))]
        print("".join(errors[:5]), end="")
        _, cpu_before = status(process.pid)
        sent, seconds, line = huge_header(port, args.header_mb)
        _, cpu_after = status(process.pid)
        print(f"{args.header_mb} MB header line: {line.decode(errors='replace')} after {sent / 1024:.0f} KiB "
              f"sent, {seconds * 1000:.1f} ms; server CPU {cpu_after - cpu_before:.2f} s")
        rss_after, _ = status(process.pid)
        print(f"peak RSS: {rss_before:.1f} MB before, {rss_after:.1f} MB after "
              f"(+{rss_after - rss_before:.1f} MB; target <= +150 MB)")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


if __name__ == "__main__":
    main()
