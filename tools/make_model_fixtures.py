#!/usr/bin/env python3
"""Reference fixtures for the Swift BERT, computed by PyTorch + Hugging Face transformers.

Run by developers (never by CI) from the repository root:
    python3 tools/make_model_fixtures.py [--minilm models/minilm]

Writes Tests/ModelTests/Fixtures/:
  tiny_bert/            a tiny random BertForSequenceClassification (config.json, model.safetensors)
  tiny_reference.safetensors
      input_ids, attention_mask, token_type_ids (int64, padded batch), labels (int64)
      logits, loss                           forward, dropout off
      grad.<name>                            d(mean loss)/d(parameter) for every parameter
      adamw.loss, adamw.<name>               losses of 3 AdamW steps and the parameters after them
      adam.loss, adam.<name>                 the same with torch.optim.Adam (L2 weight decay)
      schedule.lr                            the learning rate used at each of the 3 steps
  minilm_reference.safetensors (with --minilm)
      input_ids, attention_mask, token_type_ids, classifier.weight, classifier.bias, logits
      for a handful of sentences through the real MiniLM-L6-H384 with a seeded classifier head.
  tiny_bf16_reference.safetensors (bf16 mixed precision, SPEC "Precision"; the model of
  tiny_bert/ and the batch of tiny_reference.safetensors, read back, so that the fp32 fixtures
  need not be regenerated), for each of
      fp32.          PyTorch fp32 (as tiny_reference, recomputed by the same PyTorch)
      autocast.      torch.autocast("cpu", dtype=torch.bfloat16), HF's default attention (sdpa)
      autocast_eager. the same with attn_implementation="eager"
      emulated.      bert-dist's --bf16 semantics written in PyTorch: every matrix product
                     (Linear and attention, forward and backward) rounds both inputs to bf16 and
                     accumulates in fp32; nothing else is rounded
  the tensors logits, loss, and (not for autocast_eager) grad.<name>, adamw.loss, adamw.<name>
  (the AdamW recipe below, autocast around the forward pass as HF Trainer's bf16=True does).
  minilm_bf16_reference.safetensors (with --minilm): autocast.logits, autocast_eager.logits,
  emulated.logits, fp32.logits for the sentences and head of minilm_reference.safetensors.
  Run with --only-bf16 to write only these two files.
  tiny_pairs_reference.safetensors (text pairs; the model of tiny_bert/ read back, so that the
  other fixtures need not be regenerated): a padded batch of [CLS] A [SEP] B [SEP] sequences,
      input_ids, attention_mask, token_type_ids (0 up to the first [SEP], 1 after), labels,
      bert.embeddings.token_type_embeddings.weight: the model's, with row 1 redrawn at std 0.5
      (so that the second segment visibly changes the logits; the Swift test loads it over the model's)
      logits, loss, grad.<name> (dropout off; token_type_embeddings' row 1 gets gradient from
      every B segment). Run with --only-pairs to write only this file.

  tiny_multilabel_reference.safetensors, tiny_regression_reference.safetensors (the tasks of
  issue 19; the model of tiny_bert/ read back, so that the other fixtures need not be
  regenerated): the batch of tiny_reference.safetensors through BertForSequenceClassification
  with problem_type multi_label_classification (the 4 labels of tiny_bert, BCEWithLogitsLoss on
  multi-hot targets, some rows with 2 labels and one with none) and regression (num_labels 1, a
  new classifier drawn from seed 4 at std 0.5 and stored here, MSELoss on float targets), HF computing the
  loss from `labels`:
      input_ids, attention_mask, token_type_ids, labels (float32: (B, 4) multi-hot or (B) values),
      [classifier.weight, classifier.bias (regression)], logits, loss, grad.<name> (dropout off).
  Run with --only-tasks to write only these two files.

Training recipe of the optimizer fixtures (what the Swift test must replay): the same batch each
step; loss = mean cross-entropy; clip the global gradient norm to MAX_GRAD_NORM; HF Trainer's
parameter groups (no weight decay for biases and LayerNorm weights); linear warmup + linear decay
schedule (transformers.get_linear_schedule_with_warmup) with WARMUP_STEPS of TOTAL_STEPS.
"""
import argparse
import contextlib
import json
import os

import torch
from safetensors.torch import load_file, save_file
from transformers import BertConfig, BertForSequenceClassification, BertTokenizer
from transformers import get_linear_schedule_with_warmup

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "Tests", "ModelTests", "Fixtures")

LR = 1e-3
BETAS = (0.9, 0.999)
EPS = 1e-6          # larger than the default so that its placement (after sqrt(v_hat)) matters
WEIGHT_DECAY = 0.1
MAX_GRAD_NORM = 0.5  # small enough that clipping is active
WARMUP_STEPS = 1
TOTAL_STEPS = 4      # 3 steps are taken: lr factors 0, 1, 2/3
STEPS = 3


def tiny_config():
    # Odd sizes on purpose (intermediate 37, vocab 99) so that transposed or mis-strided
    # matrices cannot pass by accident.
    return BertConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=37, max_position_embeddings=64, type_vocab_size=2,
        hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        layer_norm_eps=1e-12, initializer_range=0.02, num_labels=4, pad_token_id=0,
    )


def tiny_batch():
    # Three sequences of lengths 9, 14 and 4, padded to 14 on the right like HF's collator.
    g = torch.Generator().manual_seed(1)
    lengths = [9, 14, 4]
    longest = max(lengths)
    ids = torch.zeros(len(lengths), longest, dtype=torch.int64)
    mask = torch.zeros_like(ids)
    types = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, 0] = 2                                   # "[CLS]"
        ids[row, 1:n - 1] = torch.randint(5, 99, (n - 2,), generator=g)
        ids[row, n - 1] = 3                               # "[SEP]"
        mask[row, :n] = 1
    types[1, 8:14] = 1                                    # a second segment in sequence 1
    labels = torch.tensor([2, 0, 3], dtype=torch.int64)
    return ids, mask, types, labels


def parameter_groups(model):
    # transformers.Trainer: no decay for biases and LayerNorm weights.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": WEIGHT_DECAY},
            {"params": no_decay, "weight_decay": 0.0}]


def train_steps(initial_state, optimizer_class, batch, config):
    model = BertForSequenceClassification(config)
    model.load_state_dict(initial_state)
    model.train()
    optimizer = optimizer_class(parameter_groups(model), lr=LR, betas=BETAS, eps=EPS)
    scheduler = get_linear_schedule_with_warmup(optimizer, WARMUP_STEPS, TOTAL_STEPS)
    ids, mask, types, labels = batch
    losses, lrs = [], []
    for _ in range(STEPS):
        optimizer.zero_grad()
        out = model(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
        losses.append(out.loss.item())
    return model, torch.tensor(losses), torch.tensor(lrs)


def make_tiny():
    torch.manual_seed(0)
    config = tiny_config()
    model = BertForSequenceClassification(config)
    # Random LayerNorm parameters and biases, so their gradients are tested on non-trivial values.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    initial = {k: v.clone() for k, v in model.state_dict().items()}

    folder = os.path.join(FIXTURES, "tiny_bert")
    model.save_pretrained(folder, safe_serialization=True)

    batch = tiny_batch()
    ids, mask, types, labels = batch
    model.train()  # dropout probabilities are 0, so train mode is deterministic
    model.zero_grad()
    out = model(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)
    out.loss.backward()

    tensors = {
        "input_ids": ids, "attention_mask": mask, "token_type_ids": types, "labels": labels,
        "logits": out.logits.detach(), "loss": out.loss.detach().reshape(1),
    }
    for name, p in model.named_parameters():
        tensors["grad." + name] = p.grad.detach().clone()

    for prefix, optimizer_class in (("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam)):
        trained, losses, lrs = train_steps(initial, optimizer_class, batch, config)
        tensors[prefix + ".loss"] = losses
        for name, p in trained.named_parameters():
            tensors[prefix + "." + name] = p.detach().clone()
        tensors["schedule.lr"] = lrs
    save_file({k: v.contiguous() for k, v in tensors.items()},
              os.path.join(FIXTURES, "tiny_reference.safetensors"))
    print("tiny: loss", out.loss.item(), "parameters", sum(p.numel() for p in model.parameters()))


SENTENCES = [
    "Wall St. Bears Claw Back Into the Black (Reuters)",
    "Venezuelans Flood Polls, Voting Extended",
    "Fed raises rates a quarter point, signals more to come as inflation cools slightly.",
    "The Red Sox beat the Yankees 4-3 in extra innings on Sunday night at Fenway Park.",
    "A new chip from Intel promises twice the speed at half the power.",
    "ok",
]


def tiny_pair_batch():
    # Four pairs: A and B of lengths (5, 7), (12, 3), (2, 20), (1, 1); padded on the right.
    g = torch.Generator().manual_seed(2)
    sides = [(5, 7), (12, 3), (2, 20), (1, 1)]
    lengths = [3 + a + b for a, b in sides]
    longest = max(lengths)
    ids = torch.zeros(len(sides), longest, dtype=torch.int64)
    mask = torch.zeros_like(ids)
    types = torch.zeros_like(ids)
    for row, (a, b) in enumerate(sides):
        n = 3 + a + b
        ids[row, 0] = 2                                            # [CLS]
        ids[row, 1:1 + a] = torch.randint(5, 99, (a,), generator=g)
        ids[row, 1 + a] = 3                                        # [SEP]
        ids[row, 2 + a:2 + a + b] = torch.randint(5, 99, (b,), generator=g)
        ids[row, n - 1] = 3                                        # [SEP]
        mask[row, :n] = 1
        types[row, 2 + a:n] = 1                                    # B and the last [SEP]
    labels = torch.tensor([1, 3, 0, 2], dtype=torch.int64)
    return ids, mask, types, labels


def make_tiny_pairs():
    folder = os.path.join(FIXTURES, "tiny_bert")
    model = BertForSequenceClassification.from_pretrained(folder, attn_implementation="eager")
    model.train()  # dropout probabilities are 0
    type_table = model.bert.embeddings.token_type_embeddings.weight
    with torch.no_grad():
        type_table[1] = torch.randn(type_table.shape[1], generator=torch.Generator().manual_seed(3)) * 0.5
    ids, mask, types, labels = tiny_pair_batch()
    out = model(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)
    out.loss.backward()
    tensors = {
        "input_ids": ids, "attention_mask": mask, "token_type_ids": types, "labels": labels,
        "logits": out.logits.detach(), "loss": out.loss.detach().reshape(1),
        "bert.embeddings.token_type_embeddings.weight": type_table.detach().clone(),
    }
    for name, p in model.named_parameters():
        tensors["grad." + name] = p.grad.detach().clone()
    path = os.path.join(FIXTURES, "tiny_pairs_reference.safetensors")
    save_file({k: v.contiguous() for k, v in tensors.items()}, path)
    os.chmod(path, 0o644)
    # Without the token types the same ids give other logits: the fixture tests that types are used.
    with torch.no_grad():
        untyped = model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(types)).logits
    type_grad = tensors["grad.bert.embeddings.token_type_embeddings.weight"]
    print("tiny pairs: loss %.6f; logits up to %.3g, |logits with types - without| up to %.3g; token type gradient row norms %s" % (
        out.loss.item(), out.logits.abs().max().item(), (untyped - out.logits).abs().max().item(),
        [round(x, 6) for x in type_grad.norm(dim=1).tolist()]))


def make_tiny_tasks():
    folder = os.path.join(FIXTURES, "tiny_bert")
    ids, mask, types, _ = tiny_batch()
    multi_hot = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 1]], dtype=torch.float32)
    values = torch.tensor([3.7, -1.25, 0.5], dtype=torch.float32)
    for problem_type, labels, name in (("multi_label_classification", multi_hot, "multilabel"),
                                       ("regression", values, "regression")):
        extra = {"num_labels": 1, "ignore_mismatched_sizes": True} if problem_type == "regression" else {}
        model = BertForSequenceClassification.from_pretrained(folder, problem_type=problem_type,
                                                              attn_implementation="eager", **extra)
        assert model.config.problem_type == problem_type
        if problem_type == "regression":
            # A head large enough that the rows' outputs visibly differ.
            with torch.no_grad():
                model.classifier.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(4))
                model.classifier.bias.fill_(0.25)
        model.train()  # dropout probabilities are 0
        out = model(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)
        out.loss.backward()
        tensors = {
            "input_ids": ids, "attention_mask": mask, "token_type_ids": types, "labels": labels,
            "logits": out.logits.detach(), "loss": out.loss.detach().reshape(1),
        }
        if problem_type == "regression":
            tensors["classifier.weight"] = model.classifier.weight.detach().clone()
            tensors["classifier.bias"] = model.classifier.bias.detach().clone()
        for parameter_name, p in model.named_parameters():
            tensors["grad." + parameter_name] = p.grad.detach().clone()
        path = os.path.join(FIXTURES, f"tiny_{name}_reference.safetensors")
        save_file({k: v.contiguous() for k, v in tensors.items()}, path)
        os.chmod(path, 0o644)
        print(f"tiny {problem_type}: loss {out.loss.item():.6f}, logits {out.logits.detach().reshape(-1).tolist()}")


def make_minilm(path):
    torch.manual_seed(1234)
    model = BertForSequenceClassification.from_pretrained(path, num_labels=4)
    model.eval()
    tokenizer = BertTokenizer.from_pretrained(path)
    enc = tokenizer(SENTENCES, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
    tensors = {
        "input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
        "token_type_ids": enc["token_type_ids"],
        "classifier.weight": model.classifier.weight.detach().clone(),
        "classifier.bias": model.classifier.bias.detach().clone(),
        "logits": logits,
    }
    save_file({k: v.contiguous() for k, v in tensors.items()},
              os.path.join(FIXTURES, "minilm_reference.safetensors"))
    print("minilm logits", logits)


# MARK: - bf16 mixed precision

def bf16_round(x):
    """fp32 -> bf16 -> fp32: round to nearest even (what the product's inputs become)."""
    return x.to(torch.bfloat16).to(torch.float32)


ACCUMULATE_IN_FLOAT64 = False   # True: the same products summed exactly (for the sensitivity to summation order)


def product(a, b):
    if ACCUMULATE_IN_FLOAT64:
        return torch.matmul(a.double(), b.double()).float()
    return torch.matmul(a, b)


class Bf16Product(torch.autograd.Function):
    """a @ b with both inputs rounded to bf16, fp32 accumulation; the two backward products
    round their inputs the same way (bert-dist's --bf16 semantics)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return product(bf16_round(a), bf16_round(b))

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        g = bf16_round(grad)
        return product(g, bf16_round(b).transpose(-1, -2)), product(bf16_round(a).transpose(-1, -2), g)


def emulated_linear(module, x):
    flat = x.reshape(-1, x.shape[-1])
    y = Bf16Product.apply(flat, module.weight.t())
    if module.bias is not None:
        y = y + module.bias          # the bias is added in fp32, not rounded
    return y.reshape(*x.shape[:-1], module.weight.shape[0])


def emulated_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    # HF's eager attention with both products in bf16 inputs / fp32 accumulation; the scaling
    # is applied to the fp32 scores (after the product), softmax in fp32.
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = Bf16Product.apply(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    probabilities = torch.nn.functional.softmax(scores, dim=-1, dtype=torch.float32)
    probabilities = torch.nn.functional.dropout(probabilities, p=dropout, training=module.training)
    output = Bf16Product.apply(probabilities, value)
    return output.transpose(1, 2).contiguous(), probabilities


def register_emulated_attention():
    # An attention implementation of our own needs its mask function too (else HF passes no
    # mask at all): eager's additive fp32 mask.
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask
    AttentionInterface.register("bert_dist_bf16", emulated_attention)
    AttentionMaskInterface.register("bert_dist_bf16", eager_mask)


def make_variant(folder, variant, **load_arguments):
    """The model of `folder` set up for `variant` (fp32, autocast, autocast_eager, emulated),
    and the context its forward pass runs in."""
    attention = {"autocast_eager": "eager", "emulated": "bert_dist_bf16"}.get(variant, "sdpa")
    model = BertForSequenceClassification.from_pretrained(folder, attn_implementation=attention, **load_arguments)
    if variant == "emulated":
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.forward = (lambda m: (lambda x: emulated_linear(m, x)))(module)
    autocast = variant.startswith("autocast")
    context = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if autocast else contextlib.nullcontext
    return model, context


def relative_distance(x, y):
    return ((x.double() - y.double()).norm() / max(y.double().norm().item(), 1e-30)).item()


VARIANTS = ("fp32", "autocast", "autocast_eager", "emulated")


def make_tiny_bf16():
    register_emulated_attention()
    folder = os.path.join(FIXTURES, "tiny_bert")
    reference = load_file(os.path.join(FIXTURES, "tiny_reference.safetensors"))
    ids, mask, types, labels = (reference[k] for k in ("input_ids", "attention_mask", "token_type_ids", "labels"))
    tensors = {}
    for variant in VARIANTS:
        model, context = make_variant(folder, variant)
        model.train()  # dropout probabilities are 0
        with context():
            out = model(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)
        out.loss.backward()
        tensors[variant + ".logits"] = out.logits.detach().float()
        tensors[variant + ".loss"] = out.loss.detach().float().reshape(1)
        for name, p in model.named_parameters():
            tensors[variant + ".grad." + name] = p.grad.detach().clone()
        if variant == "autocast_eager":
            continue
        model, context = make_variant(folder, variant)
        model.train()
        optimizer = torch.optim.AdamW(parameter_groups(model), lr=LR, betas=BETAS, eps=EPS)
        scheduler = get_linear_schedule_with_warmup(optimizer, WARMUP_STEPS, TOTAL_STEPS)
        losses = []
        for _ in range(STEPS):
            optimizer.zero_grad()
            with context():
                out = model(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
            optimizer.step()
            scheduler.step()
            losses.append(out.loss.item())
        tensors[variant + ".adamw.loss"] = torch.tensor(losses)
        for name, p in model.named_parameters():
            tensors[variant + ".adamw." + name] = p.detach().clone()
    # (autocast_eager's gradients only enter the summary below: the file stays small.)
    save_file({k: v.contiguous() for k, v in tensors.items() if not k.startswith("autocast_eager.grad.")},
              os.path.join(FIXTURES, "tiny_bf16_reference.safetensors"))

    # How far each result is from fp32 and from each other (relative L2 distance), the basis of
    # the tolerances of the Swift tests (benchmarks/bf16-autocast.md).
    names = [n for n, _ in model.named_parameters()]
    pairs = [("autocast", "fp32"), ("autocast_eager", "fp32"), ("emulated", "fp32"), ("emulated", "autocast"), ("autocast_eager", "autocast")]
    print("tiny, relative L2 distance   " + "  ".join(f"{a} vs {b}" for a, b in pairs))
    rows = [("logits", ["logits"]), ("loss", ["loss"])]
    rows += [("grad " + n, ["grad." + n]) for n in names]
    rows += [("adamw loss", ["adamw.loss"])] + [("adamw " + n, ["adamw." + n]) for n in names]
    for label, keys in rows:
        cells = []
        for a, b in pairs:
            ka, kb = a + "." + keys[0], b + "." + keys[0]
            cells.append(f"{relative_distance(tensors[ka], tensors[kb]):.2e}" if ka in tensors and kb in tensors else "-")
        print(f"  {label:60s} " + "  ".join(cells))
    # The sensitivity of the emulated result to the order of the fp32 sums (what a Swift
    # implementation of the same semantics may differ by): the same products summed in float64.
    global ACCUMULATE_IN_FLOAT64
    ACCUMULATE_IN_FLOAT64 = True
    model, _ = make_variant(folder, "emulated")
    model.train()
    out = model(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)
    out.loss.backward()
    ACCUMULATE_IN_FLOAT64 = False
    print("emulated, fp32 sums vs float64 sums: logits %.1e, loss %.1e, gradients up to %.1e (biases of keys excluded: their"
          " gradient is zero up to rounding)" % (
              relative_distance(tensors["emulated.logits"], out.logits.detach()),
              relative_distance(tensors["emulated.loss"], out.loss.detach().reshape(1)),
              max(relative_distance(tensors["emulated.grad." + n], p.grad) for n, p in model.named_parameters() if "key.bias" not in n)))


def make_minilm_bf16(path):
    register_emulated_attention()
    reference = load_file(os.path.join(FIXTURES, "minilm_reference.safetensors"))
    inputs = {k: reference[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    tensors = {}
    for variant in VARIANTS:
        model, context = make_variant(path, variant, num_labels=4)
        with torch.no_grad():
            model.classifier.weight.copy_(reference["classifier.weight"])
            model.classifier.bias.copy_(reference["classifier.bias"])
        model.eval()
        with torch.no_grad(), context():
            tensors[variant + ".logits"] = model(**inputs).logits.float()
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(FIXTURES, "minilm_bf16_reference.safetensors"))
    print("minilm logits, relative L2 distance: fp32 fixture vs fp32 now %.1e" % relative_distance(tensors["fp32.logits"], reference["logits"]))
    for a, b in [("autocast", "fp32"), ("autocast_eager", "fp32"), ("emulated", "fp32"), ("emulated", "autocast"), ("autocast_eager", "autocast")]:
        d = (tensors[a + ".logits"] - tensors[b + ".logits"]).abs().max().item()
        print(f"  {a} vs {b}: relative L2 {relative_distance(tensors[a + '.logits'], tensors[b + '.logits']):.2e}, max |difference| {d:.2e}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--minilm", default="models/minilm", help="MiniLM-L6-H384 HF folder")
    parser.add_argument("--only-bf16", action="store_true", help="write only the bf16 fixtures")
    parser.add_argument("--only-pairs", action="store_true", help="write only the text pair fixture")
    parser.add_argument("--only-tasks", action="store_true", help="write only the multi-label and regression fixtures")
    args = parser.parse_args()
    os.makedirs(FIXTURES, exist_ok=True)
    torch.set_num_threads(1)
    if args.only_pairs:
        make_tiny_pairs()
        raise SystemExit(0)
    if args.only_tasks:
        make_tiny_tasks()
        raise SystemExit(0)
    make_tiny_pairs()
    make_tiny_tasks()
    if not args.only_bf16:
        make_tiny()
    make_tiny_bf16()
    if os.path.isdir(args.minilm):
        if not args.only_bf16:
            make_minilm(args.minilm)
        make_minilm_bf16(args.minilm)
    else:
        print("skipping MiniLM fixtures: no folder", args.minilm)
