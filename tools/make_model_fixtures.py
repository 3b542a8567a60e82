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

Training recipe of the optimizer fixtures (what the Swift test must replay): the same batch each
step; loss = mean cross-entropy; clip the global gradient norm to MAX_GRAD_NORM; HF Trainer's
parameter groups (no weight decay for biases and LayerNorm weights); linear warmup + linear decay
schedule (transformers.get_linear_schedule_with_warmup) with WARMUP_STEPS of TOTAL_STEPS.
"""
import argparse
import json
import os

import torch
from safetensors.torch import save_file
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--minilm", default="models/minilm", help="MiniLM-L6-H384 HF folder")
    args = parser.parse_args()
    os.makedirs(FIXTURES, exist_ok=True)
    torch.set_num_threads(1)
    make_tiny()
    if os.path.isdir(args.minilm):
        make_minilm(args.minilm)
    else:
        print("skipping MiniLM fixture: no folder", args.minilm)
