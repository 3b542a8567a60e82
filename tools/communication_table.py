#!/usr/bin/env python3
"""Tables of benchmarks/communication.sh's results (benchmarks/communication.jsonl).

    python3 tools/communication_table.py benchmarks/communication.jsonl [--run RUN_ID ...]
        [--markdown benchmarks/communication.md] [--readme README.md]

Without --markdown/--readme prints the tables. With them, replaces the text between
`<!-- communication:begin -->` and `<!-- communication:end -->` in each file (the README gets the
targets table only). Every figure is the best (smallest step time) of the run's rounds (of all the
given runs' rounds with several --run: e.g. one run per model, each short enough to hold the CPU lock).

  efficiency   = (T1 / ideal) / T, T1 the same global batch on one host, ideal = hosts, or the
                 machine's cores when there are more hosts than cores (hosts then share cores);
  exposed      = T - T(no gradient communication, same hosts): the communication not hidden;
  finish wait  = bert-dist's own figure: what GradientSynchronizer.finish() waited (slowest rank);
  MB per step  = bytes the busiest host's network interface sent per step (/proc/net/dev).
"""
import argparse
import json
import os
import sys

TARGET_EFFICIENCY = {"10gbit": 0.9, "1gbit": 0.75}
TARGET_SPEEDUP = 2.0


def load(path, runs):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    if not runs:
        runs = [rows[-1]["run"]] if rows else []
    return [r for r in rows if r["run"] in runs], runs


def best(rows, **key):
    matching = [r for r in rows if all(r.get(k) == v for k, v in key.items())]
    return min(matching, key=lambda r: r["step_s_median"]) if matching else None


def link_name(link):
    return {"10gbit": "10 Gbit/s", "1gbit": "1 Gbit/s", "none": "-"}.get(link, link)


def tables(rows, cores):
    lines = []
    models = sorted({r["model"] for r in rows}, key=lambda m: (m != "minilm", m))
    host_counts = sorted({r["hosts"] for r in rows if r["hosts"] > 1})
    links = sorted({r["link"] for r in rows if r["link"] != "none"}, key=lambda l: -int(l.rstrip("gbit") or 0))
    rounds = sorted({(r["run"], r["round"]) for r in rows})
    runs = sorted({r["run"] for r in rows})
    busy = [r["background_busy"] for r in rows]
    loads = [r.get("load_average", 0) for r in rows]
    lines.append(f"Run{'s' if len(runs) > 1 else ''} {', '.join(runs)}, {len(rounds)} round(s), best of the rounds. Background load while measuring: "
                 f"busy fraction of all CPUs before each run {min(busy):.2f}-{max(busy):.2f}, load average "
                 f"{min(loads):.1f}-{max(loads):.1f} on {cores} cores"
                 + (" (a shared machine: provisional figures)." if max(busy) > 0.1 else "."))
    lines.append("")
    lines.append("| model | hosts | link | side | step (s) | T1 (s) | efficiency | exposed comm (s) | finish wait (s) | MB sent per step per host |")
    lines.append("| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    targets = []
    for model in models:
        t1 = {side: best(rows, model=model, hosts=1, side=side, variant="fp32") for side in ("ours", "pytorch")}
        for side in ("ours", "pytorch"):
            if t1[side]:
                lines.append(f"| {model} | 1 | - | {label(side, 'fp32')} | {t1[side]['step_s_median']:.3f} | | | | | |")
        for hosts in host_counts:
            ideal = min(hosts, cores)
            no_sync = {side: best(rows, model=model, hosts=hosts, side=side, variant="no-sync") for side in ("ours", "pytorch")}
            for side in ("ours", "pytorch"):
                if no_sync[side]:
                    lines.append(f"| {model} | {hosts} | no gradient sum | {label(side, 'no-sync')} | "
                                 f"{no_sync[side]['step_s_median']:.3f} | | {efficiency(t1[side], no_sync[side], ideal)} | | | |")
            for link in links:
                results = {}
                for side in ("ours", "before", "pytorch"):
                    for variant in ("fp32", "bf16"):
                        r = best(rows, model=model, hosts=hosts, link=link, side=side, variant=variant)
                        if not r:
                            continue
                        results[(side, variant)] = r
                        base = "ours" if side == "before" else side
                        exposed = f"{r['step_s_median'] - no_sync[base]['step_s_median']:.3f}" if no_sync.get(base) else ""
                        wait = f"{r['phases_s_median']['sync']:.3f}" if "phases_s_median" in r else ""
                        sent = f"{r['interface_bytes_sent_per_step'] / 1e6:.1f}" if "interface_bytes_sent_per_step" in r else ""
                        lines.append(f"| {model} | {hosts} | {link_name(link)} | {label(side, variant)} | {r['step_s_median']:.3f} | "
                                     f"{t1[base]['step_s_median']:.3f} | {efficiency(t1[base], r, ideal)} | {exposed} | {wait} | {sent} |")
                targets.append(target_row(model, hosts, link, t1, results, ideal))
    return lines, targets


def label(side, variant):
    if side == "pytorch" and variant == "bf16":
        return "DDP gloo bf16_compress_hook"
    names = {"ours": "bert-dist", "before": "bert-dist before", "pytorch": "DDP gloo"}
    variants = {"fp32": "fp32", "bf16": "--grad-compression bf16", "no-sync": "no gradient sum"}
    return f"{names[side]} {variants[variant]}"


def efficiency(t1, r, ideal):
    if not t1 or not r:
        return ""
    return f"{t1['step_s_median'] / ideal / r['step_s_median']:.2f}"


def target_row(model, hosts, link, t1, results, ideal):
    ours = [(v, r) for (s, v), r in results.items() if s == "ours"]
    theirs = [(v, r) for (s, v), r in results.items() if s == "pytorch"]
    if not ours or not t1["ours"]:
        return None
    # fp32 must meet the 10 Gbit/s target; compression is allowed at 1 Gbit/s.
    allowed = [(v, r) for v, r in ours if link != "10gbit" or v == "fp32"]
    variant, r = min(allowed, key=lambda vr: vr[1]["step_s_median"])
    eff = t1["ours"]["step_s_median"] / ideal / r["step_s_median"]
    goal = TARGET_EFFICIENCY.get(link)
    eff_text = f"{eff:.2f} ({'bf16' if variant == 'bf16' else 'fp32'})"
    eff_verdict = "" if goal is None else ("met" if eff >= goal else f"missed by {100 * (goal - eff) / goal:.0f}%")
    speed_text = speed_verdict = ""
    if theirs:
        their_variant, their = min(theirs, key=lambda vr: vr[1]["step_s_median"])
        speedup = their["step_s_median"] / r["step_s_median"]
        speed_text = f"{speedup:.2f}x (DDP {their['step_s_median']:.3f} s, {their_variant})"
        speed_verdict = "met" if speedup >= TARGET_SPEEDUP else f"missed by {100 * (TARGET_SPEEDUP - speedup) / TARGET_SPEEDUP:.0f}%"
    return (f"| {model} | {hosts} | {link_name(link)} | {r['step_s_median']:.3f} | {eff_text} | >= {goal}: {eff_verdict} | "
            f"{speed_text} | >= 2x: {speed_verdict} |")


def replace_between(path, text):
    begin, end = "<!-- communication:begin -->", "<!-- communication:end -->"
    content = open(path).read()
    if begin not in content or end not in content:
        sys.exit(f"error: {path} has no {begin} ... {end} markers")
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(path, "w") as handle:
        handle.write(head + begin + "\n" + text + "\n" + end + tail)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results")
    parser.add_argument("--run", action="append")
    parser.add_argument("--markdown")
    parser.add_argument("--readme")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    arguments = parser.parse_args()
    rows, runs = load(arguments.results, arguments.run)
    if not rows:
        sys.exit(f"error: no results for run {', '.join(runs) or '(none)'} in {arguments.results}")
    lines, targets = tables(rows, arguments.cores)
    target_lines = ["| model | hosts | link | bert-dist step (s) | efficiency | target | vs DDP's best | target |",
                    "| --- | ---: | --- | ---: | --- | --- | --- | --- |"] + [t for t in targets if t]
    full = "\n".join(lines + ["", "Targets (issue 13):", ""] + target_lines)
    if arguments.markdown:
        replace_between(arguments.markdown, full)
    if arguments.readme:
        replace_between(arguments.readme, "\n".join([lines[0], ""] + target_lines))
    if not arguments.markdown and not arguments.readme:
        print(full)


if __name__ == "__main__":
    main()
