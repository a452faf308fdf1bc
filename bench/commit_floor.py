"""The disk's floor under verify's latency: one durable SQLite commit at a time.

    python3 bench/commit_floor.py DB_PATH SECONDS [busy]

Opens a fresh database at DB_PATH with the server's pragmas (WAL,
synchronous=FULL, checkpoints off the commit path, as the server's
checkpointer thread does every 250 ms), then for SECONDS commits one
`UPDATE ... SET credits = credits - 1` per transaction, back to back, from one
thread, with no HTTP and no batching. Prints one JSON object: commits, p50,
p99 and max latency in microseconds. A spend through the server waits for at
least one such commit (its batch's), usually two (the batch in flight first),
so this bounds from below what verify's p50 and p99 can be on this disk.

With `busy`, the same loop runs while one spinning process per CPU keeps
every CPU busy at SCHED_IDLE: they run only when nothing else wants the CPU,
so the commit loop never waits for them, but the machine looks fully loaded
to whatever it runs on, as it does while wrk floods the server. On a virtual
machine whose host throttles a guest that is busy and flushing, commits
stall here with no HTTP server involved. Both modes also print how many
commits took over 1 ms and the hypervisor's steal over the loop, in % of all
CPU time (/proc/stat).
"""
import json
import os
import sqlite3
import sys
import time

path, seconds = sys.argv[1], float(sys.argv[2])
busy = sys.argv[3:] == ["busy"]
db = sqlite3.connect(path, isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=FULL")
db.execute("PRAGMA wal_autocheckpoint=0")
db.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, credits INTEGER NOT NULL)")
db.executemany("INSERT INTO accounts VALUES (?, ?)", [(i, 10**9) for i in range(50)])
checkpoints = sqlite3.connect(path, isolation_level=None)



def cpu_ticks():
    """All CPU ticks and the steal ticks, from /proc/stat's first line."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:9]]
    return sum(ticks), ticks[7]


spinners = []
if busy:
    for _ in range(os.cpu_count() or 1):
        pid = os.fork()
        if pid == 0:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            while True:
                pass
        spinners.append(pid)

latencies = []
ticks_before = cpu_ticks()
start = last_checkpoint = time.monotonic()
while time.monotonic() - start < seconds:
    began = time.perf_counter()
    db.execute("BEGIN IMMEDIATE")
    db.execute("UPDATE accounts SET credits = credits - 1 WHERE id = ?", (len(latencies) % 50,))
    db.execute("COMMIT")
    latencies.append(time.perf_counter() - began)
    if time.monotonic() - last_checkpoint >= 0.25:
        checkpoints.execute("PRAGMA wal_checkpoint(PASSIVE)")
        last_checkpoint = time.monotonic()

ticks_after = cpu_ticks()
for pid in spinners:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
all_ticks, steal = (b - a for a, b in zip(ticks_before, ticks_after))

latencies.sort()
at = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e6)
print(json.dumps({"commits": len(latencies), "p50_us": at(0.5), "p99_us": at(0.99),
                  "max_us": round(latencies[-1] * 1e6), "busy": busy,
                  "over_1ms": sum(1 for x in latencies if x > 0.001),
                  "steal_pct": round(steal * 100 / max(all_ticks, 1), 1)}))
