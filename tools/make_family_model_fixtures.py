#!/usr/bin/env python3
"""Reference fixtures for the encoder families of the Swift model (issue 18), computed by PyTorch +
Hugging Face transformers from tiny random models (no hub access needed).

Run by developers (never by CI) from the repository root:
    /work/venv/bin/python tools/make_family_model_fixtures.py

For each family F in distilbert, electra, roberta, xlm-roberta, camembert it writes to
Tests/ModelTests/Fixtures/:
  tiny_F/                      a tiny random <Family>ForSequenceClassification, as save_pretrained
                               writes it (config.json, model.safetensors)
  tiny_F_reference.safetensors
      input_ids, attention_mask, token_type_ids (int64, a padded batch), labels (int64)
      logits, loss                 forward, dropout off (eager attention)
      grad.<name>                  d(mean loss)/d(parameter) for every parameter
      adamw.loss, adamw.<name>     losses of 3 AdamW steps and the parameters after them
      schedule.lr                  the learning rate used at each step
    and in the header's metadata:
      state_dict_keys              the sorted keys of model.state_dict() (what HF saves and loads)
      architecture                 the class name, e.g. "DistilBertForSequenceClassification"
      dropout_sites                one forward in train mode of the same architecture with a
                                   distinct probability per config key: the probability of every
                                   dropout HF applies, in the order it applies them (nn.Dropout
                                   modules and the attention's dropout), as a JSON list
  tiny_F_bf16_reference.safetensors (distilbert, electra and roberta; xlm-roberta and camembert are
  roberta's architecture under other names): for each of
      autocast.    torch.autocast("cpu", dtype=torch.bfloat16)
      emulated.    bert-dist's --bf16 semantics written in PyTorch (tools/make_model_fixtures.py):
                   every matrix product (every Linear, the ELECTRA projection and the head
                   included, and both attention products, forward and backward) rounds both inputs
                   to bf16 and accumulates in fp32
  logits, loss, grad.<name>, adamw.loss, adamw.<name>. The fp32 values are those of
  tiny_F_reference.safetensors.

What each batch exercises:
  distilbert   text pairs whose token_type_ids (as a BERT tokenizer gives them) are in the file but
               not passed to HF: DistilBERT has no token types, so the Swift model must ignore them.
               Also `sinusoidal_position_embeddings`: the table transformers initialises when
               `sinusoidal_pos_embds` is true (what the Swift model fills in when the file lacks it).
  electra      embedding_size 20 != hidden_size 32 (embeddings_project), text pairs with token types.
  roberta-like sequences of different lengths, one exactly as long as the positions allow
               (max_position_embeddings - pad_token_id - 1), pairs as <s> A </s></s> B </s>, and
               one sequence with the pad id inside (HF gives it position pad_token_id and does not
               count it; padding_idx keeps the gradients of both pad rows at 0). camembert uses
               pad_token_id 3, so the offset pad_token_id + 1 is not the usual 2.

The models are initialised with initializer_range 0.2 (transformers' default is 0.02): with 0.02
the tiny encoders' outputs hardly depend on the input (every row's logits agree to 1e-4), which
would let a wrong position or token type pass; with 0.2 the rows' logits differ by ~1.

Training recipe of the optimizer fixtures: that of tools/make_model_fixtures.py (lr 1e-3,
eps 1e-6, weight decay 0.1, clip 0.5, linear schedule, warmup 1 of 4 steps, the same batch each
step), with HF Trainer's parameter groups (Trainer.get_decay_parameter_names: no decay for
biases and nn.LayerNorm parameters, whatever their names, e.g. DistilBERT's sa_layer_norm).
"""
import contextlib
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import (AutoModelForSequenceClassification, CamembertConfig, DistilBertConfig, ElectraConfig,
                          RobertaConfig, Trainer, XLMRobertaConfig, get_linear_schedule_with_warmup)

sys.path.insert(0, os.path.dirname(__file__))
import make_model_fixtures as base  # noqa: E402  (the recipe constants and the bf16 emulation)

FIXTURES = base.FIXTURES
LABELS = 3


def tiny_config(family, **dropout):
    # Odd sizes as tiny_bert (intermediate 37, vocab 99); no dropout unless asked.
    common = dict(vocab_size=99, num_labels=LABELS, initializer_range=0.2)
    hidden = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    hidden.update(dropout)
    if family == "distilbert":
        d = dict(dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0)
        d.update(dropout)
        return DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=40,
                                pad_token_id=0, **d, **common)
    if family == "electra":
        return ElectraConfig(embedding_size=20, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=37, max_position_embeddings=40, type_vocab_size=2, pad_token_id=0,
                             layer_norm_eps=1e-12, **hidden, **common)
    config_class, pad, bos, eos = {"roberta": (RobertaConfig, 1, 0, 2), "xlm-roberta": (XLMRobertaConfig, 1, 0, 2),
                                   "camembert": (CamembertConfig, 3, 5, 6)}[family]
    # type_vocab_size 1 and eps 1e-5 as the real roberta-base / xlm-roberta-base / camembert-base.
    return config_class(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                        max_position_embeddings=24, type_vocab_size=1, layer_norm_eps=1e-5,
                        pad_token_id=pad, bos_token_id=bos, eos_token_id=eos, **hidden, **common)


def padded(rows, types=None):
    longest = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), longest, dtype=torch.int64)
    mask = torch.zeros_like(ids)
    type_ids = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1
        if types is not None:
            type_ids[i, :len(row)] = torch.tensor(types[i])
    return ids, mask, type_ids


def words(g, n, avoid):
    """n random ids of the vocabulary, none of them special."""
    allowed = [v for v in range(4, 99) if v not in avoid]
    return [allowed[i] for i in torch.randint(0, len(allowed), (n,), generator=g).tolist()]


def tiny_batch(family, config):
    """(input_ids, attention_mask, token_type_ids, labels) padded on the right with the pad id."""
    g = torch.Generator().manual_seed(4)
    if family in ("distilbert", "electra"):
        cls, sep = 2, 3
        sides = [(5, 0), (4, 7), (12, 0), (1, 1)]   # (A, B) lengths; B = 0: a single text
        rows, types = [], []
        for a, b in sides:
            first = [cls] + words(g, a, {cls, sep}) + [sep]
            second = words(g, b, {cls, sep}) + [sep] if b else []
            rows.append(first + second)
            types.append([0] * len(first) + [1] * len(second))
        ids, mask, type_ids = padded(rows, types)
    else:
        pad, bos, eos = config.pad_token_id, config.bos_token_id, config.eos_token_id
        longest = config.max_position_embeddings - pad - 1
        avoid = {pad, bos, eos}
        rows = [
            [bos] + words(g, longest - 2, avoid) + [eos],                           # as long as positions allow
            [bos] + words(g, 3, avoid) + [eos, eos] + words(g, 2, avoid) + [eos],   # a pair
            [bos] + words(g, 2, avoid) + [pad] + words(g, 3, avoid) + [eos],        # the pad id inside
            [bos, eos],
        ]
        assert len(rows[0]) == longest
        ids, mask, type_ids = padded(rows)
        ids[mask == 0] = pad
    labels = torch.tensor([2, 0, 1, 2], dtype=torch.int64)
    return ids, mask, type_ids, labels


def model_inputs(family, batch):
    ids, mask, types, labels = batch
    inputs = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    if family == "electra":
        inputs["token_type_ids"] = types
    # DistilBERT has no token types; RoBERTa's tokenizers give none (all 0, the default).
    return inputs


def parameter_groups(model):
    decay = set(Trainer.get_decay_parameter_names(None, model))
    return [{"params": [p for n, p in model.named_parameters() if n in decay], "weight_decay": base.WEIGHT_DECAY},
            {"params": [p for n, p in model.named_parameters() if n not in decay], "weight_decay": 0.0}]


def train_steps(model, inputs, context=contextlib.nullcontext):
    model.train()  # dropout probabilities are 0
    optimizer = torch.optim.AdamW(parameter_groups(model), lr=base.LR, betas=base.BETAS, eps=base.EPS)
    scheduler = get_linear_schedule_with_warmup(optimizer, base.WARMUP_STEPS, base.TOTAL_STEPS)
    losses, rates = [], []
    for _ in range(base.STEPS):
        optimizer.zero_grad()
        with context():
            out = model(**inputs)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), base.MAX_GRAD_NORM)
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
        losses.append(out.loss.item())
    return torch.tensor(losses), torch.tensor(rates)


SITES_SINK = []


def eager(module, query, key, value, attention_mask, scaling, dropout):
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    probabilities = torch.nn.functional.softmax(scores, dim=-1)
    probabilities = torch.nn.functional.dropout(probabilities, p=dropout, training=module.training)
    return torch.matmul(probabilities, value).transpose(1, 2).contiguous(), probabilities


def recorded_dropout_sites(family):
    SITES_SINK.clear()
    if family == "distilbert":
        config = tiny_config(family, dropout=0.11, attention_dropout=0.13, seq_classif_dropout=0.17)
    else:
        config = tiny_config(family, hidden_dropout_prob=0.11, attention_probs_dropout_prob=0.13, classifier_dropout=0.17)
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation="bert_dist_record")
    model.train()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Dropout):
            module.register_forward_pre_hook(lambda m, args, name=name: SITES_SINK.append(["module " + name, m.p]))
    model(**model_inputs(family, tiny_batch(family, config)))
    return list(SITES_SINK)


def randomize_norms_and_biases(model):
    # Random LayerNorm parameters and biases, so their gradients are tested on non-trivial values.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name.lower():
                p.add_(torch.randn_like(p) * 0.1)


def make_family(family):
    torch.manual_seed(0)
    config = tiny_config(family)
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")
    randomize_norms_and_biases(model)
    folder = os.path.join(FIXTURES, "tiny_" + family)
    model.save_pretrained(folder, safe_serialization=True)
    initial = {k: v.clone() for k, v in model.state_dict().items()}

    batch = tiny_batch(family, config)
    inputs = model_inputs(family, batch)
    model.train()  # dropout probabilities are 0
    out = model(**inputs)
    out.loss.backward()
    ids, mask, types, labels = batch
    tensors = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "labels": labels,
               "logits": out.logits.detach(), "loss": out.loss.detach().reshape(1)}
    for name, p in model.named_parameters():
        tensors["grad." + name] = p.grad.detach().clone()
    trained = AutoModelForSequenceClassification.from_pretrained(folder, attn_implementation="eager")
    trained.load_state_dict(initial)
    losses, rates = train_steps(trained, inputs)
    tensors["adamw.loss"] = losses
    tensors["schedule.lr"] = rates
    for name, p in trained.named_parameters():
        tensors["adamw." + name] = p.detach().clone()
    if family == "distilbert":
        sinusoidal = DistilBertConfig(**{**config.to_dict(), "sinusoidal_pos_embds": True})
        table = AutoModelForSequenceClassification.from_config(sinusoidal).distilbert.embeddings.position_embeddings.weight
        tensors["sinusoidal_position_embeddings"] = table.detach().clone()
    metadata = {"state_dict_keys": json.dumps(sorted(model.state_dict().keys())),
                "architecture": type(model).__name__,
                "dropout_sites": json.dumps(recorded_dropout_sites(family))}
    path = os.path.join(FIXTURES, "tiny_%s_reference.safetensors" % family)
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata=metadata)
    os.chmod(path, 0o644)
    print("%s: %s, loss %.6f, %d parameters, logits up to %.3g" % (
        family, type(model).__name__, out.loss.item(), sum(p.numel() for p in model.parameters()),
        out.logits.abs().max().item()))
    return folder, inputs, tensors


def make_variant(folder, variant):
    attention = {"emulated": "bert_dist_bf16"}.get(variant, "sdpa")
    model = AutoModelForSequenceClassification.from_pretrained(folder, attn_implementation=attention)
    if variant == "emulated":
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.forward = (lambda m: (lambda x: base.emulated_linear(m, x)))(module)
    context = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if variant == "autocast" else contextlib.nullcontext
    return model, context


def make_family_bf16(family, folder, inputs, fp32):
    tensors = {}
    for variant in ("autocast", "emulated"):
        model, context = make_variant(folder, variant)
        model.train()
        with context():
            out = model(**inputs)
        out.loss.backward()
        tensors[variant + ".logits"] = out.logits.detach().float()
        tensors[variant + ".loss"] = out.loss.detach().float().reshape(1)
        for name, p in model.named_parameters():
            tensors[variant + ".grad." + name] = p.grad.detach().clone()
        model, context = make_variant(folder, variant)
        losses, _ = train_steps(model, inputs, context)
        tensors[variant + ".adamw.loss"] = losses
        for name, p in model.named_parameters():
            tensors[variant + ".adamw." + name] = p.detach().clone()
    path = os.path.join(FIXTURES, "tiny_%s_bf16_reference.safetensors" % family)
    save_file({k: v.contiguous() for k, v in tensors.items()}, path)
    os.chmod(path, 0o644)
    distance = base.relative_distance
    print("  bf16, relative L2 distance: logits autocast-fp32 %.2e emulated-fp32 %.2e emulated-autocast %.2e" % (
        distance(tensors["autocast.logits"], fp32["logits"]), distance(tensors["emulated.logits"], fp32["logits"]),
        distance(tensors["emulated.logits"], tensors["autocast.logits"])))


def register_recording():
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    def recording_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        SITES_SINK.append(["attention probabilities", dropout])
        return eager(module, query, key, value, attention_mask, scaling, dropout)

    AttentionInterface.register("bert_dist_record", recording_attention)
    AttentionMaskInterface.register("bert_dist_record", eager_mask)


if __name__ == "__main__":
    torch.set_num_threads(1)
    os.makedirs(FIXTURES, exist_ok=True)
    base.register_emulated_attention()
    register_recording()
    for family in ("distilbert", "electra", "roberta", "xlm-roberta", "camembert"):
        folder, inputs, tensors = make_family(family)
        if family in ("distilbert", "electra", "roberta"):
            make_family_bf16(family, folder, inputs, tensors)
