"""Turns the measurements bench/run.sh collected (environment B_*) into a
markdown table on stdout and bench/results.json."""

import json
import os

env = os.environ
me = json.loads(env["B_ME"])
nope = json.loads(env["B_NOPE"])
signup = json.loads(env["B_SIGNUP"])
probe = json.loads(env["B_PROBE"])
ceiling = json.loads(env["B_CEILING"])
mib = lambda kib: round(int(kib) / 1024, 1)
ms = lambda us: round(us / 1000, 2)

signups_200 = signup["status"].get("200", 0)
signups_per_sec = signups_200 / signup["seconds"]
me_ratio = me["rps"] / nope["rps"]
signup_ratio = signups_per_sec / ceiling["hashes_per_sec"]
me_bad = me["non_2xx_3xx"] + probe["non_2xx_3xx"] + sum(
    r[k] for r in (me, probe) for k in ("errors_connect", "errors_read", "errors_write", "errors_timeout"))
signup_bad = signup["requests"] - signups_200 + sum(
    signup[k] for k in ("errors_connect", "errors_read", "errors_write", "errors_timeout"))
cost = env["B_COST"]

# CPU that went elsewhere during each phase (see snap in run.sh), in % of all
# CPUs: "foreign" = user+nice+system ticks not spent by the server or by wrk /
# bcrypt_ceiling; "steal" = taken by the hypervisor.
snaps = {}
with open(env["B_CPU_SNAPS"]) as f:
    for line in f:
        name, *nums = line.split()
        snaps[name] = [int(x) for x in nums]
def interference(start, end):
    d = [b - a for a, b in zip(snaps[start], snaps[end])]
    total = sum(d[0:8]) or 1
    foreign = d[0] + d[1] + d[2] - d[8] - d[9]
    return {"foreign_pct": round(max(foreign, 0) * 100 / total, 1), "steal_pct": round(d[7] * 100 / total, 1)}
phases = {
    "me": interference("start_me", "start_http_ceiling"),
    "http_ceiling": interference("start_http_ceiling", "start_signup"),
    "signup": interference("start_signup", "end_signup"),
    "bcrypt_ceiling": interference("start_bcrypt_ceiling", "end_bcrypt_ceiling"),
}
noisy = [p for p, v in phases.items() if v["foreign_pct"] + v["steal_pct"] > 5]

# (id, name, value, unit, target text, pass: True/False/None for informational)
rows = [
    ("me_rps", "/me throughput, 64 conns", round(me["rps"]), "req/s", "", None),
    ("me_p50_ms", "/me latency p50", ms(me["p50_us"]), "ms", "", None),
    ("me_p99_ms", "/me latency p99", ms(me["p99_us"]), "ms", "", None),
    ("http_ceiling_rps", "HTTP ceiling (GET /nope -> 404), 64 conns", round(nope["rps"]), "req/s", "", None),
    ("http_ceiling_p50_p99_ms", "HTTP ceiling latency p50 / p99", f'{ms(nope["p50_us"])} / {ms(nope["p99_us"])}', "ms", "", None),
    ("me_over_http_ceiling", "/me ÷ HTTP ceiling", round(me_ratio, 3), "", ">= 0.6", me_ratio >= 0.6),
    ("signups_per_sec", f"signups/s, 16 clients, cost {cost} ({signups_200} x 200 in {signup['seconds']:.1f} s)",
     round(signups_per_sec, 2), "1/s", "", None),
    ("bcrypt_ceiling_hashes_per_sec", f"bcrypt ceiling, cost {cost}, {ceiling['threads']} threads", ceiling["hashes_per_sec"], "hashes/s", "", None),
    ("signups_over_bcrypt_ceiling", "signups ÷ bcrypt ceiling", round(signup_ratio, 3), "", ">= 0.85", signup_ratio >= 0.85),
    ("me_p99_during_signups_ms", f"/me p99 during signups (probe: 8 conns, {env['B_PROBE_DELAY_MS']} ms pause, {probe['requests']} reqs)",
     ms(probe["p99_us"]), "ms", "<= 20", probe["p99_us"] <= 20_000),
    ("signup_p50_p99_ms", "signup latency p50 / p99 (16 in flight)", f'{ms(signup["p50_us"])} / {ms(signup["p99_us"])}', "ms", "", None),
    ("idle_rss_mib", "idle RSS (after startup + 50 accounts)", mib(env["B_IDLE_KIB"]), "MiB", "", None),
    ("peak_rss_mib", "peak RSS (VmHWM at end)", mib(env["B_PEAK_KIB"]), "MiB", "<= 64", mib(env["B_PEAK_KIB"]) <= 64),
    ("failed_me_requests", "failed /me requests (non-2xx or socket errors)", me_bad, "", "0", me_bad == 0),
    ("failed_signups", "failed signups (non-200 or socket errors)", signup_bad, "", "0", signup_bad == 0),
]

commands = {
    "invocation": env["B_INVOCATION"],
    "server": env["B_SERVER_CMD"],
    "me": env["B_CMD_ME"],
    "http_ceiling": env["B_CMD_NOPE"],
    "signup": env["B_CMD_SIGNUP"],
    "me_probe_during_signup": env["B_CMD_PROBE"],
    "bcrypt_ceiling": env["B_CMD_CEILING"],
}
verdict = lambda ok: "—" if ok is None else ("pass" if ok else "FAIL")

print(f"## KaggleIngest accounts benchmark\n")
print(f"- date: {env['B_DATE']}")
print(f"- nproc: {env['B_NPROC']}")
print(f"- commit: {env['B_COMMIT']}{' (work tree modified)' if env['B_DIRTY'] == 'true' else ''}")
print(f"- --signup-rate-limit: {env['B_RATE_LIMIT_FLAG']}")
print(f"- machine CPU busy without the benchmark: {env['B_BACKGROUND_BEFORE']}% before, "
      f"{env['B_BACKGROUND_AFTER']}% after (above ~10% skews the results)")
print("- CPU taken by other processes / hypervisor steal per phase: " + ", ".join(
    f"{p} {v['foreign_pct']}% / {v['steal_pct']}%" for p, v in phases.items()))
if noisy:
    print(f"- **WARNING: other work used over 5% of the CPUs during {', '.join(noisy)}: "
          "those numbers are skewed; rerun on an idle machine**")
for name, cmd in commands.items():
    print(f"- {name}: `{cmd}`")
print()
print("| metric | value | target | pass/fail |")
print("|---|---|---|---|")
for _, name, value, unit, target, ok in rows:
    print(f"| {name} | {value}{' ' + unit if unit else ''} | {target or '—'} | {verdict(ok)} |")
checked = [r for r in rows if r[5] is not None]
print(f"\n{sum(1 for r in checked if r[5])} of {len(checked)} targets met.\n")

results = {
    "date": env["B_DATE"],
    "nproc": int(env["B_NPROC"]),
    "commit": env["B_COMMIT"],
    "work_tree_modified": env["B_DIRTY"] == "true",
    "signup_rate_limit_flag": env["B_RATE_LIMIT_FLAG"],
    "background_cpu_busy_pct": {"before": int(env["B_BACKGROUND_BEFORE"]),
                                "after": int(env["B_BACKGROUND_AFTER"])},
    "cpu_interference_pct": phases,
    "commands": commands,
    "metrics": [
        {"id": i, "metric": n, "value": v, "unit": u, "target": t or None, "pass": ok}
        for i, n, v, u, t, ok in rows
    ],
    "raw": {
        "me": me,
        "http_ceiling": nope,
        "signup": signup,
        "me_probe_during_signup": probe,
        "bcrypt_ceiling": ceiling,
        "rss_kib": {"idle": int(env["B_IDLE_KIB"]), "peak": int(env["B_PEAK_KIB"]),
                    "end": int(env["B_END_KIB"])},
    },
}
with open(env["B_OUT"], "w") as f:
    json.dump(results, f, indent=2, ensure_ascii=False)
    f.write("\n")
print(f"results.json ({env['B_OUT']}):")
print(json.dumps(results, indent=2, ensure_ascii=False))
