"""Start to first answer: how long `kaggleingest serve` takes from launch to
its first 200 from /healthz, with a fresh database in a temp dir, port 0 and
every setting at its default (bcrypt cost 12 included).

    python3 bench/startup.py BINARY [RUNS]

Each run launches the binary, reads its stderr for the "listening on
http://127.0.0.1:PORT" line, then polls GET /healthz back to back (one new
connection per try, no sleeping) until a 200, and stops the server with
SIGTERM. Prints one JSON line: every run in ms, the median, and the median
time to the "listening on" line alone.
"""

import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

LISTENING = re.compile(rb"listening on http://127\.0\.0\.1:(\d+)")
DEADLINE_S = 30


def healthz_ok(port):
    """One try: True on a 200, False when refused or anything else."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            head = s.recv(64)
            return head.startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def one_run(binary, env):
    with tempfile.TemporaryDirectory(prefix="kaggleingest-startup.") as tmp:
        started = time.perf_counter()
        server = subprocess.Popen(
            [binary, "serve", "--bind", "127.0.0.1:0", "--db", os.path.join(tmp, "start.db")],
            cwd=tmp,  # no ./kaggleingest.toml can apply
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            port, seen = None, []
            for line in server.stderr:
                seen.append(line)
                m = LISTENING.search(line)
                if m:
                    port = int(m.group(1))
                    break
            if port is None:
                sys.exit("startup.py: the server exited without a 'listening on' line:\n"
                         + b"".join(seen).decode(errors="replace"))
            listening = time.perf_counter()
            while not healthz_ok(port):
                if server.poll() is not None or time.perf_counter() - started > DEADLINE_S:
                    sys.exit(f"startup.py: no 200 from /healthz on port {port}")
            answered = time.perf_counter()
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.communicate()
    return (answered - started) * 1000, (listening - started) * 1000


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    binary = os.path.abspath(sys.argv[1])
    runs = int(sys.argv[2]) if len(sys.argv) == 3 else 5
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLEINGEST_")}
    env["NO_COLOR"] = "1"
    results = [one_run(binary, env) for _ in range(runs)]
    first = [round(r[0], 1) for r in results]
    listen = [round(r[1], 1) for r in results]
    print(json.dumps({
        "runs": runs,
        "first_200_ms": first,
        "median_ms": round(statistics.median(first), 1),
        "listening_line_median_ms": round(statistics.median(listen), 1),
    }))


if __name__ == "__main__":
    main()
