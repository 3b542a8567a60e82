#!/usr/bin/env python3
"""Reference values for the per-task pieces of bert-dist (issue 19): losses and their gradients
(PyTorch autograd), learning-rate schedules (transformers.get_scheduler) and evaluation metrics
(scikit-learn, scipy) on fixed inputs.

Run by developers (never by CI) from the repository root:
    /work/venv/bin/python tools/make_task_fixtures.py

Writes three small JSON files into Tests/ModelTests/Fixtures/, one case per line (numbers as
Python floats, which print the shortest text that reads back to the same double):

  task_losses.json   {"cases": [...]}, each case
      name, loss ("cross_entropy" | "bce_with_logits" | "mse"), rows B, labels K,
      logits (B*K, float32 values), targets: class ids (B) for cross_entropy, multi-hot (B*K) for
      bce, values (B) for mse; weight (K; CrossEntropyLoss(weight=...)) or pos_weight (K;
      BCEWithLogitsLoss(pos_weight=...)) or null;
      loss: the mean loss as HF's BertForSequenceClassification computes it for that problem type
      (CrossEntropyLoss()(logits.view(-1, K), labels.view(-1)); BCEWithLogitsLoss()(logits, labels);
      MSELoss()(logits.squeeze(), labels.squeeze())), and dlogits (B*K) = d loss / d logits by
      autograd, all in float32.
      Plus "balanced": labels (N), classes K and sklearn's
      compute_class_weight("balanced", classes=range(K), y=labels); and "balanced_positive":
      multi-hot (N*K) and negatives/positives per label.

  task_schedules.json  {"cases": [...]}, each case
      name (the get_scheduler name), base_lr, total (num_training_steps), warmup_steps (what is
      passed to get_scheduler), warmup_ratio (null, or the ratio that warmup_steps was resolved
      from with HF's ceil(total * ratio)), kwargs (scheduler_specific_kwargs), and lr: the learning
      rate of optimizer steps 0 .. total + 2 (scheduler.get_last_lr() before each step; the
      polynomial schedule with warmup == total stops at step total - 1, where HF divides by zero).

  task_metrics.json
      single_label: [{name, labels K, logits (N*K), targets (N), loss (CE mean), accuracy,
          f1_macro, f1_micro (f1_score with sklearn's default labels: those present in truth or
          predictions), mcc (matthews_corrcoef), per_class precision/recall/f1/support
          (precision_recall_fscore_support with labels=range(K), average=None), confusion
          (confusion_matrix with labels=range(K))}], predictions = argmax of the logits;
      multi_label: [{name, labels K, threshold, logits (N*K), targets (N*K), loss (BCE mean),
          f1_micro, f1_macro, subset_accuracy (accuracy_score), per_label precision/recall/f1/
          support}], predictions = sigmoid(logits) > threshold (logits > 0 for 0.5, as HF's
          run_classification);
      regression: [{name, predictions (N), targets (N), mse (mean_squared_error), pearson
          (scipy.stats.pearsonr; null when undefined), spearman (scipy.stats.spearmanr; null
          when undefined)}].
      Zero divisions follow sklearn's default zero_division="warn": the value is 0.
"""
import json
import math
import os
import warnings

import numpy as np
import scipy.stats
import torch
from sklearn.metrics import (accuracy_score, confusion_matrix, f1_score, matthews_corrcoef, mean_squared_error,
                             precision_recall_fscore_support)
from sklearn.utils.class_weight import compute_class_weight
from transformers import get_scheduler

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "Tests", "ModelTests", "Fixtures")


def floats(tensor):
    return [float(x) for x in np.asarray(tensor, dtype=np.float64).reshape(-1)]


def write(name, payload):
    """{"key": [case, ...], ...} with one case per line."""
    path = os.path.join(FIXTURES, name)
    lines = []
    for key, value in payload.items():
        if isinstance(value, list):
            cases = ",\n  ".join(json.dumps(case, allow_nan=False) for case in value)
            lines.append(f"{json.dumps(key)}: [\n  {cases}\n]")
        else:
            lines.append(f"{json.dumps(key)}: {json.dumps(value, allow_nan=False)}")
    with open(path, "w") as f:
        f.write("{\n" + ",\n".join(lines) + "\n}\n")
    print("wrote", path)


# ---------------------------------------------------------------------------------------- losses

def loss_case(name, kind, logits, targets, weight=None, pos_weight=None):
    logits = torch.tensor(logits, dtype=torch.float32, requires_grad=True)
    rows, labels = logits.shape
    if kind == "cross_entropy":
        target = torch.tensor(targets, dtype=torch.long)
        w = None if weight is None else torch.tensor(weight, dtype=torch.float32)
        loss = torch.nn.CrossEntropyLoss(weight=w)(logits.view(-1, labels), target.view(-1))
    elif kind == "bce_with_logits":
        target = torch.tensor(targets, dtype=torch.float32)
        pw = None if pos_weight is None else torch.tensor(pos_weight, dtype=torch.float32)
        loss = torch.nn.BCEWithLogitsLoss(pos_weight=pw)(logits, target)
    else:
        assert labels == 1
        target = torch.tensor(targets, dtype=torch.float32)
        loss = torch.nn.MSELoss()(logits.squeeze(), target.squeeze())
    loss.backward()
    return {
        "name": name, "loss_kind": kind, "rows": rows, "labels": labels,
        "logits": floats(logits.detach()), "targets": floats(target),
        "weight": weight, "pos_weight": pos_weight,
        "loss": float(loss.detach()), "dlogits": floats(logits.grad),
    }


def losses():
    g = torch.Generator().manual_seed(19)
    cases = []
    logits = (torch.randn(6, 4, generator=g) * 2).tolist()
    labels = [0, 3, 1, 3, 2, 3]
    cases.append(loss_case("ce", "cross_entropy", logits, labels))
    cases.append(loss_case("ce_weighted", "cross_entropy", logits, labels, weight=[0.5, 2.0, 1.25, 0.2]))
    # A weight of 0 for a class: its rows add nothing to the sum nor to the denominator.
    cases.append(loss_case("ce_weighted_zero", "cross_entropy", logits, labels, weight=[1.0, 3.0, 0.0, 0.75]))
    big = [[40.0, -35.0, 0.0], [-60.0, 60.0, 1.0], [0.5, 0.25, -0.5]]
    cases.append(loss_case("ce_large_logits_weighted", "cross_entropy", big, [1, 1, 2], weight=[1.0, 0.3, 4.0]))

    multi_logits = (torch.randn(5, 5, generator=g) * 3).tolist()
    multi_logits[0][0] = 45.0     # saturated sigmoid on both sides: the loss must stay finite
    multi_logits[1][1] = -45.0
    multi_logits[2][2] = 0.0
    hot = [[1, 0, 0, 1, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 0, 0, 1], [0, 0, 1, 0, 1]]
    hot = [[float(v) for v in row] for row in hot]
    cases.append(loss_case("bce", "bce_with_logits", multi_logits, hot))
    cases.append(loss_case("bce_pos_weight", "bce_with_logits", multi_logits, hot, pos_weight=[2.0, 0.5, 4.0, 1.0, 3.0]))

    values = (torch.randn(7, 1, generator=g) * 1.5 + 2).tolist()
    scores = [3.8, 0.0, 2.5, 5.0, 1.2, 2.5, 4.4]
    cases.append(loss_case("mse", "mse", values, scores))

    # sklearn's "balanced" class weights: n_samples / (n_classes * bincount(y)).
    y = [0, 0, 0, 0, 1, 2, 2, 3, 0, 2, 1, 0]
    balanced = compute_class_weight("balanced", classes=np.arange(4), y=np.array(y))
    # Multi-label positive weights: negatives / positives of each label (torch's pos_weight advice).
    hot_array = np.array(hot + [[1, 0, 1, 1, 0], [1, 0, 0, 1, 1]], dtype=np.float64)
    positives = hot_array.sum(axis=0)
    positive_weights = (len(hot_array) - positives) / positives
    write("task_losses.json", {
        "cases": cases,
        "balanced": {"labels": y, "classes": 4, "weights": floats(balanced)},
        "balanced_positive": {"rows": len(hot_array), "labels": 5, "targets": floats(hot_array),
                              "weights": floats(positive_weights)},
    })


# ------------------------------------------------------------------------------------- schedules

def schedule_lrs(name, base_lr, total, warmup, kwargs):
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=base_lr)
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total,
                              scheduler_specific_kwargs=kwargs or None)
    rates = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(total + 3):
            rates.append(float(scheduler.get_last_lr()[0]))
            optimizer.step()
            try:
                scheduler.step()
            except ZeroDivisionError:   # polynomial with warmup == total at step total: HF has no value
                break
    return rates


def schedules():
    cases = []
    names = ["linear", "cosine", "constant", "constant_with_warmup", "polynomial"]
    for name in names:
        for base_lr in [2e-5, 5e-4]:
            for total in [1, 7, 20, 100]:
                # Warmup given in steps, and as a ratio resolved as HF's Trainer does.
                warmups = [(0, None), (3, None), (total, None)]
                for ratio in [0.1, 0.25]:
                    warmups.append((math.ceil(total * ratio), ratio))
                for warmup, ratio in warmups:
                    cases.append({"name": name, "base_lr": base_lr, "total": total, "warmup_steps": warmup,
                                  "warmup_ratio": ratio, "kwargs": {},
                                  "lr": schedule_lrs(name, base_lr, total, warmup, {})})
    # Non-default shapes: more cosine cycles, a steeper polynomial to another end rate.
    for name, kwargs in [("cosine", {"num_cycles": 1.5}), ("cosine", {"num_cycles": 0.25}),
                         ("polynomial", {"lr_end": 1e-6, "power": 2.0}), ("polynomial", {"power": 0.5})]:
        for total, warmup in [(20, 0), (20, 4), (100, 10)]:
            cases.append({"name": name, "base_lr": 5e-4, "total": total, "warmup_steps": warmup, "warmup_ratio": None,
                          "kwargs": kwargs, "lr": schedule_lrs(name, 5e-4, total, warmup, kwargs)})
    write("task_schedules.json", {"cases": cases})


# --------------------------------------------------------------------------------------- metrics

def number_or_none(x):
    x = float(x)
    return None if math.isnan(x) else x


def single_label_case(name, logits, targets, labels):
    logits = np.asarray(logits, dtype=np.float32)
    targets = np.asarray(targets)
    predictions = logits.argmax(axis=1)
    assert all(len(set(row)) == len(row) for row in logits.tolist()), "ties in a row"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        precision, recall, f1, support = precision_recall_fscore_support(
            targets, predictions, labels=list(range(labels)), average=None)
        case = {
            "name": name, "labels": labels, "logits": floats(logits), "targets": [int(t) for t in targets],
            "loss": float(torch.nn.CrossEntropyLoss()(torch.tensor(logits), torch.tensor(targets))),
            "accuracy": float(accuracy_score(targets, predictions)),
            "f1_macro": float(f1_score(targets, predictions, average="macro")),
            "f1_micro": float(f1_score(targets, predictions, average="micro")),
            "mcc": float(matthews_corrcoef(targets, predictions)),
            "per_class": {"precision": floats(precision), "recall": floats(recall), "f1": floats(f1),
                          "support": [int(s) for s in support]},
            "confusion": confusion_matrix(targets, predictions, labels=list(range(labels))).tolist(),
        }
    return case


def logits_predicting(predictions, labels, rng):
    """Random logits whose arg-max is each row's prediction."""
    logits = rng.normal(0, 1, size=(len(predictions), labels)).astype(np.float32)
    for row, p in enumerate(predictions):
        logits[row, p] = logits[row].max() + np.float32(rng.uniform(0.1, 2.0))
    return logits


def multi_label_case(name, logits, targets, threshold):
    logits = np.asarray(logits, dtype=np.float32)
    targets = np.asarray(targets, dtype=np.int64)
    if threshold == 0.5:
        predictions = (logits > 0).astype(np.int64)
    else:
        predictions = (1 / (1 + np.exp(-logits.astype(np.float64))) > threshold).astype(np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        precision, recall, f1, support = precision_recall_fscore_support(targets, predictions, average=None)
        case = {
            "name": name, "labels": logits.shape[1], "threshold": threshold, "logits": floats(logits),
            "targets": [int(t) for t in targets.reshape(-1)],
            "loss": float(torch.nn.BCEWithLogitsLoss()(torch.tensor(logits), torch.tensor(targets, dtype=torch.float32))),
            "f1_micro": float(f1_score(targets, predictions, average="micro")),
            "f1_macro": float(f1_score(targets, predictions, average="macro")),
            "subset_accuracy": float(accuracy_score(targets, predictions)),
            "per_label": {"precision": floats(precision), "recall": floats(recall), "f1": floats(f1),
                          "support": [int(s) for s in support]},
        }
    return case


def regression_case(name, predictions, targets):
    predictions = np.asarray(predictions, dtype=np.float32)
    targets = np.asarray(targets, dtype=np.float32)
    p64, t64 = predictions.astype(np.float64), targets.astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pearson = scipy.stats.pearsonr(p64, t64)[0]
        spearman = scipy.stats.spearmanr(p64, t64)[0]
    return {
        "name": name, "predictions": floats(predictions), "targets": floats(targets),
        "loss": float(torch.nn.MSELoss()(torch.tensor(predictions), torch.tensor(targets))),
        "mse": float(mean_squared_error(t64, p64)),
        "pearson": number_or_none(pearson), "spearman": number_or_none(spearman),
    }


def metrics():
    rng = np.random.default_rng(1919)
    single = []
    # Every class present, predictions right about 60% of the time.
    targets = rng.integers(0, 4, size=40)
    predictions = np.where(rng.uniform(size=40) < 0.6, targets, rng.integers(0, 4, size=40))
    single.append(single_label_case("four_classes", logits_predicting(predictions, 4, rng), targets, 4))
    # Class 2 is never predicted (its precision divides by zero).
    targets = np.array([0, 1, 2, 2, 1, 0, 2, 1, 0, 1, 2, 0])
    predictions = np.array([0, 1, 0, 1, 1, 0, 1, 1, 0, 0, 0, 0])
    single.append(single_label_case("never_predicted", logits_predicting(predictions, 3, rng), targets, 3))
    # Class 4 appears neither in truth nor in predictions; class 3 only in predictions.
    targets = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 2])
    predictions = np.array([0, 1, 2, 3, 1, 2, 0, 3, 2, 1])
    single.append(single_label_case("absent_classes", logits_predicting(predictions, 5, rng), targets, 5))
    # One class predicted for every row: MCC's denominator is 0 (sklearn returns 0).
    targets = np.array([0, 1, 1, 0, 1, 1, 0])
    predictions = np.zeros(7, dtype=np.int64)
    single.append(single_label_case("constant_prediction", logits_predicting(predictions, 2, rng), targets, 2))
    # Perfect binary.
    targets = np.array([1, 0, 1, 1, 0, 0, 1, 0])
    single.append(single_label_case("perfect", logits_predicting(targets, 2, rng), targets, 2))

    multi = []
    targets = (rng.uniform(size=(30, 5)) < 0.35).astype(np.int64)
    targets[3] = 0                      # a row with no positive label
    logits = (rng.normal(0, 1.5, size=(30, 5)) + (targets * 2 - 1) * 0.8).astype(np.float32)
    logits[3] = -1                      # ... predicted as none: an exact match
    logits[5, 1] = 0.0                  # exactly on the 0.5 threshold: negative (sigmoid > 0.5 is strict)
    multi.append(multi_label_case("five_labels", logits, targets, 0.5))
    # Label 4 never true and never predicted (F1 0/0), label 2 never predicted, label 0 always true.
    targets = np.array([[1, 0, 1, 0, 0], [1, 1, 0, 0, 0], [1, 0, 0, 1, 0], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0],
                        [1, 0, 0, 1, 0]])
    logits = np.array([[2, -1, -3, 0.5, -2], [1, 1.5, -1, -1, -4], [-0.5, -1, -2, 2, -1], [3, 0.2, -0.1, -1, -3],
                       [0.7, -2, -2, -2, -2], [1.1, 0.3, -5, 0.9, -1]], dtype=np.float32)
    multi.append(multi_label_case("zero_divisions", logits, targets, 0.5))
    targets = (rng.uniform(size=(16, 4)) < 0.5).astype(np.int64)
    logits = (rng.normal(0, 2, size=(16, 4))).astype(np.float32)
    multi.append(multi_label_case("threshold_0_3", logits, targets, 0.3))

    regression = []
    targets = np.round(rng.uniform(0, 5, size=25), 1)           # STS-B-like scores with ties
    predictions = np.round(targets + rng.normal(0, 0.8, size=25), 1)
    predictions[4] = predictions[7] = predictions[9]            # ties among predictions too
    regression.append(regression_case("sts_like", predictions, targets))
    regression.append(regression_case("small", [1.0, 2.0, 2.0, 4.5], [0.5, 2.5, 2.5, 3.0]))
    regression.append(regression_case("constant_prediction", [2.0, 2.0, 2.0, 2.0, 2.0], [1.0, 4.0, 2.0, 3.0, 0.5]))
    regression.append(regression_case("anticorrelated", [5.0, 4.0, 3.0, 1.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]))
    write("task_metrics.json", {"single_label": single, "multi_label": multi, "regression": regression})


if __name__ == "__main__":
    losses()
    schedules()
    metrics()
