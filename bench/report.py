#!/usr/bin/env python3
"""Turns a bench/run results folder into BENCHMARKS.md (stdout).

usage: report.py RESULTS_DIR ELAPSED_SECONDS COMMAND [PREVIOUS_REPORT]

With PREVIOUS_REPORT, a run of only the cluster scenario prints that report
with its Scale-out section replaced (bench/scale_out.py).
"""
import glob
import json
import os
import platform
import statistics
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in bench/
import scale_out  # noqa: E402 (after the line above)

results_dir, elapsed, command = sys.argv[1], int(sys.argv[2]), sys.argv[3]

runs = {}  # (scenario, target) -> [result dicts]
by_rep = {}  # (scenario, target) -> {rep: result dict}, to pair targets per repetition
cmds = {}
for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
    with open(path) as f:
        d = json.load(f)
    # Files are SCENARIO-TARGET-REP.json; scenario and target may contain '-'.
    stem, rep = os.path.basename(path)[:-5].rsplit("-", 1)
    key = (stem[: -len(d["label"]) - 1] if stem.endswith("-" + d["label"]) else stem, d["label"])
    r = d["result"]
    # Server CPU per unit of work (older load tools: only in cpu_by_process).
    if "cpu_us_per_msg" not in r and isinstance(r.get("cpu_by_process"), dict):
        r["cpu_us_per_msg"] = r["cpu_by_process"].get("server_us_per_unit")
    cpu = r.get("cpu_by_process")
    # Only a figure read in 10 ms ticks can be coarse (schedstat is in ns).
    if isinstance(cpu, dict) and cpu.get("source") != "schedstat" and isinstance(cpu.get("server_us"), (int, float)):
        r["cpu_ticks"] = cpu["server_us"] / 1e4  # 10 ms ticks
    if isinstance(r.get("msgs_per_s"), (int, float)) and isinstance(r.get("size"), (int, float)):
        r["mib_per_s"] = r["msgs_per_s"] * r["size"] / (1 << 20)
    runs.setdefault(key, []).append(r)
    by_rep.setdefault(key, {})[rep] = r
    cmd_path = path[:-5] + ".cmd"
    if os.path.exists(cmd_path) and key not in cmds:
        cmds[key] = open(cmd_path).read().strip()


def get(r, dotted):
    for part in dotted.split("."):
        r = r.get(part) if isinstance(r, dict) else None
    return r


def values(scn, tgt, metric):
    return [v for v in (get(r, metric) for r in runs.get((scn, tgt), [])) if isinstance(v, (int, float))]


def med(scn, tgt, metric):
    v = values(scn, tgt, metric)
    return statistics.median(v) if v else None


def fmt(x, unit=""):
    if x is None:
        return "—"
    if abs(x) >= 1000:
        s = f"{x:,.0f}"
    elif abs(x) >= 10:
        s = f"{x:.1f}"
    elif abs(x) >= 0.1 or x == 0:
        s = f"{x:.2f}"
    else:
        # Small figures (sub-0.1 ms latencies) keep two significant digits.
        s = f"{x:.2g}" if abs(x) >= 1e-4 else f"{x:.1e}"
    return s + unit


# Server CPU comes from per-thread schedstat (ns) where the kernel has it;
# else in 10 ms ticks: under 100 of them in a run, one tick is over 1 % of
# the figure (marked †).
MIN_TICKS = 100


def coarse(scn, *tgts):
    return any(t < MIN_TICKS for tg in tgts for t in values(scn, tg, "cpu_ticks"))


def cell(scn, tgt, metric, unit=""):
    v = values(scn, tgt, metric)
    if not v:
        return "—"
    mark = " †" if metric == "cpu_us_per_msg" and coarse(scn, tgt) else ""
    return f"{fmt(statistics.median(v), unit)} ({fmt(min(v))}–{fmt(max(v))}){mark}"


COARSE_NOTE = (f"† The server used under {MIN_TICKS} CPU ticks (1 s) in a run of this scenario: "
               "one 10 ms tick is over 1 % of the figure; more messages would make it finer.")


def ratio(a, b, invert=False):
    if a is None or b is None or a == 0 or b == 0:
        return None
    return b / a if invert else a / b


def paired(scn, tgt, ref, metric):
    """tgt/ref of `metric` in each repetition that ran both (they ran back to back)."""
    a, b = by_rep.get((scn, tgt), {}), by_rep.get((scn, ref), {})
    out = []
    for rep in sorted(set(a) & set(b)):
        x, y = get(a[rep], metric), get(b[rep], metric)
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and y:
            out.append(x / y)
    return out


def paired_cell(scn, tgt, ref, metric):
    v = paired(scn, tgt, ref, metric)
    if not v:
        return "—"
    m = statistics.median(v)
    return f"{m:.2f}×" + (f" ({min(v):.2f}–{max(v):.2f})" if len(v) > 1 else "")


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception:
        return "?"


TARGETS = [t for t in ["edk", "edk-old", "bare", "node"] if any(k[1] == t for k in runs)]
NAMES = {"edk": "edk-ws", "edk-old": "edk-ws (old build)", "bare": "bare tokio-tungstenite", "node": "Node ws"}
reps = max((len(v) for v in runs.values()), default=0)

out = []
p = out.append
p("# Benchmarks")
p("")
p(f"Produced by `{command}` (the whole run took {elapsed} s). Each scenario ran "
  f"{reps} time(s) per server, alternating servers, each run against a freshly "
  "started server process; the load tool (`examples/load.rs`) ran on the same "
  "machine over loopback. Cells are **median (min–max)**; \"Ratio vs\" lines are ratios "
  "of medians; the *÷ bare* rows and the issue-13 targets use the **median over repetitions of the "
  "per-repetition ratio** (min–max), each repetition having run both servers back to back. "
  "*Server CPU* is the server process's time on a CPU (the sum over its threads of "
  "`/proc/PID/task/TID/schedstat`, in ns; where the kernel lacks it, utime + stime in 10 ms "
  "ticks) over the measured phase, read by the load tool when the phase starts and "
  "ends, divided by the echoes, deliveries or handshakes of that phase. "
  "These 2-core machines are noisy: read ratios, not absolutes.")
p("")
p("## Machine")
p("")
cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
mem = sh("free -h | awk '/Mem:/ {print $2}'")
p(f"- CPU: {cpu} × {os.cpu_count()} cores")
p(f"- Memory: {mem}; kernel {platform.release()}")
p(f"- Rust: {sh('rustc --version')}; Node: {sh('node --version') or 'n/a'}")
loads = [os.path.join(results_dir, f"loadavg-{w}.txt") for w in ("before", "after")]
if all(os.path.exists(f) for f in loads):
    before, after = (open(f).read().strip() for f in loads)
    p(f"- Load average (1, 5, 15 min) before the run: {before}; after: {after}")
p("")
p("Servers: **edk-ws** = `examples/server.rs` with default options (JWT auth, rooms and "
  "presence on, member events on); **bare** = `examples/bare_server.rs` (tokio-tungstenite, "
  "same buffers and coalescing writer, no auth, no protobuf); **Node ws** = "
  "`bench/node/server.js` (ws 8, no compression).")
if "edk-old" in TARGETS:
    p("")
    p(f"**edk-ws (old build)** = `{os.environ.get('EDK_OLD_BIN', '?')}`, the same example server "
      "built from another checkout, same options, driven by this checkout's load tool. Its rows "
      "compare old and new: new/old is the ratio of medians; \"within spread\" says whether the "
      "medians differ by no more than the run-to-run spread (max − min) of either build's runs.")
p("")

sections = [
    ("echo", "Echo (closed loop, one message in flight per connection)",
     [("msgs/s", "msgs_per_s", ""), ("RTT p50 ms", "rtt_ms.p50", ""), ("RTT mean ms", "rtt_ms.mean", ""), ("RTT p99 ms", "rtt_ms.p99", ""),
      ("RTT p99.9 ms", "rtt_ms.p999", ""), ("server CPU µs/echo", "cpu_us_per_msg", "")],
     "msgs_per_s", False),
    ("echo-1", "Light-load echo (one connection, closed loop; edk-ws with its inbound budget lifted)",
     [("msgs/s", "msgs_per_s", ""), ("RTT p50 ms", "rtt_ms.p50", ""), ("RTT p99 ms", "rtt_ms.p99", ""),
      ("server CPU µs/echo", "cpu_us_per_msg", "")],
     "rtt_ms.p50", True),
    ("echo-1mib", "Large-message echo (closed loop, messages just under 1 MiB; edk-ws with its inbound byte budget lifted)",
     [("MiB/s", "mib_per_s", ""), ("msgs/s", "msgs_per_s", ""), ("RTT p50 ms", "rtt_ms.p50", ""), ("RTT p99 ms", "rtt_ms.p99", ""),
      ("server CPU µs/echo", "cpu_us_per_msg", "")],
     "mib_per_s", False),
    ("fanout", "Fanout throughput (one room, publisher as fast as possible)",
     [("deliveries/s", "deliveries_per_s", ""), ("p50 ms", "latency_ms.p50", ""), ("p99 ms", "latency_ms.p99", ""), ("missing", "missing", ""),
      ("server CPU µs/delivery", "cpu_us_per_msg", "")],
     "deliveries_per_s", False),
    ("fanout-rate", "Fanout latency (one room, fixed publish rate)",
     [("p50 ms", "latency_ms.p50", ""), ("p99 ms", "latency_ms.p99", ""), ("max ms", "latency_ms.max", ""), ("missing", "missing", ""),
      ("server CPU µs/delivery", "cpu_us_per_msg", "")],
     "latency_ms.p99", True),
    ("idle", "Idle memory (server RSS growth per connection; edk-ws connections joined a room of 50 and set an activity)",
     [("bytes/conn", "bytes_per_conn", ""), ("RSS before KiB", "rss_before_kib", ""), ("RSS after KiB", "rss_after_kib", ""), ("settled", "settled", "")],
     "bytes_per_conn", True),
    ("connect", "Handshakes (edk-ws verifies an HS256 JWT on each; peers do no auth)",
     [("handshakes/s", "handshakes_per_s", ""), ("handshake p50 ms", "handshake_ms.p50", ""), ("handshake p99 ms", "handshake_ms.p99", ""),
      ("failures", "failures", ""), ("server CPU µs/handshake", "cpu_us_per_msg", "")],
     "handshakes_per_s", False),
]
# Not ratios: counts and flags.
NO_RATIO = {"missing", "failures", "settled", "rss_before_kib", "rss_after_kib"}

for scn, title, cols, key, lower_better in sections:
    if not any(k[0] == scn for k in runs):
        continue
    p(f"## {title}")
    p("")
    if (scn, "edk") in cmds:
        p(f"`{cmds[(scn, 'edk')]}`")
        p("")
    p("| server | " + " | ".join(c[0] for c in cols) + " |")
    p("|---|" + "---|" * len(cols))
    for t in TARGETS:
        p(f"| {NAMES[t]} | " + " | ".join(cell(scn, t, c[1], c[2]) for c in cols) + " |")
    if "bare" in TARGETS:
        for t in ("edk", "edk-old"):
            if t in TARGETS and by_rep.get((scn, t)) and by_rep.get((scn, "bare")):
                p(f"| *{NAMES[t]} ÷ bare* | " + " | ".join(
                    "" if c[1] in NO_RATIO else paired_cell(scn, t, "bare", c[1]) for c in cols) + " |")
    # A run with errors (a reply that never came, a failed send) stalled
    # or ended early: its figures do not measure the same thing.
    erred = [f"{NAMES[t]} run {rep} ({r['errors']})" for t in TARGETS
             for rep, r in sorted(by_rep.get((scn, t), {}).items()) if r.get("errors")]
    if erred:
        p("")
        p(f"**Runs with errors** (figures not comparable): {', '.join(erred)}.")
    if any(c[1] == "cpu_us_per_msg" for c in cols) and coarse(scn, *TARGETS):
        p("")
        p(COARSE_NOTE)
    if scn == "idle":
        p("")
        p("No server-CPU column: this scenario measures memory; its CPU goes to setting "
          "connections up (handshake, join, activity), which `connect` measures per handshake.")
    ours = med(scn, "edk", key)
    if "edk-old" in TARGETS:
        for _, metric, _ in cols:
            new_v, old_v = values(scn, "edk", metric), values(scn, "edk-old", metric)
            if not new_v or not old_v or metric in NO_RATIO:
                continue
            nm, om = statistics.median(new_v), statistics.median(old_v)
            spread = max(max(old_v) - min(old_v), max(new_v) - min(new_v))
            inside = abs(nm - om) <= spread
            r = f"{nm / om:.3f}×" if om else "—"
            p(f"\nedk-ws new/old on `{metric}`: **{r}** (new {fmt(nm)}, {fmt(min(new_v))}–{fmt(max(new_v))};"
              f" old {fmt(om)}, {fmt(min(old_v))}–{fmt(max(old_v))}); within spread: {'yes' if inside else 'no'}"
              f" (|Δ| {fmt(abs(nm - om))}, spread {fmt(spread)})")
    for t in TARGETS:
        if t in ("edk", "edk-old"):
            continue
        r = ratio(ours, med(scn, t, key), invert=lower_better)
        if r is not None:
            word = "(peer/ours: above 1 means ours is lower, i.e. better)" if lower_better else "(ours/peer)"
            p(f"\nRatio vs {NAMES[t]} on `{key}`: **{r:.2f}×** {word}")
    p("")

# Targets of the issue.
p("## Against the targets")
p("")
rows = []
def target(name, ok, detail):
    rows.append(f"| {name} | {'met' if ok else 'missed'} | {detail} |")

b = med("idle", "edk", "bytes_per_conn")
if b is not None:
    target("idle ≤ 8 KiB per connection", b <= 8192, f"{fmt(b)} bytes at {runs[('idle','edk')][0].get('conns')} connections")
e, eb, en = med("echo", "edk", "msgs_per_s"), med("echo", "bare", "msgs_per_s"), med("echo", "node", "msgs_per_s")
if e and eb:
    target("echo ≥ 0.9× bare", e / eb >= 0.9, f"{e/eb:.2f}×")
if e and en:
    target("echo ≥ 2× Node ws", e / en >= 2, f"{e/en:.2f}×")
f, fb, fn_ = med("fanout", "edk", "deliveries_per_s"), med("fanout", "bare", "deliveries_per_s"), med("fanout", "node", "deliveries_per_s")
if f and fb:
    target("fanout ≥ 0.8× bare", f / fb >= 0.8, f"{f/fb:.2f}×")
if f and fn_:
    target("fanout ≥ 3× Node ws", f / fn_ >= 3, f"{f/fn_:.2f}×")
lp = med("fanout-rate", "edk", "latency_ms.p99")
if lp is not None:
    target("fanout p99 ≤ 50 ms at the fixed rate", lp <= 50, f"{fmt(lp)} ms")
c = med("connect", "edk", "handshakes_per_s")
if c is not None:
    target("connect ≥ 5,000 handshakes/s with JWT", c >= 5000, f"{fmt(c)}/s")


# Issue 13 (connection I/O): ratios to bare are medians of per-repetition ratios.
def vs(scn, metric, limit, name, unit, ref="bare", tgt="edk"):
    v = paired(scn, tgt, ref, metric)
    if not v:
        return
    m = statistics.median(v)
    spread = f", per repetition {min(v):.2f}–{max(v):.2f}" if len(v) > 1 else ""
    mark = " †" if metric == "cpu_us_per_msg" and coarse(scn, tgt, ref) else ""
    target(name, m <= limit, f"{m:.2f}×{spread} ({NAMES[tgt]} {fmt(med(scn, tgt, metric))}{unit}, "
           f"{NAMES[ref]} {fmt(med(scn, ref, metric))}{unit}; {len(v)} repetition(s)){mark}")


vs("echo", "rtt_ms.p99", 1.1, "echo RTT p99 ≤ 1.1× bare (issue 13)", " ms")
vs("echo", "rtt_ms.p50", 1.0, "echo RTT p50 ≤ bare (issue 13)", " ms")
vs("echo", "cpu_us_per_msg", 1.05, "server CPU per echo ≤ 1.05× bare (issue 13)", " µs")
vs("echo-1", "rtt_ms.p50", 1.0, "light-load echo RTT p50 ≤ bare (one connection; not an issue target)", " ms")
vs("fanout", "cpu_us_per_msg", 1.05, "server CPU per fan-out delivery ≤ 1.05× bare (issue 13)", " µs")
if b is not None:
    n = runs[("idle", "edk")][0].get("conns")
    note = "" if n == 15000 else f"; the target is at 15,000 connections, this run had {n:,}"
    target("idle ≤ 4,096 bytes per connection, room + activity (issue 13)", b <= 4096,
           f"{fmt(b)} bytes at {n:,} connections{note}")
if any(k[0] == "echo-1mib" for k in runs):
    v = paired("echo-1mib", "edk", "edk-old", "mib_per_s")
    if v:
        m = statistics.median(v)
        spread = f", per repetition {min(v):.2f}–{max(v):.2f}" if len(v) > 1 else ""
        target("1 MiB echo throughput ≥ 0.9× baseline (edk-old) (issue 13)", m >= 0.9,
               f"{m:.2f}×{spread} (new {fmt(med('echo-1mib', 'edk', 'mib_per_s'))} MiB/s, "
               f"old {fmt(med('echo-1mib', 'edk-old', 'mib_per_s'))} MiB/s)")
    else:
        bare_r = paired("echo-1mib", "edk", "bare", "mib_per_s")
        info = f"; edk-ws/bare {statistics.median(bare_r):.2f}×" if bare_r else ""
        rows.append(f"| 1 MiB echo throughput ≥ 0.9× baseline (edk-old) (issue 13) | n/a | no baseline run "
                    f"(`--targets \"edk edk-old bare\" --edk-old-bin ...`); edk-ws "
                    f"{fmt(med('echo-1mib', 'edk', 'mib_per_s'))} MiB/s{info} |")
if rows:
    p("| target | result | measured |")
    p("|---|---|---|")
    out.extend(rows)
p("")

# Server CPU per unit of work and p99 latency of every scenario, side by side.
CPU_P99 = [("echo", "echo", "rtt_ms.p99", "RTT"), ("echo-1", "echo", "rtt_ms.p99", "RTT"), ("echo-1mib", "echo", "rtt_ms.p99", "RTT"),
           ("fanout", "delivery", "latency_ms.p99", "delivery"), ("fanout-rate", "delivery", "latency_ms.p99", "delivery"),
           ("connect", "handshake", "handshake_ms.p99", "handshake")]
cp_rows = []
for scn, unit, lat, what in CPU_P99:
    if not any(k[0] == scn for k in runs):
        continue
    cells = [scn, unit]
    for metric in ("cpu_us_per_msg", lat):
        mark = " †" if metric == "cpu_us_per_msg" and coarse(scn, "edk", "bare") else ""
        cells += [fmt(med(scn, "edk", metric)), fmt(med(scn, "bare", metric)), paired_cell(scn, "edk", "bare", metric) + mark]
    cells.append(what)
    cp_rows.append("| " + " | ".join(cells) + " |")
if cp_rows:
    p("Server CPU per unit of work and p99 latency, every scenario (medians; ÷ bare: median of per-repetition ratios). "
      "Idle has no CPU figure (it measures memory).")
    p("")
    p("| scenario | unit | edk-ws CPU µs | bare CPU µs | CPU ÷ bare | edk-ws p99 ms | bare p99 ms | p99 ÷ bare | p99 of |")
    p("|---|---|---|---|---|---|---|---|---|")
    out.extend(cp_rows)
    p("")
if any("†" in r for r in rows + cp_rows):
    p(COARSE_NOTE)
    p("")
scale = scale_out.section(runs, cmds, values, fmt, results_dir, command, elapsed)
previous = sys.argv[4] if len(sys.argv) > 4 else None
if scale and not any(k[1] in NAMES for k in runs) and previous and os.path.exists(previous):
    # Only the cluster scenario ran: keep the rest of the previous report.
    print(scale_out.splice(open(previous).read(), "\n".join(scale)), end="")
    sys.exit(0)
out.extend(scale)
p("")
findings = os.path.join(os.path.dirname(os.path.abspath(__file__)), "findings.md")
if os.path.exists(findings):
    out.append(open(findings).read())
print("\n".join(out))
