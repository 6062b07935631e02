#!/usr/bin/env python3
"""Tables for benches/fanout.sh: reads its runs.tsv (one line per run) and the JSON reports
shardcast-load wrote (--json), the iperf3 JSON and the perf stat CSV, and prints medians
over the rounds, the shardcast/nginx ratios, the loopback ceiling and the sends per viewer
per message.

    fanout_report.py --manifest OUT/runs.tsv --out OUT      # table.txt/.md, summary.json
    fanout_report.py --manifest OUT/runs.tsv --keeps-up KIND VIEWERS [--read 100ms --streams P]
                                                             # exit 0 if it did
    fanout_report.py --manifest A/runs.tsv --manifest B/runs.tsv --markdown
                                                             # several runs in one table (say
                                                             # 1 x 1000 and 50 x 20); meta.txt,
                                                             # iperf3 from the first one

Runs are grouped by read mode (shardcast-load --read-interval; 0 = every frame as it
arrives), stream count, viewers per stream and server. A server name is a kind with optional
shardcast config overrides, KIND+TABLE.KEY=VALUE+...; shardcast-1-nagle is
shardcast-1+viewer.tcp_nodelay=false. shardcast-before is shardcast-1 run from another
binary (fanout.sh --before-bin): when a run has it, its rows are labelled "before:", the
rows of this tree's shardcast build "after:", and a before/after table pairs
shardcast-before+X with shardcast-1+X (same overrides) at each read mode and size.
"""

import argparse
import csv
import json
import os
import statistics
import sys

FIELDS = ["server", "viewers", "round", "json", "gen_user", "gen_sys", "wall", "status", "perf",
          "read", "streams"]
ORDER = ["nginx", "shardcast-before", "shardcast-1", "shardcast-1-nagle", "shardcast-2on1", "shardcast-all", "ideal",
         "ideal-nodelay"]
LABEL = {
    "nginx": "nginx-rtmp",
    "shardcast-before": "before: shardcast 1 shard",
    "shardcast-1": "shardcast 1 shard",
    "shardcast-1-nagle": "shardcast 1 shard nagle",
    "shardcast-2on1": "shardcast 2 shards on CPU 1",
    "shardcast-all": "shardcast all shards*",
    "ideal": "ideal sender",
    "ideal-nodelay": "ideal sender nodelay",
}


# Set by render() when the run has shardcast-before: this tree's shardcast rows are "after:".
AFTER = {"on": False}


def label(server):
    """shardcast-1+viewer.x=1 -> 'shardcast 1 shard +viewer.x=1'."""
    base, plus, overrides = server.partition("+")
    text = LABEL.get(base, base)
    if AFTER["on"] and base.startswith("shardcast-") and base != "shardcast-before":
        text = "after: " + text
    return text + (" +" + overrides if plus else "")


def order(server):
    base = server.partition("+")[0]
    return (ORDER.index(base) if base in ORDER else 99, server)


def read_ms(mode):
    """'0', '100ms', '0.1s' -> milliseconds, for sorting."""
    m = mode.strip()
    for unit, scale in (("ms", 1), ("min", 60000), ("s", 1000), ("m", 60000), ("h", 3600000)):
        if m.endswith(unit):
            try:
                return float(m[: -len(unit)]) * scale
            except ValueError:
                return 0.0
    try:
        return float(m) * 1000
    except ValueError:
        return 0.0


def read_label(mode):
    return "every frame" if read_ms(mode) == 0 else f"{mode} batches"


def load_manifest(path):
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < len(FIELDS):
                parts += [""] * (len(FIELDS) - len(parts))
            row = dict(zip(FIELDS, parts))
            row["viewers"] = int(row["viewers"])
            row["read"] = row["read"] or "0"  # manifests from before read modes and streams
            row["streams"] = int(row["streams"] or 1)
            row["report"] = None
            if row["status"] != "start-failed" and os.path.exists(row["json"]):
                try:
                    with open(row["json"]) as j:
                        row["report"] = json.load(j)
                except (OSError, ValueError):
                    pass
            rows.append(row)
    return rows


def problems(row):
    """Why this run does not count as keeping up ([] when it does)."""
    out = []
    if row["status"] != "ok":
        out.append(row["status"])
    r = row["report"]
    if r is None:
        return out + ["no report"]
    v, m = r["viewers"], r["messages"]
    if r.get("interrupted"):
        out.append("interrupted")
    for key in ("failed", "disconnected", "lagging"):
        if v.get(key):
            out.append(f"{v[key]} {key}")
    for key in ("lost", "reordered", "corrupted"):
        if m.get(key):
            out.append(f"{m[key]} {key}")
    if v.get("playing_at_end", 0) < v.get("target", 0):
        out.append(f"{v['playing_at_end']}/{v['target']} playing")
    return out


def med(values):
    values = [x for x in values if x is not None]
    return statistics.median(values) if values else None


def read_snapshot(path):
    """cpu0/cpu1 lines of /proc/stat (in ticks) and ksoftirqd CPU ticks, as fanout.sh wrote."""
    snap = {"ksoftirqd": []}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] in ("cpu0", "cpu1"):
                snap[parts[0]] = [int(x) for x in parts[1:]]
            elif parts and parts[0] == "ksoftirqd":
                snap["ksoftirqd"].append(int(parts[1]))
            elif parts and parts[0] == "ipi" and len(parts) >= 4:
                snap["ipi " + parts[1].rstrip(":")] = [int(parts[2]), int(parts[3])]
    return snap


def cpu_usage(row):
    """Per CPU over the whole run: busy, softirq and steal shares of the wall time, and the
    busy seconds; ksoftirqd seconds per CPU."""
    base = row["json"][: -len(".json")]
    try:
        a, b = read_snapshot(base + ".stat0"), read_snapshot(base + ".stat1")
    except OSError:
        return None
    out = {}
    for cpu in ("cpu0", "cpu1"):
        if cpu not in a or cpu not in b:
            continue
        d = [y - x for x, y in zip(a[cpu], b[cpu])]
        total = sum(d[:8]) or 1  # user nice system idle iowait irq softirq steal
        # Busy leaves out idle, iowait, steal and nice time: niced background work (a
        # fuzzer, say) yields to the benchmark and is not what this measures.
        busy = total - d[3] - d[4] - d[7] - d[1]
        out[cpu] = {
            "busy": busy / total,
            "nice": d[1] / total,
            "softirq": d[6] / total,
            "steal": d[7] / total,
            "busy_s": busy / 100.0,
        }
    out["ksoftirqd_s"] = [(y - x) / 100.0 for x, y in zip(a["ksoftirqd"], b["ksoftirqd"])]
    ipis = None
    for key in ("ipi RES", "ipi CAL"):
        if key in a and key in b:
            ipis = [i + y - x for i, x, y in zip(ipis or [0, 0], a[key], b[key])]
    out["ipis"] = ipis  # received by CPU 0, by CPU 1
    return out


def run_metrics(row):
    r = row["report"]
    if r is None:
        return None
    cpu = cpu_usage(row) or {}
    total_gb = r["delivered"].get("bytes", 0) / 1e9
    received = r["messages"].get("video", 0) + r["messages"].get("audio", 0)
    s = r.get("server") or {}
    gb = s.get("delivered_gb") or 0
    lat = r.get("latency_ms") or {}
    wall = float(row["wall"] or 0)
    gen = float(row["gen_user"] or 0) + float(row["gen_sys"] or 0)
    g = r.get("load_generator")
    if g and g.get("window_s"):
        # The generator's own report, over the steady state: the process, and its busiest
        # executor thread (what saturates first).
        gen_cores, gen_thread, saturated = (g["cpu_cores"], g.get("busiest_thread_cores"),
                                            bool(g.get("saturated")))
    else:
        # Older reports: bash `time` over the whole run (ramp and start-up included).
        gen_cores = gen / wall if wall else None
        gen_thread, saturated = gen_cores, gen_cores is not None and gen_cores > 0.9
    trend = r.get("latency_trend") or {}
    ttff = r.get("first_keyframe_ms") or {}
    return {
        "lagging": r["viewers"].get("lagging", 0),
        "lost": r["messages"].get("lost", 0),
        "failed": r["viewers"].get("failed", 0) + r["viewers"].get("disconnected", 0),
        "gbps": r["delivered"].get("steady_gbit_per_s"),
        "cpu_per_gb": s.get("cpu_seconds_per_gb"),
        "user_per_gb": s["user_seconds"] / gb if gb else None,
        "sys_per_gb": s["system_seconds"] / gb if gb else None,
        "server_cores": s.get("cpu_cores"),
        "gen_cores": gen_cores,
        "gen_thread_cores": gen_thread,
        "gen_saturated": saturated,
        "trend_ratio": trend.get("p99_ratio"),
        "trend_slope": trend.get("p99_slope_ms_per_min"),
        "ttff_p50": ttff.get("p50") if ttff.get("count") else None,
        "ttff_p99": ttff.get("p99") if ttff.get("count") else None,
        "p50": lat.get("p50"),
        "p99": lat.get("p99"),
        "p999": lat.get("p999"),
        "rss_kib": (s.get("rss_bytes_per_viewer") or 0) / 1024 if s else None,
        "cpu0_busy": cpu.get("cpu0", {}).get("busy"),
        "cpu1_busy": cpu.get("cpu1", {}).get("busy"),
        "cpu1_softirq": cpu.get("cpu1", {}).get("softirq"),
        # CPU 1's busy share beyond the server's own (its own is over the steady state, CPU 1's
        # over the whole run): on a quiet machine about 0; more is other work sharing the core.
        "cpu1_other": (cpu["cpu1"]["busy"] - s["cpu_cores"]
                       if "cpu1" in cpu and s.get("cpu_cores") is not None else None),
        "nice": max((cpu.get(c, {}).get("nice", 0) for c in ("cpu0", "cpu1")), default=None),
        "steal": max((cpu.get(c, {}).get("steal", 0) for c in ("cpu0", "cpu1")), default=None),
        "cpu1_s_per_gb": (cpu["cpu1"]["busy_s"] / total_gb) if "cpu1" in cpu and total_gb else None,
        "ksoftirqd1_s": (cpu.get("ksoftirqd_s") or [None, None])[-1],
        # IPIs CPU 0 (the load generator's) received per message a viewer received.
        "ipi0_per_msg": (cpu["ipis"][0] / received) if cpu.get("ipis") and received else None,
    }


def summarize(rows):
    groups = {}
    for row in rows:
        if row["perf"]:
            continue
        key = (row["read"], row["streams"], row["server"], row["viewers"])
        groups.setdefault(key, []).append(row)
    out = []
    for (read, streams, server, viewers), runs in groups.items():
        ms = [m for m in (run_metrics(r) for r in runs) if m]
        entry = {"read": read, "streams": streams, "server": server, "viewers": viewers,
                 "rounds": len(runs)}
        worst = {}
        for r in runs:
            for p in problems(r):
                num, _, kind = p.partition(" ")
                if num.isdigit():
                    worst[kind] = max(worst.get(kind, 0), int(num))
                elif "/" in num and kind == "playing":
                    continue  # the lagging/failed counts say it
                else:
                    worst[p] = None
        bad = sum(1 for r in runs if problems(r))
        entry["problems"] = ([f"{bad} of {len(runs)} rounds bad"] if bad else []) + [
            f"{k} {v}" if v is not None else k for k, v in sorted(worst.items())]
        for key in ("lagging", "lost", "failed"):
            entry[key] = max((m[key] for m in ms), default=None)
        for key in ("gbps", "cpu_per_gb", "user_per_gb", "sys_per_gb", "server_cores",
                    "gen_cores", "gen_thread_cores", "p50", "p99", "p999", "rss_kib",
                    "cpu0_busy", "cpu1_busy", "cpu1_softirq", "nice", "steal", "cpu1_s_per_gb",
                    "ksoftirqd1_s", "ipi0_per_msg", "trend_ratio", "trend_slope", "ttff_p50",
                    "ttff_p99", "cpu1_other"):
            entry[key] = med([m[key] for m in ms])
        entry["gen_saturated_rounds"] = sum(1 for m in ms if m["gen_saturated"])
        entry["cpu_per_gb_all"] = [m["cpu_per_gb"] for m in ms]
        entry["p99_all"] = [m["p99"] for m in ms]
        entry["rss_kib_all"] = [m["rss_kib"] for m in ms]
        out.append(entry)
    out.sort(key=lambda e: (read_ms(e["read"]), e["streams"], e["viewers"], order(e["server"])))
    return out


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt(x, digits=2):
    if x is None:
        return "-"
    if isinstance(x, int):
        return str(x)
    return f"{x:.{digits}f}"


def spread(median, values, digits=2):
    """'0.90' for one round, '0.90 (0.88-0.93)': the median, then the rounds' range."""
    values = [v for v in values if v is not None]
    if len(values) < 2:
        return fmt(median, digits)
    return f"{fmt(median, digits)} ({fmt(min(values), digits)}-{fmt(max(values), digits)})"


RSS_TARGET_KIB = 16.0
OTHER_WORK_LIMIT = 0.10
CPU_TARGET_RATIO = 1.05


def before_after(summary):
    """Pairs shardcast-before+X with shardcast-1+X (the same overrides) at each read mode,
    stream count and viewer count: the numbers the relay-core refactor is held to."""
    before = {(e["read"], e["streams"], e["viewers"], e["server"].partition("+")[2]): e
              for e in summary if e["server"].partition("+")[0] == "shardcast-before"}
    out = []
    for e in summary:
        base, _, overrides = e["server"].partition("+")
        b = before.get((e["read"], e["streams"], e["viewers"], overrides))
        if base != "shardcast-1" or not b:
            continue
        cpu_ratio = ratio(e["cpu_per_gb"], b["cpu_per_gb"])
        p99_ratio = ratio(e["p99"], b["p99"])
        out.append({
            "read": e["read"], "streams": e["streams"], "viewers": e["viewers"],
            "overrides": overrides, "rounds": [b["rounds"], e["rounds"]],
            "before": {k: b[k] for k in ("cpu_per_gb", "cpu_per_gb_all", "rss_kib", "rss_kib_all",
                                         "p50", "p99", "p99_all", "lagging", "lost", "failed",
                                         "gen_saturated_rounds", "problems", "cpu1_other")},
            "after": {k: e[k] for k in ("cpu_per_gb", "cpu_per_gb_all", "rss_kib", "rss_kib_all",
                                        "p50", "p99", "p99_all", "lagging", "lost", "failed",
                                        "gen_saturated_rounds", "problems", "cpu1_other")},
            "cpu_ratio": cpu_ratio,
            "p99_ratio": p99_ratio,
            "cpu_ok": None if cpu_ratio is None else cpu_ratio <= CPU_TARGET_RATIO,
            "rss_ok": None if e["rss_kib"] is None else e["rss_kib"] <= RSS_TARGET_KIB,
            "p99_ok": None if p99_ratio is None else p99_ratio <= 1.0,
        })
    return out


def yes_no(ok):
    return "-" if ok is None else ("yes" if ok else "NO")


def rss_check(pair):
    """yes/NO for the after build; says so when the before build is over the target too (at
    many streams the GOP caches alone are more than 16 KiB per viewer)."""
    text = yes_no(pair["rss_ok"])
    b = pair["before"]["rss_kib"]
    if pair["rss_ok"] is False and b is not None and b > RSS_TARGET_KIB:
        text += " (before too)"
    return text


def iperf_summary(outdir):
    res = {}
    for mode in ("fwd", "rev"):
        runs = []
        for name in sorted(os.listdir(outdir)):
            if not (name.startswith(f"iperf3-{mode}-r") and name.endswith(".json")):
                continue
            try:
                with open(os.path.join(outdir, name)) as f:
                    j = json.load(f)
                end = j["end"]
                secs = end["sum_received"]["seconds"]
                gbytes = end["sum_received"]["bytes"] / 1e9
                cpu = end["cpu_utilization_percent"]
                # fwd: the client (CPU 0) sends, the server (CPU 1) receives; rev: the reverse.
                send = ("host" if mode == "fwd" else "remote")
                recv = ("remote" if mode == "fwd" else "host")
                runs.append({
                    "gbps": end["sum_received"]["bits_per_second"] / 1e9,
                    "sender_cpu_per_gb": cpu[f"{send}_total"] / 100 * secs / gbytes,
                    "sender_sys_share": cpu[f"{send}_system"] / max(cpu[f"{send}_total"], 1e-9),
                    "receiver_cpu_per_gb": cpu[f"{recv}_total"] / 100 * secs / gbytes,
                })
            except (OSError, ValueError, KeyError, ZeroDivisionError):
                continue
        if runs:
            res[mode] = {k: med([r[k] for r in runs]) for k in runs[0]}
            res[mode]["runs"] = len(runs)
    return res


def perf_summary(rows, outdir):
    out = []
    for row in rows:
        if not row["perf"] or row["report"] is None:
            continue
        base = row["json"][: -len(".json")]
        try:
            with open(base + ".perf.meta") as f:
                window = float(f.read().split("=")[1])
            counts = {}
            with open(base + ".perf.csv") as f:
                for rec in csv.reader(f):
                    if len(rec) < 3 or rec[0].startswith("#") or not rec[0].strip():
                        continue
                    try:
                        value = float(rec[0])
                    except ValueError:
                        continue
                    event = rec[2]
                    if event == "sock:sock_send_length" and "sock:sock_send_length" in counts:
                        event = "send_errors"  # the second, filtered (ret < 0) copy
                    counts[event] = value
        except (OSError, ValueError, IndexError):
            continue
        r = row["report"]
        # Per stream: each viewer receives its own stream's messages only.
        streams = max(r["publishers"].get("streams", 1), 1)
        msgs_per_s = r["publishers"]["messages_sent"] / streams / max(r["elapsed_s"], 1e-9)
        viewers = r["viewers"]["playing_at_end"]
        denom = window * msgs_per_s * viewers
        sends = counts.get("sock:sock_send_length", 0)
        errors = counts.get("send_errors", 0)
        s = r.get("server") or {}
        bytes_in_window = (s.get("delivered_gb", 0) * 1e9 / s["window_s"] * window
                           if s.get("window_s") else 0)
        out.append({
            "read": row["read"],
            "streams": row["streams"],
            "server": row["server"],
            "viewers": viewers,
            "window_s": window,
            "msgs_per_s": msgs_per_s,
            "sends_per_viewer_msg": sends / denom if denom else None,
            "eagain_share": errors / sends if sends else None,
            "syscalls_per_viewer_msg": counts.get("raw_syscalls:sys_enter", 0) / denom if denom else None,
            "sqes_per_viewer_msg": counts.get("io_uring:io_uring_submit_req", 0) / denom if denom else None,
            "bytes_per_send": bytes_in_window / (sends - errors) if sends > errors else None,
            "cpu_us_per_send": counts.get("task-clock", 0) * 1000 / sends if sends else None,
            "cpu_ms_per_s": counts.get("task-clock", 0) / window,
            "ctx_switches_per_s": counts.get("context-switches", 0) / window,
            "syscalls_per_viewer_msg_by_name": {
                k.split("sys_enter_", 1)[1]: round(v / denom, 4)
                for k, v in sorted(counts.items(), key=lambda kv: -kv[1])
                if k.startswith("syscalls:sys_enter_") and v and denom
            },
        })
    out.sort(key=lambda e: (read_ms(e["read"]), e["streams"], order(e["server"])))
    return out


LEFT = ("notes", "top syscalls per viewer per msg", "read", "config")


def table(headers, rows, markdown):
    if markdown:
        lines = ["| " + " | ".join(headers) + " |",
                 "| " + " | ".join("---" if i == 0 or h in LEFT else "---:"
                                   for i, h in enumerate(headers)) + " |"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    fmt_row = lambda r: "  ".join(c.ljust(widths[i]) if i == 0 or headers[i] in LEFT
                                  else c.rjust(widths[i]) for i, c in enumerate(r)).rstrip()
    return "\n".join([fmt_row(headers), fmt_row(["-" * w for w in widths])] + [fmt_row(r) for r in rows])


def render(summary, iperf, perf, meta, markdown):
    out = []
    AFTER["on"] = any(e["server"].partition("+")[0] == "shardcast-before" for e in summary)
    nginx = {(e["read"], e["streams"], e["viewers"]): e for e in summary if e["server"] == "nginx"}
    headers = ["server", "read", "streams x viewers", "lagging", "lost", "Gbit/s",
               "CPU-s/GB (user / sys)", "latency ms p50 / p99 / p99.9", "1st frame ms p50 / p99",
               "RSS KiB/viewer", "CPU/GB ÷ nginx", "user ÷ nginx", "p99 ÷ nginx"]
    dheaders = ["server", "read", "streams x viewers", "srv cores", "gen cores",
                "gen busiest thread", "CPU1 busy", "CPU1-s/GB", "IPI0/msg", "p99 last÷first",
                "notes"]
    rows, drows = [], []
    for e in summary:
        n = nginx.get((e["read"], e["streams"], e["viewers"]))
        notes = list(e["problems"])
        if e["gen_saturated_rounds"]:
            notes.insert(0, f"LOAD GENERATOR SATURATED ({e['gen_saturated_rounds']} of "
                            f"{e['rounds']} rounds): numbers measure the generator")
        if e["steal"] is not None and e["steal"] > 0.05:
            notes.append(f"steal {e['steal'] * 100:.0f}%")
        if e["nice"] is not None and e["nice"] > 0.05:
            notes.append(f"niced work {e['nice'] * 100:.0f}%")
        if e["ksoftirqd1_s"]:
            notes.append(f"ksoftirqd/1 {e['ksoftirqd1_s']:.2f} s")
        vs = (lambda key: "-" if e["server"] == "nginx" or not n else fmt(ratio(e[key], n[key])))
        name = label(e["server"])
        size = f"{e['streams']} x {e['viewers']}"
        mode = read_label(e["read"])
        rows.append([
            name, mode, size, fmt(e["lagging"]), fmt(e["lost"]), fmt(e["gbps"], 3),
            f"{fmt(e['cpu_per_gb'])} ({fmt(e['user_per_gb'])} / {fmt(e['sys_per_gb'])})",
            f"{fmt(e['p50'], 1)} / {fmt(e['p99'], 1)} / {fmt(e['p999'], 1)}",
            f"{fmt(e['ttff_p50'], 1)} / {fmt(e['ttff_p99'], 1)}",
            fmt(e["rss_kib"], 1), vs("cpu_per_gb"), vs("user_per_gb"), vs("p99"),
        ])
        drows.append([
            name, mode, size, fmt(e["server_cores"]), fmt(e["gen_cores"]),
            fmt(e["gen_thread_cores"]), fmt(e["cpu1_busy"]), fmt(e["cpu1_s_per_gb"]),
            fmt(e["ipi0_per_msg"], 3), fmt(e["trend_ratio"]), "; ".join(notes),
        ])
    rounds = max((e["rounds"] for e in summary), default=0)
    bitrate = meta.get("bitrate", "2500k").rstrip("k")
    out.append(f"Fan-out of synthetic streams ({bitrate} kbit/s, 30 fps, 2 s GOP) over 127.0.0.1; "
               f"medians of {rounds} interleaved round(s); lagging/lost: worst round. "
               "read: how viewers read (every frame: as data arrives; N batches: every N, so "
               "latency includes up to N of waiting). streams x viewers: viewers per stream. "
               "CPU-s/GB = server CPU seconds (user+system, from /proc) per 10^9 bytes delivered "
               "in the steady state; user/sys: the same split. Latency: publisher send to viewer "
               "receive, video messages. 1st frame: TCP connect to the first keyframe. "
               "÷ nginx: ratio to nginx-rtmp in the same read mode at the same size. "
               "CPU1 busy: share of CPU 1 neither idle nor running niced work over the whole run, from /proc/stat (the "
               "server, loopback softirq work wherever it ran, and anything else on CPU 1); "
               "CPU1-s/GB: those busy seconds per GB delivered over the whole run. IPI0/msg: "
               "rescheduling and function-call interrupts CPU 0 received (/proc/interrupts), per "
               "message the viewers received: how often the server's sends woke the load "
               "generator.")
    out.append("* shardcast all shards: not pinned by the script; shardcast pins shard N to CPU N "
               "itself, so shard 0 shares CPU 0 with the load generator. shardcast 2 shards on "
               "CPU 1: server.cpus = [1, 1] under taskset -c 1; the publisher lands on one shard, "
               "viewers on both (SO_REUSEPORT).")
    if AFTER["on"]:
        out.append(builds_note(meta))
    out.append("")
    out.append(table(headers, rows, markdown))
    out.append("")
    out.append("Where the time went, per run (medians): srv cores = the server's share of one core; "
               "gen cores / gen busiest thread = the load generator's, from its own report over "
               "the same steady-state window (whole process, and its busiest executor thread; "
               "a thread above 0.9 means the generator, not the server, set the pace); CPU1 busy, "
               "CPU1-s/GB, IPI0/msg as above; p99 last÷first: the latency trend, last steady "
               "minute (or window, in short runs) over the first.")
    out.append("")
    out.append(table(dheaders, drows, markdown))
    pairs = before_after(summary)
    if pairs:
        out.append("")
        out.append("After vs before (this tree's shardcast 1 shard against --before-bin, same "
                   "config and pinning, interleaved in the same run): medians, with the rounds' "
                   f"range in brackets. Checks on the medians: CPU-s/GB after ÷ before at most "
                   f"{CPU_TARGET_RATIO:.2f}, RSS per viewer after at most {RSS_TARGET_KIB:.0f} KiB "
                   "(the server's whole RSS over its viewers: with P streams it includes P GOP "
                   "caches), p99 after at most before; a difference inside both builds' round "
                   "ranges is noise.")
        out.append("")
        brows = []
        for p in pairs:
            b, a = p["before"], p["after"]
            brows.append([
                read_label(p["read"]), f"{p['streams']} x {p['viewers']}",
                ("+" + p["overrides"]) if p["overrides"] else "default",
                f"{p['rounds'][0]} / {p['rounds'][1]}",
                spread(b["cpu_per_gb"], b["cpu_per_gb_all"]),
                spread(a["cpu_per_gb"], a["cpu_per_gb_all"]), fmt(p["cpu_ratio"], 3),
                fmt(b["rss_kib"], 1), fmt(a["rss_kib"], 1),
                spread(b["p99"], b["p99_all"], 1), spread(a["p99"], a["p99_all"], 1),
                fmt(p["p99_ratio"], 3),
                f"{fmt(b['lagging'])}/{fmt(b['lost'])} , {fmt(a['lagging'])}/{fmt(a['lost'])}",
                f"{fmt(b['cpu1_other'])} , {fmt(a['cpu1_other'])}",
                yes_no(p["cpu_ok"]), rss_check(p), yes_no(p["p99_ok"]),
            ])
        out.append(table(["read", "streams x viewers", "config", "rounds b / a",
                          "CPU-s/GB before", "CPU-s/GB after", "CPU a÷b",
                          "RSS KiB/viewer before", "RSS after", "p99 ms before", "p99 ms after",
                          "p99 a÷b", "lagging/lost b , a", "CPU1 other b , a", "CPU ≤1.05x",
                          "RSS ≤16 KiB", "p99 ≤ before"], brows, markdown))
        busy = [p for p in pairs if max(p["before"]["cpu1_other"] or 0,
                                        p["after"]["cpu1_other"] or 0) > OTHER_WORK_LIMIT]
        if busy:
            out.append("")
            out.append("NOT QUIET: CPU 1 was busy with work other than the server (CPU1 other: "
                       "CPU 1's busy share minus the server's cores, about 0 on a quiet machine) "
                       f"above {OTHER_WORK_LIMIT:.2f} in: " + ", ".join(
                           f"{read_label(p['read'])} {p['streams']} x {p['viewers']}" for p in busy)
                       + ". A server sharing its core with other work changes how it batches, and "
                       "its CPU per GB and latency move with that work, by more than 5 % even "
                       "between identical builds: rerun those on a quiet machine.")
        sat = [p for p in pairs if p["before"]["gen_saturated_rounds"]
               or p["after"]["gen_saturated_rounds"]]
        if sat:
            out.append("")
            out.append("LOAD GENERATOR SATURATED in some rounds of: " + ", ".join(
                f"{read_label(p['read'])} {p['streams']} x {p['viewers']}" for p in sat)
                + " (those numbers measure the generator as much as the server).")
    # ratio summary: shardcast/nginx at each size and read mode
    rrows = []
    for e in summary:
        n = nginx.get((e["read"], e["streams"], e["viewers"]))
        if e["server"] == "nginx" or not n:
            continue
        rrows.append([label(e["server"]), read_label(e["read"]),
                      f"{e['streams']} x {e['viewers']}",
                      fmt(ratio(e["cpu_per_gb"], n["cpu_per_gb"])),
                      fmt(ratio(e["user_per_gb"], n["user_per_gb"])),
                      fmt(ratio(e["sys_per_gb"], n["sys_per_gb"])),
                      fmt(ratio(e["p50"], n["p50"])), fmt(ratio(e["p99"], n["p99"])),
                      fmt(ratio(e["p999"], n["p999"])), fmt(ratio(e["rss_kib"], n["rss_kib"]))])
    if rrows:
        out.append("")
        out.append("Ratios to nginx-rtmp in the same read mode at the same size (below 1: less "
                   "than nginx):")
        out.append("")
        out.append(table(["server", "read", "streams x viewers", "CPU-s/GB", "user", "sys", "p50",
                          "p99", "p99.9", "RSS/viewer"], rrows, markdown))
    if iperf:
        out.append("")
        out.append("Loopback ceiling, iperf3 (1 TCP stream, 5 s, server on CPU 1, client on CPU 0; "
                   "CPU from iperf3's own getrusage):")
        out.append("")
        irows = []
        for mode, run_label in (("fwd", "iperf3 -c (client on CPU 0 sends)"),
                            ("rev", "iperf3 -c -R (server on CPU 1 sends)")):
            if mode in iperf:
                i = iperf[mode]
                irows.append([run_label, fmt(i["gbps"], 1), fmt(i["sender_cpu_per_gb"], 3),
                              fmt(i["sender_sys_share"] * 100, 0) + "%",
                              fmt(i["receiver_cpu_per_gb"], 3), str(i["runs"])])
        out.append(table(["run", "Gbit/s", "sender CPU-s/GB", "sender sys share",
                          "receiver CPU-s/GB", "runs"], irows, markdown))
    if perf:
        out.append("")
        out.append("Instrumented run (perf stat on the server over the steady state; one run each, "
                   "not in the medians). A send is one socket sendmsg in the kernel "
                   "(tracepoint sock:sock_send_length: write, writev, sendmsg or an io_uring send).")
        out.append("")
        prow = []
        for p in perf:
            prow.append([label(p["server"]), read_label(p["read"]), str(p["streams"]),
                         str(p["viewers"]),
                         fmt(p["sends_per_viewer_msg"], 3),
                         fmt(None if p["eagain_share"] is None else p["eagain_share"] * 100, 1) + "%",
                         fmt(p["bytes_per_send"], 0), fmt(p["syscalls_per_viewer_msg"], 3),
                         fmt(p["sqes_per_viewer_msg"], 3), fmt(p["cpu_us_per_send"], 2),
                         fmt(p["cpu_ms_per_s"], 0), fmt(p["ctx_switches_per_s"], 0),
                         ", ".join(f"{k} {v:.3f}" for k, v in
                                   list(p["syscalls_per_viewer_msg_by_name"].items())[:3]
                                   if v >= 0.001)])
        out.append(table(["server", "read", "streams", "viewers", "sends/viewer/msg", "EAGAIN", "bytes/send",
                          "syscalls/viewer/msg", "io_uring SQEs/viewer/msg", "CPU us/send",
                          "CPU ms/s", "ctx sw/s", "top syscalls per viewer per msg"],
                         prow, markdown))
    return "\n".join(out)


def builds_note(meta):
    """What "before:" and "after:" ran, from fanout.sh's meta.txt."""
    before = meta.get("before_bin", "the --before-bin binary")
    if meta.get("before_label"):
        before += f" ({meta['before_label']})"
    if meta.get("before_sha256"):
        before += f", sha256 {meta['before_sha256'][:12]}"
    after = f"this tree's build at commit {meta.get('commit', 'unknown')[:12]}"
    if meta.get("dirty") not in (None, "", "0"):
        after += f" plus {meta['dirty']} uncommitted changed file(s)"
    if meta.get("shardcast_sha256"):
        after += f", sha256 {meta['shardcast_sha256'][:12]}"
    same = (" The two binaries are identical." if meta.get("before_sha256")
            and meta.get("before_sha256") == meta.get("shardcast_sha256") else "")
    return (f"before: {before}, run as shardcast 1 shard (server.shards = 1, server.cpus = [1], "
            f"taskset -c 1, the same generated config). after: {after}.{same}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifest", required=True, action="append",
                    help="a run's runs.tsv; repeat to put several runs in one table")
    ap.add_argument("--out")
    ap.add_argument("--keeps-up", nargs=2, metavar=("SERVER", "VIEWERS"))
    ap.add_argument("--read", default="0", help="with --keeps-up: the read mode [0]")
    ap.add_argument("--streams", type=int, default=1, help="with --keeps-up: streams [1]")
    ap.add_argument("--markdown", action="store_true")
    a = ap.parse_args()
    rows = [row for path in a.manifest for row in load_manifest(path)]
    if a.keeps_up:
        server, viewers = a.keeps_up[0], int(a.keeps_up[1])
        mine = [r for r in rows if r["server"] == server and r["viewers"] == viewers
                and r["read"] == a.read and r["streams"] == a.streams and not r["perf"]]
        bad = sorted({p for r in mine for p in problems(r)})
        if not mine or bad:
            print(f"{server} at {a.streams} x {viewers} viewers, read {a.read}: "
                  f"{', '.join(bad) or 'no runs'}", file=sys.stderr)
            sys.exit(1)
        sys.exit(0)
    outdir = a.out or os.path.dirname(os.path.abspath(a.manifest[0]))
    summary = summarize(rows)
    iperf = iperf_summary(outdir)
    perf = perf_summary(rows, outdir)
    meta = {}
    try:
        with open(os.path.join(outdir, "meta.txt")) as f:
            meta = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
    except OSError:
        pass
    print(render(summary, iperf, perf, meta, a.markdown))
    if a.out:
        with open(os.path.join(a.out, "table.md"), "w") as f:
            f.write(render(summary, iperf, perf, meta, True) + "\n")
        with open(os.path.join(a.out, "summary.json"), "w") as f:
            json.dump({"meta": meta, "runs": summary, "iperf3": iperf, "perf": perf,
                       "before_after": before_after(summary)}, f, indent=1)


if __name__ == "__main__":
    main()
