#!/usr/bin/env python3
"""Turns the JSON lines of benchmarks/run.sh into the markdown tables of benchmarks/README.md.

    python3 tools/bench_table.py benchmarks/results.jsonl [--run RUN_ID] [--readme benchmarks/README.md]

Without --readme the tables are printed. With it, the text between the markers
<!-- results:begin --> and <!-- results:end --> is replaced. Targets (issue 6): examples/s at
least 2x PyTorch's best layout on real rows, 1.2x on 32 x 128 fixed; model FLOP/s at least 85%
of the sgemm peak measured in the same run; peak memory per rank at most PyTorch's.
"""
import argparse
import json
import re
import sys

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def load(path, run):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    if not rows:
        sys.exit(f"error: {path}: no results")
    run = run or rows[-1]["run"]
    rows = [r for r in rows if r["run"] == run]
    if not rows:
        sys.exit(f"error: {path}: no results of run {run}")
    return run, rows


def tables(run, rows):
    by = {(r["config"], r["side"], r["layout"]): r for r in rows}
    configs = []
    for r in rows:
        if r["config"] not in configs:
            configs.append(r["config"])
    out = [f"Run {run}. Medians of the timed steps; examples/s = global batch / median step time.", ""]
    out.append("| configuration | ranks x threads | bert-dist step (s) | PyTorch step (s) | speedup | "
               "bert-dist model GFLOP/s (% of sgemm peak) | PyTorch model GFLOP/s (% of its matmul peak) | "
               "peak RSS per rank, MB: bert-dist / PyTorch | busy CPU before (ours / PyTorch) |")
    out.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for config in configs:
        for layout in ["1x2", "2x1"]:
            ours, torch = by.get((config, "ours", layout)), by.get((config, "pytorch", layout))
            if not ours and not torch:
                continue
            def cell(r, key, fmt):
                return fmt.format(r[key]) if r else "—"
            speedup = f"{torch['step_s_median'] / ours['step_s_median']:.2f}x" if ours and torch else "—"
            flops = (f"{ours['model_gflops_per_s']:.0f} ({100 * ours['fraction_of_sgemm_peak']:.0f}%)" if ours else "—")
            torch_flops = (f"{torch['model_gflops_per_s']:.0f} ({100 * torch['fraction_of_sgemm_peak']:.0f}%)" if torch else "—")
            memory = f"{cell(ours, 'peak_rss_mb', '{:.0f}')} / {cell(torch, 'peak_rss_mb', '{:.0f}')}"
            busy = f"{cell(ours, 'background_busy', '{:.2f}')} / {cell(torch, 'background_busy', '{:.2f}')}"
            out.append(f"| {config} | {layout.replace('x', ' x ')} | {cell(ours, 'step_s_median', '{:.3f}')} | "
                       f"{cell(torch, 'step_s_median', '{:.3f}')} | {speedup} | {flops} | {torch_flops} | {memory} | {busy} |")
    out += ["", "Targets: each side's best layout.", ""]
    out.append("| configuration | bert-dist examples/s (layout) | PyTorch examples/s (layout) | speedup | target | "
               "model FLOP/s / sgemm peak (target 85%) | memory per rank vs PyTorch, same layout |")
    out.append("| --- | ---: | ---: | ---: | --- | --- | --- |")
    for config in configs:
        ours = [by[k] for k in by if k[0] == config and k[1] == "ours"]
        torch = [by[k] for k in by if k[0] == config and k[1] == "pytorch"]
        if not ours or not torch:
            continue
        best = max(ours, key=lambda r: r["examples_per_s"])
        best_torch = max(torch, key=lambda r: r["examples_per_s"])
        speedup = best["examples_per_s"] / best_torch["examples_per_s"]
        target = 1.2 if "fixed" in config else 2.0
        verdict = "met" if speedup >= target else f"missed by {100 * (1 - speedup / target):.0f}%"
        fraction = best["fraction_of_sgemm_peak"]
        peak_verdict = f"{100 * fraction:.0f}%: " + ("met" if fraction >= 0.85 else f"missed by {100 * (0.85 - fraction):.0f} points")
        memory = []
        for r in ours:
            t = by.get((config, "pytorch", r["layout"]))
            if t:
                ratio = r["peak_rss_mb"] / t["peak_rss_mb"]
                memory.append(f"{r['layout'].replace('x', ' x ')}: {100 * ratio:.0f}%" + ("" if ratio <= 1 else " (missed)"))
        out.append(f"| {config} | {best['examples_per_s']:.1f} ({best['layout'].replace('x', ' x ')}) | "
                   f"{best_torch['examples_per_s']:.1f} ({best_torch['layout'].replace('x', ' x ')}) | {speedup:.2f}x | "
                   f">= {target}x: {verdict} | {peak_verdict} | {', '.join(memory)} |")
    out += bf16_table(by, configs)
    return "\n".join(out)


def bf16_table(by, configs):
    """bf16 (issue 12): each side's best of fp32 / bf16 and layout; target 2x PyTorch's best."""
    sides = ["pytorch", "pytorch-bf16", "ours", "ours-bf16"]
    if not any(k[1] in ("ours-bf16", "pytorch-bf16") for k in by):
        return []
    out = ["", "bf16: median step seconds of each side's best layout (bert-dist --bf16; PyTorch torch.autocast bf16); "
           "speedup = PyTorch's best of fp32/bf16 over bert-dist's best of fp32/bf16 (target 2x).", ""]
    out.append("| configuration | PyTorch fp32 | PyTorch bf16 autocast | bert-dist fp32 | bert-dist --bf16 | "
               "bert-dist fp32, OPENBLAS_CORETYPE/L2_SIZE unset | bert-dist --bf16, unset | speedup (best vs best) | target 2x |")
    out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for config in configs:
        best = {}
        cells = []
        for side in sides:
            rows = [by[k] for k in by if k[0] == config and k[1] == side and not k[2].endswith("-unset")]
            if rows:
                best[side] = min(rows, key=lambda r: r["step_s_median"])
                cells.append(f"{best[side]['step_s_median']:.3f} ({best[side]['layout'].replace('x', ' x ')})")
            else:
                cells.append("—")
        for side in ["ours", "ours-bf16"]:
            r = by.get((config, side, "1x2-unset"))
            cells.append(f"{r['step_s_median']:.3f} (1 x 2)" if r else "as is (not set)")
        ours = [best[s] for s in ("ours", "ours-bf16") if s in best]
        theirs = [best[s] for s in ("pytorch", "pytorch-bf16") if s in best]
        if ours and theirs:
            speedup = min(r["step_s_median"] for r in theirs) / min(r["step_s_median"] for r in ours)
            verdict = "met" if speedup >= 2 else f"missed by {100 * (1 - speedup / 2):.0f}%"
            cells += [f"{speedup:.2f}x", verdict]
        else:
            cells += ["—", "—"]
        out.append(f"| {config} | " + " | ".join(cells) + " |")
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("results")
    parser.add_argument("--run")
    parser.add_argument("--readme")
    arguments = parser.parse_args()
    run, rows = load(arguments.results, arguments.run)
    text = tables(run, rows)
    if not arguments.readme:
        print(text)
        return
    readme = open(arguments.readme).read()
    if BEGIN not in readme or END not in readme:
        sys.exit(f"error: {arguments.readme} has no {BEGIN} ... {END} section")
    readme = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: f"{BEGIN}\n{text}\n{END}", readme, flags=re.S)
    open(arguments.readme, "w").write(readme)
    print(text)


if __name__ == "__main__":
    main()
