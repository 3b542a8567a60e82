#!/usr/bin/env python3
"""Times PyTorch + Hugging Face training steps the way `bert-dist bench` times ours.

Run by developers (never by CI), e.g. from the repository root:
    /work/venv/bin/python tools/bench_pytorch.py --model models/minilm \
        --data ag_news_sample.csv --batch-size 32 --threads 2 --json
    /work/venv/bin/python tools/bench_pytorch.py --model benchmarks/bert-base --random-weights \
        --batch-size 32 --seq-len 128 --processes 2 --threads 1 --json

Same work as `bert-dist bench`:
  * model: the folder family's <Family>ForSequenceClassification (AutoModelForSequenceClassification:
    BERT, DistilBERT, ELECTRA, RoBERTa, XLM-R, CamemBERT) with 4 labels from the folder (MiniLM),
    or from its config.json alone with random weights (--random-weights, e.g. bert-base,
    distilbert-base, roberta-base); token type ids only for the families that take them;
  * rows: without --data, one synthetic batch of --seq-len tokens per sequence with the same
    token ids as bert-dist's synthetic batch; with --data, consecutive AG News CSV rows
    (text = title + " " + description, labels 1..4 -> 0..3), tokenised by the folder's tokenizer,
    truncated to --seq-len, batch b = rows b*B ..< (b+1)*B, step s uses batch s mod the number
    of batches (at most warmup + steps batches), padded to the longest row of the batch like
    transformers' DataCollatorWithPadding (dynamic padding);
  * step: zero_grad, forward (train mode: dropout on), mean cross-entropy, backward,
    clip_grad_norm_(1.0), AdamW (lr 2e-5, weight decay 0; fused=True, the default optimizer of
    transformers' Trainer for torch >= 2.8);
  * --processes N: DDP with the gloo backend, N processes launched by this script, each with
    --threads threads and pinned to one core (like mpirun --bind-to core); each rank takes a
    contiguous shard of equal count of the global batch, as DistributedSampler does (bert-dist
    splits by tokens instead; `bert-dist-dev bench --example-split` takes these shards);
  * 3 warm-up steps, then --steps timed steps; a step ends when the slowest rank is done;
    medians; peak resident memory per process (getrusage ru_maxrss).
  * several hosts (benchmarks/communication.sh): one process per host, each started with
    --processes N --rank R --master-addr HOST0 (gloo finds its interface from GLOO_SOCKET_IFNAME);
    --bf16-compress registers DDP's bf16_compress_hook; --no-sync runs forward/backward under
    DDP's no_sync() (no gradient communication: the compute-only step); the bytes the host's
    network interfaces sent per timed step come from /proc/net/dev (every interface but lo),
    as bert-dist bench measures them.

Model FLOPs use bert-dist's formula (Sources/Training/ModelFLOPs.swift): matrix products of the
REAL tokens (padding is wasted work, not model work), forward + backward = 3 x forward.
The matmul peak is torch's own: the model's largest GEMM shape (real tokens per rank x
intermediate x hidden), timed by every rank at once with the same threads.

Prints one JSON object with --json, else a few readable lines.
"""
import argparse
import csv
import json
import os
import resource
import statistics
import sys
import time


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="Hugging Face folder of an encoder (config.json, tokenizer files, weights)")
    parser.add_argument("--random-weights", action="store_true", help="initialise from config.json alone")
    parser.add_argument("--data", help="AG News CSV; without it, synthetic sequences of --seq-len tokens")
    parser.add_argument("--batch-size", type=int, default=8, help="global batch size")
    parser.add_argument("--seq-len", type=int, default=128, help="synthetic length, or truncation of real rows")
    parser.add_argument("--steps", type=int, default=20, help="timed steps after 3 warm-up steps")
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads per process (default: cores / processes)")
    parser.add_argument("--processes", type=int, default=1, help="DDP gloo processes (1: plain single process)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin DDP ranks to cores")
    parser.add_argument("--rank", type=int, default=None, help="this process's rank of --processes, one process per host")
    parser.add_argument("--master-addr", default="127.0.0.1", help="rank 0's address (with --rank)")
    parser.add_argument("--master-port", type=int, default=29533, help="rendezvous port (with --rank)")
    parser.add_argument("--bf16-compress", action="store_true", help="DDP communication hook bf16_compress_hook")
    parser.add_argument("--no-sync", action="store_true", help="forward/backward under no_sync(): no gradient communication")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--bf16", action="store_true",
                        help="forward under torch.autocast('cpu', dtype=torch.bfloat16), as HF Trainer's bf16=True")
    arguments = parser.parse_args(argv)
    if arguments.threads is None:
        arguments.threads = max(1, (os.cpu_count() or 1) // arguments.processes)
    return arguments


def synthetic_batch(batch_size, seq_len, vocab_size):
    """bert-dist's synthetic batch (Sources/Training/Benchmark.swift benchmarkBatches)."""
    rows = []
    for s in range(batch_size):
        ids = [1000 + (t * 7919 + s * 104729) % max(1, vocab_size - 1000) for t in range(seq_len)]
        rows.append((ids, s % 4))
    return [rows]


def real_batches(arguments, tokenizer):
    texts, labels = [], []
    with open(arguments.data, newline="", encoding="utf-8") as handle:
        for row in csv.reader(handle):
            if len(row) != 3 or not row[0].strip().isdigit():
                continue
            labels.append(int(row[0]) - 1)
            texts.append(row[1] + " " + row[2])
    if len(texts) < arguments.batch_size:
        sys.exit(f"error: {arguments.data}: {len(texts)} rows, fewer than one batch of {arguments.batch_size}")
    batch_count = min(len(texts) // arguments.batch_size, arguments.warmup_steps + arguments.steps)
    used = batch_count * arguments.batch_size
    encoded = tokenizer(texts[:used], truncation=True, max_length=arguments.seq_len)["input_ids"]
    return [[(encoded[b * arguments.batch_size + s], labels[b * arguments.batch_size + s])
             for s in range(arguments.batch_size)] for b in range(batch_count)]


def rank_shard(count, rank, world_size):
    """Contiguous shard of a global batch, as bert-dist's example split (shardRange in Sources/Data/Sampler.swift)."""
    return range(count * rank // world_size, count * (rank + 1) // world_size)


def padded_tensors(rows, torch, pad_id=0, token_types=True):
    """DataCollatorWithPadding: right padding (with the model's pad id) to the longest row,
    attention mask 1 on real tokens; token type ids (all 0) for the families that take them."""
    longest = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros(len(rows), longest, dtype=torch.long)
    for r, (ids, _) in enumerate(rows):
        input_ids[r, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[r, :len(ids)] = 1
    labels = torch.tensor([label for _, label in rows], dtype=torch.long)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    if token_types:
        inputs["token_type_ids"] = torch.zeros_like(input_ids)
    return inputs


def intermediate_size(config):
    """The feed-forward width (DistilBERT calls it hidden_dim)."""
    return getattr(config, "intermediate_size", None) or config.hidden_dim


def training_flops(config, lengths, label_count=4):
    """bert-dist's trainingFLOPs (Sources/Training/ModelFLOPs.swift), ELECTRA's projection included."""
    C, I = float(config.hidden_size), float(intermediate_size(config))
    tokens = float(sum(lengths))
    squares = float(sum(n * n for n in lengths))
    per_layer = 2 * tokens * (4 * C * C + 2 * C * I) + 2 * 2 * squares * C
    head = 2 * len(lengths) * (C * C + C * label_count)
    E = float(getattr(config, "embedding_size", None) or config.hidden_size)
    projection = 2 * tokens * E * C if E != C else 0.0
    return 3 * (config.num_hidden_layers * per_layer + head + projection)


def matmul_flops_per_second(torch, m, n, k):
    a = torch.randn(m, k)
    w = torch.randn(n, k)
    best = 0.0
    for _ in range(5):
        start = time.perf_counter()
        torch.matmul(a, w.t())
        best = max(best, 2.0 * m * n * k / (time.perf_counter() - start))
    return best


def interface_bytes_sent():
    """Transmit bytes of every interface but lo (/proc/net/dev of this network namespace), or None."""
    try:
        with open("/proc/net/dev") as handle:
            lines = handle.read().splitlines()[2:]
    except OSError:
        return None
    total = 0
    for line in lines:
        name, _, fields = line.partition(":")
        if name.strip() != "lo":
            total += int(fields.split()[8])
    return total


def run_rank(rank, arguments, result_path):
    import torch
    import torch.distributed as dist
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    world_size = arguments.processes
    distributed = world_size > 1
    if distributed:
        if not arguments.no_pin and hasattr(os, "sched_setaffinity"):
            cores = sorted(os.sched_getaffinity(0))
            os.sched_setaffinity(0, {cores[rank % len(cores)]})
        dist.init_process_group("gloo", rank=rank, world_size=world_size)
    torch.set_num_threads(arguments.threads)
    torch.manual_seed(1)

    config = AutoConfig.from_pretrained(arguments.model, num_labels=4)
    if arguments.random_weights:
        model = AutoModelForSequenceClassification.from_config(config)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(arguments.model, num_labels=4)
    # DistilBERT's forward takes no token type ids; RoBERTa's tokenizers give none.
    token_types = config.model_type in ("bert", "electra")
    pad_id = config.pad_token_id or 0
    model.train()
    if arguments.data:
        tokenizer = AutoTokenizer.from_pretrained(arguments.model)
        batches = real_batches(arguments, tokenizer)
    else:
        batches = synthetic_batch(arguments.batch_size, arguments.seq_len, config.vocab_size)
    network = torch.nn.parallel.DistributedDataParallel(model) if distributed else model
    if distributed and arguments.bf16_compress:
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
        network.register_comm_hook(None, default_hooks.bf16_compress_hook)
    import contextlib
    no_sync = network.no_sync if distributed and arguments.no_sync else contextlib.nullcontext
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.0, fused=True)

    def all_max(value):
        if not distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor.item()

    step_seconds = []
    bytes_at_start = None
    for step in range(arguments.warmup_steps + arguments.steps):
        if step == arguments.warmup_steps:
            if distributed:
                dist.barrier()
            bytes_at_start = interface_bytes_sent()
        global_rows = batches[step % len(batches)]
        rows = [global_rows[i] for i in rank_shard(len(global_rows), rank, world_size)]
        if distributed:
            dist.barrier()
        start = time.perf_counter()
        inputs = padded_tensors(rows, torch, pad_id=pad_id, token_types=token_types)
        optimizer.zero_grad(set_to_none=True)
        with no_sync():
            if arguments.bf16:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    loss = network(**inputs).loss
            else:
                loss = network(**inputs).loss
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        elapsed = all_max(time.perf_counter() - start)
        if step >= arguments.warmup_steps:
            step_seconds.append(elapsed)

    bytes_at_end = interface_bytes_sent()
    interface_bytes = (bytes_at_end - bytes_at_start) / arguments.steps if bytes_at_start is not None and bytes_at_end is not None else -1.0
    timed = [batches[s % len(batches)] for s in range(arguments.warmup_steps, arguments.warmup_steps + arguments.steps)]
    real_tokens = statistics.fmean(sum(len(ids) for ids, _ in b) for b in timed)
    padded_tokens = statistics.fmean(len(b) * max(len(ids) for ids, _ in b) for b in timed)
    flops = statistics.fmean(training_flops(config, [len(ids) for ids, _ in b]) for b in timed)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if distributed:
        dist.barrier()
    tokens_per_rank = max(64, int(real_tokens) // world_size)
    peak = matmul_flops_per_second(torch, tokens_per_rank, intermediate_size(config), config.hidden_size)
    if distributed:
        values = torch.tensor([peak_rss_mb, peak, interface_bytes], dtype=torch.float64)
        gathered = [torch.zeros_like(values) for _ in range(world_size)]
        dist.all_gather(gathered, values)
        peak_rss_mb = max(v[0].item() for v in gathered)
        peak = sum(v[1].item() for v in gathered)
        interface_bytes = max(v[2].item() for v in gathered)
        dist.destroy_process_group()
    if rank != 0:
        return
    median = statistics.median(step_seconds)
    result = {
        "framework": f"pytorch {torch.__version__} + transformers",
        "step_s_median": median, "step_s_min": min(step_seconds),
        "tokens_per_s": real_tokens / median, "examples_per_s": arguments.batch_size / median,
        "ranks": world_size, "threads": arguments.threads, "precision": "bf16" if arguments.bf16 else "fp32",
        "model_gflops_per_s": flops / median / 1e9, "sgemm_peak_gflops_per_s": peak / 1e9,
        "fraction_of_sgemm_peak": flops / median / peak,
        "peak_rss_mb": peak_rss_mb,
        "real_tokens_per_batch": real_tokens, "padded_tokens_per_batch": padded_tokens,
        "bf16_compress": arguments.bf16_compress, "no_sync": arguments.no_sync,
    }
    if interface_bytes >= 0:
        result["interface_bytes_sent_per_step"] = interface_bytes
    with open(result_path, "w") as handle:
        json.dump(result, handle)


def main():
    arguments = parse_arguments()
    import tempfile
    with tempfile.TemporaryDirectory() as directory:
        result_path = os.path.join(directory, "result.json")
        if arguments.rank is not None:
            # One process of a multi-host run: the others are started on their hosts.
            os.environ["MASTER_ADDR"] = arguments.master_addr
            os.environ["MASTER_PORT"] = str(arguments.master_port)
            run_rank(arguments.rank, arguments, result_path)
            if arguments.rank != 0:
                return
        elif arguments.processes > 1:
            import socket
            import torch.multiprocessing as multiprocessing
            with socket.socket() as probe:  # a free port for the gloo rendezvous
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ["MASTER_PORT"] = str(port)
            multiprocessing.spawn(run_rank, args=(arguments, result_path), nprocs=arguments.processes, join=True)
        else:
            run_rank(0, arguments, result_path)
        with open(result_path) as handle:
            result = json.load(handle)
    if arguments.json:
        print(json.dumps(result))
    else:
        print(f"step {result['step_s_median']:.3f} s (median), {result['step_s_min']:.3f} s (min); "
              f"{result['tokens_per_s']:.0f} tokens/s, {result['examples_per_s']:.1f} examples/s; "
              f"{result['ranks']} process(es) x {result['threads']} thread(s)")
        print(f"model {result['model_gflops_per_s']:.1f} GFLOP/s = {100 * result['fraction_of_sgemm_peak']:.0f}% of torch's "
              f"matmul peak measured now ({result['sgemm_peak_gflops_per_s']:.1f} GFLOP/s); peak RSS {result['peak_rss_mb']:.0f} MB/process")
        print(f"real tokens per batch {result['real_tokens_per_batch']:.0f} (padded: {result['padded_tokens_per_batch']:.0f})")


if __name__ == "__main__":
    main()
