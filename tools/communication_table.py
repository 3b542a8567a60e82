#!/usr/bin/env python3
"""Tables of benchmarks/communication.sh's results (benchmarks/communication.jsonl).

    python3 tools/communication_table.py benchmarks/communication.jsonl [--run RUN_ID ...]
        [--markdown benchmarks/communication.md] [--readme README.md]

Without --markdown/--readme prints the tables. With them, replaces the text between
`<!-- communication:begin -->` and `<!-- communication:end -->` in each file (the README gets the
targets table only). Every figure is the best (smallest step time) of the run's rounds (of all the
given runs' rounds with several --run: e.g. one run per model, each short enough to hold the CPU lock).

  efficiency   = (T1 / ideal) / T, T1 the same global batch on one host (bert-dist's fp32 T1 for
                 every bert-dist row, the unset T1 for the OPENBLAS-unset rows; DDP's for DDP),
                 ideal = hosts, or the machine's cores when there are more hosts than cores;
  exposed      = T - T(no gradient communication, same hosts, same split): the communication not hidden;
  finish wait  = bert-dist's own figure: what the gradient sum's finish waited (slowest rank);
  tokens above = how far the busiest rank's real tokens were above the ranks' mean (median step);
  MB per step  = bytes the busiest host's network interface sent per step (/proc/net/dev).

Variants of bert-dist (side "ours"): fp32, bf16 (--grad-compression bf16), fp32-zero1 / bf16-zero1
(--shard-optimizer); diagnostics of the link's target variant V: V-examples (batches split into
equal example counts, the split before token balancing), V-overlapped (the optimizer's update overlapped, vs after
every sum has arrived), V-openblas-unset; no-sync and no-sync-examples (no gradient communication).
Side "before": another binary (communication.sh --before). Side "pytorch": DDP gloo.
"""
import argparse
import json
import os
import sys

TARGET_EFFICIENCY = {"10gbit": 0.9, "1gbit": 0.75}
TARGET_SPEEDUP = 2.0
# What a user runs: the targets are judged on the best of these (fp32 only at 10 Gbit/s).
USER_VARIANTS = ("fp32", "bf16", "fp32-zero1", "bf16-zero1")


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


def target_variant(link):
    return "fp32" if link == "10gbit" else "bf16"


def label(side, variant):
    if side == "pytorch":
        return {"fp32": "DDP gloo fp32", "bf16": "DDP gloo bf16_compress_hook", "no-sync": "DDP gloo no gradient sum"}[variant]
    name = "bert-dist before" if side == "before" else "bert-dist"
    if variant.startswith("no-sync"):
        return f"{name} no gradient sum" + (", example split" if variant.endswith("-examples") else "")
    base, _, diagnostic = variant.partition("-")
    text = {"fp32": "fp32", "bf16": "--grad-compression bf16"}[base]
    notes = {"": "", "zero1": " --shard-optimizer", "examples": ", example split", "overlapped": ", update overlapped",
             "openblas-unset": ", OPENBLAS_CORETYPE/L2_SIZE unset"}
    return f"{name} {text}{notes[diagnostic]}"


def efficiency(t1, r, ideal):
    if not t1 or not r:
        return None
    return t1["step_s_median"] / ideal / r["step_s_median"]


def text(value, digits=2):
    return "" if value is None else f"{value:.{digits}f}"


def tokens_above(r):
    """How far the busiest rank's tokens were above the mean, under the split the row used."""
    imbalance = r.get("imbalance_median") if r else None
    if not imbalance or r.get("ranks", 1) < 2:
        return ""
    split = r.get("split", "tokens")
    return f"{100 * imbalance[split]['tokens']:.1f}%" if split in imbalance else ""


def no_sync_of(no_sync, side, variant, r):
    """The compute-only step a row's exposed communication is measured against: none for a row
    whose OpenBLAS environment differs from the no-sync run's (other kernels, another step)."""
    if side == "pytorch":
        return no_sync.get(("pytorch", "no-sync"))
    base = no_sync.get(("before", "no-sync")) if side == "before" else \
        no_sync.get(("ours", "no-sync-examples" if variant.endswith("-examples") else "no-sync"))
    blas = ("openblas_coretype", "openblas_l2_size")
    return base if base and all(base.get(k) == r.get(k) for k in blas) else None


def ordered_models(rows):
    def key(model):
        family, _, batch = model.rpartition("-b")
        return (family != "minilm", family, -int(batch) if batch.isdigit() else 0)
    return sorted({r["model"] for r in rows}, key=key)


def tables(rows, cores):
    models = ordered_models(rows)
    host_counts = sorted({r["hosts"] for r in rows if r["hosts"] > 1})
    links = sorted({r["link"] for r in rows if r["link"] != "none"}, key=lambda l: -int(l.rstrip("gbit") or 0))
    rounds = sorted({(r["run"], r["round"]) for r in rows})
    runs = sorted({r["run"] for r in rows})
    busy = [r["background_busy"] for r in rows]
    loads = [r.get("load_average", 0) for r in rows]
    cpus = sorted({r.get("cpu", "not recorded") for r in rows})
    settings = sorted({f"OPENBLAS_CORETYPE={r.get('openblas_coretype', '?')} OPENBLAS_L2_SIZE={r.get('openblas_l2_size', '?')}"
                       for r in rows if r["side"] != "pytorch"})
    kernels = sorted({r["blas_core"] for r in rows if r.get("blas_core")})
    quiet = max(busy) <= 0.1
    header = [f"Run{'s' if len(runs) > 1 else ''} {', '.join(runs)}, {len(rounds)} round(s), best of the rounds; CPU "
              f"{', '.join(cpus)}, {cores} cores. Background load while measuring: busy fraction of all CPUs before each run "
              f"{min(busy):.2f}-{max(busy):.2f}, load average {min(loads):.1f}-{max(loads):.1f}"
              + ("." if quiet else " (**a shared, busy machine: provisional figures**)."),
              f"bert-dist's environment: {'; '.join(settings)} (OpenBLAS kernels: {', '.join(kernels) or '?'})."]

    full = ["| model | hosts | link | side | step (s) | T1 (s) | efficiency | exposed comm (s) | finish wait (s) | tokens above the mean | MB sent per step per host |",
            "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    causes = ["| model | link | variant | step now (s) | example split | update overlapped | --shard-optimizer | before | exposed comm now (s) | tokens above the mean: example split -> now |",
              "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    targets = []

    def row(model, hosts, link, side, variant, r, t1, ideal, exposed_base=None):
        exposed = text(r["step_s_median"] - exposed_base["step_s_median"], 3) if exposed_base else ""
        communicates = hosts > 1 and link != "none"
        wait = text(r["phases_s_median"]["sync"], 3) if "phases_s_median" in r and communicates else ""
        sent = text(r["interface_bytes_sent_per_step"] / 1e6, 1) if "interface_bytes_sent_per_step" in r and communicates else ""
        full.append(f"| {model} | {hosts} | {link_name(link)} | {label(side, variant)} | {r['step_s_median']:.3f} | "
                    f"{text(t1['step_s_median'], 3) if t1 and hosts > 1 else ''} | {text(efficiency(t1, r, ideal)) if hosts > 1 else ''} | "
                    f"{exposed} | {wait} | {tokens_above(r)} | {sent} |")

    for model in models:
        t1 = {(side, variant): best(rows, model=model, hosts=1, side=side, variant=variant)
              for side, variant in (("ours", "fp32"), ("ours", "fp32-openblas-unset"), ("pytorch", "fp32"))}
        for (side, variant), r in t1.items():
            if r:
                row(model, 1, "none", side, variant, r, None, 1)

        def t1_of(side, variant):
            if side == "pytorch":
                return t1[("pytorch", "fp32")]
            return t1[("ours", "fp32-openblas-unset")] if variant.endswith("openblas-unset") else t1[("ours", "fp32")]

        for hosts in host_counts:
            ideal = min(hosts, cores)
            no_sync = {}
            for side, variant in (("ours", "no-sync"), ("ours", "no-sync-examples"), ("before", "no-sync"), ("pytorch", "no-sync")):
                r = best(rows, model=model, hosts=hosts, side=side, variant=variant)
                if r:
                    no_sync[(side, variant)] = r
                    row(model, hosts, "none", side, variant, r, t1_of(side, variant), ideal)
            if ("ours", "no-sync") in no_sync:
                now, examples = no_sync[("ours", "no-sync")], no_sync.get(("ours", "no-sync-examples"))
                causes.append(f"| {model} | no gradient sum | - | {now['step_s_median']:.3f} (E {text(efficiency(t1_of('ours', 'fp32'), now, ideal))}) | "
                              + (f"{examples['step_s_median']:.3f} (E {text(efficiency(t1_of('ours', 'fp32'), examples, ideal))})" if examples else "")
                              + f" | | | | | {tokens_above(examples)} -> {tokens_above(now)} |")
            for link in links:
                found = {}
                for side in ("ours", "before", "pytorch"):
                    variants = sorted({r["variant"] for r in rows if r["model"] == model and r["hosts"] == hosts
                                       and r["link"] == link and r["side"] == side}, key=variant_order)
                    for variant in variants:
                        r = best(rows, model=model, hosts=hosts, link=link, side=side, variant=variant)
                        found[(side, variant)] = r
                        row(model, hosts, link, side, variant, r, t1_of(side, variant), ideal, no_sync_of(no_sync, side, variant, r))
                causes.append(cause_row(model, link, found, no_sync))
                targets.append(target_row(model, hosts, link, t1, found, ideal))
    return header, full, [c for c in causes if c], [t for t in targets if t]


def variant_order(variant):
    base, _, diagnostic = variant.partition("-")
    return (["", "zero1", "examples", "overlapped", "openblas-unset"].index(diagnostic) if diagnostic in
            ("", "zero1", "examples", "overlapped", "openblas-unset") else 9, base != "fp32", variant)


def cause_row(model, link, found, no_sync):
    variant = target_variant(link)
    now = found.get(("ours", variant))
    if not now:
        return None

    def delta(r):
        return "" if not r else f"{r['step_s_median']:.3f} ({r['step_s_median'] - now['step_s_median']:+.3f})"
    examples = found.get(("ours", f"{variant}-examples"))
    exposed = no_sync.get(("ours", "no-sync"))
    return (f"| {model} | {link_name(link)} | {variant} | {now['step_s_median']:.3f} | {delta(examples)} | "
            f"{delta(found.get(('ours', f'{variant}-overlapped')))} | {delta(found.get(('ours', f'{variant}-zero1')))} | "
            f"{delta(found.get(('before', variant)))} | {text(now['step_s_median'] - exposed['step_s_median'], 3) if exposed else ''} | "
            f"{tokens_above(examples)} -> {tokens_above(now)} |")


def target_row(model, hosts, link, t1, found, ideal):
    ours = [(v, r) for (s, v), r in found.items() if s == "ours" and v in USER_VARIANTS]
    theirs = [(v, r) for (s, v), r in found.items() if s == "pytorch" and v in ("fp32", "bf16")]
    if not ours or not t1[("ours", "fp32")]:
        return None
    # fp32 must meet the 10 Gbit/s target; compression is allowed at 1 Gbit/s.
    allowed = [(v, r) for v, r in ours if link != "10gbit" or v.startswith("fp32")]
    if not allowed:
        return None
    variant, r = min(allowed, key=lambda vr: vr[1]["step_s_median"])
    eff = efficiency(t1[("ours", "fp32")], r, ideal)
    goal = TARGET_EFFICIENCY.get(link)
    # Three decimals: the judged figure (0.896 is a miss, which 0.90 would hide).
    eff_text = f"{eff:.3f} ({variant.replace('-zero1', ', --shard-optimizer')})"
    eff_verdict = "" if goal is None else ("met" if eff >= goal else f"missed by {100 * (goal - eff) / goal:.1f}%")
    speed_text = speed_verdict = ""
    if theirs:
        their_variant, their = min(theirs, key=lambda vr: vr[1]["step_s_median"])
        speedup = their["step_s_median"] / r["step_s_median"]
        speed_text = f"{speedup:.2f}x (DDP {their['step_s_median']:.3f} s, {their_variant})"
        speed_verdict = "met" if speedup >= TARGET_SPEEDUP else f"missed by {100 * (TARGET_SPEEDUP - speedup) / TARGET_SPEEDUP:.1f}%"
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
    header, full, causes, targets = tables(rows, arguments.cores)
    target_lines = ["| model | hosts | link | bert-dist step (s) | efficiency | target | vs DDP's best | target |",
                    "| --- | ---: | --- | ---: | --- | --- | --- | --- |"] + targets
    cause_lines = ["Gain per cause (each column changes one thing of the link's target variant; in brackets the "
                   "difference to now, s):", ""] + causes
    document = "\n".join(header + [""] + full + ["", "Targets (issues 13, 21):", ""] + target_lines + [""] + cause_lines)
    if arguments.markdown:
        replace_between(arguments.markdown, document)
    if arguments.readme:
        replace_between(arguments.readme, "\n".join(header + [""] + target_lines))
    if not arguments.markdown and not arguments.readme:
        print(document)


if __name__ == "__main__":
    main()
