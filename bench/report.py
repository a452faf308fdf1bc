"""Turns what bench/run.sh measured (the files in B_TMP, the environment B_*)
into a markdown table on stdout and bench/results.json."""

import json
import os
from pathlib import Path

env = os.environ
tmp = Path(env["B_TMP"])
mib = lambda kib: round(int(kib) / 1024, 1)
ms = lambda us: round(us / 1000, 2)
phase_errors = [l for l in (tmp / "phase_errors.txt").read_text().splitlines() if l.strip()]


def wrk(phase, required=True):
    """The WRK_JSON summary a Lua done() printed for PHASE, or None when the
    phase could not run (only allowed where run.sh records why)."""
    path = tmp / f"{phase}.out"
    text = path.read_text() if path.exists() else ""
    for line in text.splitlines():
        if line.startswith("WRK_JSON "):
            return json.loads(line.split(" ", 1)[1])
    if required:
        raise SystemExit(f"report.py: no WRK_JSON line for {phase}:\n{text}")
    return None


def one_json(name):
    return json.loads((tmp / f"{name}.out").read_text())


http_phases = {
    "bare_64": ("bare warp (no DB)", 64), "me_64": ("/me", 64), "verify_64": ("verify", 64),
    "me_8": ("/me", 8), "verify_8": ("verify", 8),
    "verify_ram_64": ("verify, database in RAM (diagnostic)", 64),
    "verify_ram_8": ("verify, database in RAM (diagnostic)", 8),
    "nginx_alone_64": ("nginx alone (no auth_request)", 64),
    "nginx_verify_64": ("nginx + auth_request verify", 64),
}
# The RAM phases are skipped when run.sh had no /dev/shm (B_RAM=0); their
# rows are then left out, not failed: they carry no target.
ram_ran = env["B_RAM"] == "1"
ram_phases = {"verify_ram_64", "verify_ram_8"}
optional = {"nginx_alone_64", "nginx_verify_64"} | (set() if ram_ran else ram_phases)
runs = {p: wrk(p, required=p not in optional) for p in http_phases}
signup = wrk("signup")
probe = wrk("me_probe_during_signup")
ceiling = one_json("bcrypt_ceiling")
startup = one_json("startup")
floor = one_json("commit_floor")
floor_busy = one_json("commit_floor_busy")
idle = one_json("idle_conns")
cost = env["B_COST"]

# CPU that went elsewhere during each phase (see snap in run.sh), in % of all
# CPUs: "foreign" = user+nice+system ticks not spent by our processes (the
# servers, nginx, wrk, the ceilings, the helpers); "steal" = taken by the
# hypervisor.
snaps = {}
for line in (tmp / "cpu_snaps.txt").read_text().splitlines():
    name, *nums = line.split()
    snaps[name] = [int(x) for x in nums]


def interference(phase):
    d = [b - a for a, b in zip(snaps[f"start_{phase}"], snaps[f"end_{phase}"])]
    total = sum(d[0:8]) or 1
    foreign = d[0] + d[1] + d[2] - d[8]
    return {"foreign_pct": round(max(foreign, 0) * 100 / total, 1), "steal_pct": round(d[7] * 100 / total, 1)}


phases = {p: interference(p) for p in
          ["startup", *http_phases, "commit_floor", "commit_floor_busy", "signup", "bcrypt_ceiling"]
          if f"start_{p}" in snaps and f"end_{p}" in snaps}
# The busy disk floor exists to show steal; only other processes skew it.
noisy = [p for p, v in phases.items()
         if v["foreign_pct"] + (0 if p == "commit_floor_busy" else v["steal_pct"]) > 5]


def ratio(a, b):
    return None if a is None or b is None else round(a["rps"] / b["rps"], 3)


def failures(*results):
    """Answers other than 200 plus socket errors (connect, read, write,
    timeout); None when one of the phases did not run."""
    if any(r is None for r in results):
        return None
    return sum(r["non_200"] + sum(r[k] for k in ("errors_connect", "errors_read", "errors_write", "errors_timeout"))
               for r in results)


# (id, name, value, unit, target text, check: a function of the value, or None)
at_least = lambda x: (lambda v: v >= x)
at_most = lambda x: (lambda v: v <= x)
rows = []
for phase, (label, conns) in http_phases.items():
    r = runs[phase]
    if phase in ram_phases and not ram_ran:
        continue
    target_p99 = {"verify_64": ("<= 5", at_most(5)), "verify_8": ("<= 1", at_most(1))}.get(phase, ("", None))
    rows += [
        (f"{phase}_rps", f"{label}, {conns} conns: throughput", r and round(r["rps"]), "req/s", "", None),
        (f"{phase}_p50_ms", f"{label}, {conns} conns: p50", r and ms(r["p50_us"]), "ms", "", None),
        (f"{phase}_p99_ms", f"{label}, {conns} conns: p99", r and ms(r["p99_us"]), "ms", *target_p99),
    ]
    if phase == "me_64":
        rows.append(("me_over_bare_warp", "/me ÷ bare warp, 64 conns", ratio(r, runs["bare_64"]), "", ">= 0.6", at_least(0.6)))
    if phase == "verify_64":
        rows.append(("verify_over_me_64", "verify ÷ /me, 64 conns", ratio(r, runs["me_64"]), "", ">= 0.5", at_least(0.5)))
    if phase == "verify_8":
        rows.append(("verify_over_me_8", "verify ÷ /me, 8 conns", ratio(r, runs["me_8"]), "", "", None))
        # Context for both verify p99 targets: a spend waits for at least one
        # such commit, usually two (the batch in flight, then its own).
        rows += [
            ("commit_floor_p50_ms", f"one durable commit alone on this disk ({floor['commits']} back to back): p50",
             ms(floor["p50_us"]), "ms", "", None),
            ("commit_floor_p99_ms", "one durable commit alone on this disk: p99", ms(floor["p99_us"]), "ms", "", None),
            ("commit_floor_max_ms", "one durable commit alone on this disk: max", ms(floor["max_us"]), "ms", "", None),
            ("commit_floor_steal_pct", "one durable commit alone: hypervisor steal", floor["steal_pct"], "%", "", None),
            ("commit_floor_busy_p99_ms", "the same commits, every CPU busy at SCHED_IDLE: p99",
             ms(floor_busy["p99_us"]), "ms", "", None),
            ("commit_floor_busy_max_ms", f"the same, busy: max ({floor_busy['over_1ms']} of "
             f"{floor_busy['commits']} over 1 ms)", ms(floor_busy["max_us"]), "ms", "", None),
            ("commit_floor_busy_steal_pct", "the same, busy: hypervisor steal", floor_busy["steal_pct"], "%", "", None),
        ]
    if phase == "nginx_verify_64":
        rows.append(("nginx_verify_over_alone", "nginx + verify ÷ nginx alone, 64 conns",
                     ratio(r, runs["nginx_alone_64"]), "", ">= 0.4", at_least(0.4)))

# The kernel folds each thread's RSS changes into VmHWM in batches, so it can
# trail a VmRSS read a moment earlier by a few hundred KiB.
peak_kib = max(int(env["B_PEAK_KIB"]), int(env["B_LOADED_PEAK_KIB"]), int(env["B_LOADED_KIB"]),
               idle["rss_open_kib"], idle["hwm_kib"])
signups_200 = signup["status"].get("200", 0)
signups_per_sec = signups_200 / signup["seconds"]
signup_ratio = signups_per_sec / ceiling["hashes_per_sec"]
signup_bad = signup["requests"] - signups_200 + sum(
    signup[k] for k in ("errors_connect", "errors_read", "errors_write", "errors_timeout"))
rows += [
    ("startup_to_first_200_ms", f"start to first 200 from /healthz, median of {startup['runs']} "
     f"(each: {', '.join(str(x) for x in startup['first_200_ms'])})", startup["median_ms"], "ms", "<= 50", at_most(50)),
    ("startup_to_listening_ms", "start to the 'listening on' line, median", startup["listening_line_median_ms"], "ms", "", None),
    ("signups_per_sec", f"signups/s, 16 clients, cost {cost} ({signups_200} x 200 in {signup['seconds']:.1f} s)",
     round(signups_per_sec, 2), "1/s", "", None),
    ("bcrypt_ceiling_hashes_per_sec", f"bcrypt ceiling, cost {cost}, {ceiling['threads']} threads",
     ceiling["hashes_per_sec"], "hashes/s", "", None),
    ("signups_over_bcrypt_ceiling", "signups ÷ bcrypt ceiling", round(signup_ratio, 3), "", ">= 0.95", at_least(0.95)),
    ("me_p99_during_signups_ms", f"/me p99 during signups (probe: 8 conns, {env['B_PROBE_DELAY_MS']} ms pause, "
     f"{probe['requests']} reqs)", ms(probe["p99_us"]), "ms", "<= 20", at_most(20)),
    ("signup_p50_p99_ms", "signup latency p50 / p99 (16 in flight)", f'{ms(signup["p50_us"])} / {ms(signup["p99_us"])}', "ms", "", None),
    ("idle_rss_mib", f"RSS idle (after start + {env['B_ACCOUNTS']} accounts)", mib(env["B_IDLE_KIB"]), "MiB", "", None),
    ("loaded_rss_mib", "RSS idle after every load phase", mib(env["B_LOADED_KIB"]), "MiB", "", None),
    ("loaded_peak_rss_mib", "peak RSS over the load phases (VmHWM)", mib(env["B_LOADED_PEAK_KIB"]), "MiB", "", None),
    ("idle_conns_rss_mib", f"RSS with {idle['connections']} idle keep-alive connections",
     mib(idle["rss_open_kib"]), "MiB", "<= 48", at_most(48)),
    ("idle_conns_open", "idle connections still open when RSS was read",
     idle["open_at_measurement"], f"of {idle['connections']}", f"= {idle['connections']}", lambda v: v == idle["connections"]),
    ("after_close_rss_mib", f"RSS {idle['wait_after_close_seconds']:g} s after they closed",
     mib(idle["rss_after_close_kib"]), "MiB", "< 24", lambda v: v < 24),
    ("peak_rss_mib", "peak RSS over the whole run (VmHWM at end, or a higher VmRSS read)", mib(peak_kib), "MiB", "<= 64", at_most(64)),
    ("failed_bare_warp", "bare warp: non-200 answers + socket errors", failures(runs["bare_64"]), "", "0", at_most(0)),
    ("failed_me", "/me (64, 8, probe): non-200 answers + socket errors",
     failures(runs["me_64"], runs["me_8"], probe), "", "0", at_most(0)),
    ("failed_verify", f"verify (64, 8{', and both in RAM' if ram_ran else ''}): non-200 answers + socket errors",
     failures(*(runs[p] for p in ("verify_64", "verify_8", *(sorted(ram_phases) if ram_ran else ())))),
     "", "0", at_most(0)),
    ("failed_nginx", "nginx (both sites): non-200 answers + socket errors",
     failures(runs["nginx_alone_64"], runs["nginx_verify_64"]), "", "0", at_most(0)),
    ("failed_signups", "signups: non-200 answers + socket errors", signup_bad, "", "0", at_most(0)),
]
# A phase that did not run: its numbers are missing and its targets unmet.
rows = [(i, n, v, u, t, None if check is None else (False if v is None else bool(check(v))))
        for i, n, v, u, t, check in rows]

commands = {"invocation": env["B_INVOCATION"], "knobs": env["B_KNOBS"], "server": env["B_SERVER_CMD"]}
for line in (tmp / "commands.tsv").read_text().splitlines():
    phase, cmd = line.split("\t", 1)
    commands[phase] = cmd
commands["nginx"] = ("python3 bench/nginx_conf.py contrib/nginx.conf DIR 127.0.0.1:SERVER_PORT "
                     "127.0.0.1:UPSTREAM_PORT 127.0.0.1:NGINX_PORT noauth|auth; "
                     "nginx -p DIR -c DIR/nginx.conf -e DIR/error.log")
verdict = lambda ok: "—" if ok is None else ("pass" if ok else "FAIL")
shown = lambda v: "not measured" if v is None else v

print("## KaggleIngest accounts benchmark\n")
print(f"- date: {env['B_DATE']}")
print(f"- nproc: {env['B_NPROC']}")
print(f"- commit: {env['B_COMMIT']}{' (work tree modified)' if env['B_DIRTY'] == 'true' else ''}")
print(f"- bench accounts: {env['B_ACCOUNTS']}, {env['B_CREDITS']} credits each (`kaggleingest user credits EMAIL "
      f"={env['B_CREDITS']} --db DB`)")
print(f"- machine CPU busy without the benchmark: {env['B_BACKGROUND_BEFORE']}% before, "
      f"{env['B_BACKGROUND_AFTER']}% after (above ~10% skews the results)")
print("- CPU taken by other processes / hypervisor steal per phase: " + ", ".join(
    f"{p} {v['foreign_pct']}% / {v['steal_pct']}%" for p, v in phases.items()))
if noisy:
    print(f"- **WARNING: other work used over 5% of the CPUs during {', '.join(noisy)}: "
          "those numbers are skewed; rerun on an idle machine**")
if not ram_ran:
    print("- verify with the database in RAM: skipped (no /dev/shm with 1 GiB free)")
for e in phase_errors:
    print(f"- **ERROR: not measured: {e}**")
for name, cmd in commands.items():
    print(f"- {name}: `{cmd}`")
print()
print("| metric | value | target | met |")
print("|---|---|---|---|")
for _, name, value, unit, target, ok in rows:
    value_text = shown(value) if value is None or not unit else f"{value} {unit}"
    print(f"| {name} | {value_text} | {target or '—'} | {verdict(ok)} |")
checked = [r for r in rows if r[5] is not None]
print(f"\n{sum(1 for r in checked if r[5])} of {len(checked)} targets met.\n")

results = {
    "date": env["B_DATE"],
    "nproc": int(env["B_NPROC"]),
    "commit": env["B_COMMIT"],
    "work_tree_modified": env["B_DIRTY"] == "true",
    "background_cpu_busy_pct": {"before": int(env["B_BACKGROUND_BEFORE"]),
                                "after": int(env["B_BACKGROUND_AFTER"])},
    "cpu_interference_pct": phases,
    "phase_errors": phase_errors,
    "commands": commands,
    "metrics": [
        {"id": i, "metric": n, "value": v, "unit": u, "target": t or None, "pass": ok}
        for i, n, v, u, t, ok in rows
    ],
    "raw": {
        **runs,
        "signup": signup,
        "me_probe_during_signup": probe,
        "bcrypt_ceiling": ceiling,
        "startup": startup,
        "commit_floor": floor,
        "commit_floor_busy": floor_busy,
        "idle_conns": idle,
        "rss_kib": {"idle": int(env["B_IDLE_KIB"]), "after_load": int(env["B_LOADED_KIB"]),
                    "peak_after_load": int(env["B_LOADED_PEAK_KIB"]), "peak_at_end": int(env["B_PEAK_KIB"])},
    },
}
with open(env["B_OUT"], "w") as f:
    json.dump(results, f, indent=2, ensure_ascii=False)
    f.write("\n")
print(f"results.json written to {env['B_OUT']}")
