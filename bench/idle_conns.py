"""Server memory with many idle keep-alive connections, and after they close.

    python3 bench/idle_conns.py PORT SERVER_PID [COUNT] [WAIT_SECONDS]

Opens COUNT (default 4096) connections to 127.0.0.1:PORT; on each it sends
one `GET /healthz` and reads the whole 200 answer, so each is a real HTTP/1.1
keep-alive connection that has served a request and now sits idle. After a
2-second settle it reads the server's VmRSS, checks that every connection is
still open, closes them all, waits WAIT_SECONDS (default 60) and reads VmRSS
again. Prints one JSON line. The server must allow that many connections from
one address and keep idle ones longer than the whole run (see bench/run.sh).
"""

import json
import resource
import socket
import sys
import time

REQUEST = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
SETTLE_S = 2


def rss_kib(pid, key="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise SystemExit(f"idle_conns.py: no {key} for pid {pid}")


def one_request(port):
    """A connection that has completed one request and is idle, kept open."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(REQUEST)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit(f"idle_conns.py: connection closed before an answer: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"idle_conns.py: expected 200, got {head.splitlines()[0]!r}")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit("idle_conns.py: connection closed mid-body")
        body += chunk
    s.setblocking(False)
    return s


def still_open(s):
    try:
        return s.recv(1, socket.MSG_PEEK) != b""  # data would be a surprise, but open
    except BlockingIOError:
        return True
    except OSError:
        return False


def main():
    if len(sys.argv) not in (3, 4, 5):
        sys.exit(__doc__)
    port, pid = int(sys.argv[1]), int(sys.argv[2])
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 4096
    wait = float(sys.argv[4]) if len(sys.argv) > 4 else 60.0
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < count + 64:
        sys.exit(f"idle_conns.py: the open-file hard limit {hard} is below {count} connections")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    before = rss_kib(pid)
    started = time.perf_counter()
    conns = [one_request(port) for _ in range(count)]
    open_seconds = time.perf_counter() - started
    time.sleep(SETTLE_S)
    with_conns = rss_kib(pid)
    open_now = sum(1 for s in conns if still_open(s))
    for s in conns:
        s.close()
    time.sleep(wait)
    after = rss_kib(pid)
    print(json.dumps({
        "connections": count,
        "open_at_measurement": open_now,
        "open_seconds": round(open_seconds, 2),
        "wait_after_close_seconds": wait,
        "rss_before_kib": before,
        "rss_open_kib": with_conns,
        "rss_after_close_kib": after,
        "hwm_kib": rss_kib(pid, "VmHWM"),
    }))


if __name__ == "__main__":
    main()
