"""Metrics equal a brute-force per-image reference."""

from __future__ import annotations

import math

import pytest
import torch

from mile_engine.metrics import EvalAccumulator, evaluate_logits


def brute_force(logits, labels, real, rho, sigmoid):  # type: ignore[no-untyped-def]
    n, c = logits.shape
    probs = torch.sigmoid(logits)
    f1 = prec = rec = cov = 0.0
    top1 = known = nreal = hit = 0
    ref_all = ref_label = 0.0
    ref_label_n = 0
    for i in range(n):
        top = int(logits[i].argmax())
        pred = {top} if not sigmoid else {top} | {j for j in range(c) if probs[i, j] > rho}
        r = set(real[i].nonzero().flatten().tolist())
        cov += len(pred)
        if labels[i] >= 0:
            known += 1
            top1 += top == int(labels[i])
        if r:
            nreal += 1
            inter = len(pred & r)
            f1 += 2 * inter / (len(pred) + len(r))
            prec += inter / len(pred)
            rec += inter / len(r)
            hit += top in r
            ref_all += 2 * len(r) / (c + len(r))
            if labels[i] >= 0:
                ref_label_n += 1
                ref_label += 2 * (int(labels[i]) in r) / (1 + len(r))
    return {
        "top1": top1 / known,
        "real_accuracy": hit / nreal,
        "real_f1": f1 / nreal,
        "real_precision": prec / nreal,
        "real_recall": rec / nreal,
        "coverage": cov / n,
        "ref_f1_all": ref_all / nreal,
        "ref_f1_label": ref_label / ref_label_n,
    }


@pytest.mark.parametrize("sigmoid", [True, False])
@pytest.mark.parametrize("rho", [0.1, 0.5, 0.8])
def test_metrics_match_per_image_reference(sigmoid: bool, rho: float) -> None:
    gen = torch.Generator().manual_seed(3)
    n, c = 300, 12
    logits = torch.randn(n, c, generator=gen) * 2
    labels = torch.randint(c, (n,), generator=gen)
    labels[::17] = -1  # unknown single labels
    real = torch.rand(n, c, generator=gen) < 0.2
    real[::5] = False  # empty ReaL sets
    expected = brute_force(logits, labels, real, rho, sigmoid)
    got = evaluate_logits(logits, labels, real, rho, sigmoid)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key


def test_batched_updates_and_sweep_equal_single_pass() -> None:
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(200, 10, generator=gen)
    labels = torch.randint(10, (200,), generator=gen)
    real = torch.rand(200, 10, generator=gen) < 0.3
    acc = EvalAccumulator(10, [0.2, 0.6], True)
    for i in range(0, 200, 37):
        acc.update(logits[i : i + 37], labels[i : i + 37], real[i : i + 37])
    low, high = acc.compute()
    assert low == pytest.approx(evaluate_logits(logits, labels, real, 0.2, True))
    assert high == pytest.approx(evaluate_logits(logits, labels, real, 0.6, True))
    assert low["coverage"] >= high["coverage"]


def test_no_real_sets_gives_nan_not_division_error() -> None:
    m = evaluate_logits(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]),
                        torch.zeros(4, 3, dtype=torch.bool), 0.5, True)
    assert math.isnan(m["real_f1"]) and m["top1"] >= 0


def test_reference_f1s_of_a_hand_built_set() -> None:
    real = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 0]], dtype=torch.bool)
    labels = torch.tensor([0, 3])
    m = evaluate_logits(torch.zeros(2, 4), labels, real, 0.5, False)
    # every class: 2*2/(4+2) and 2*1/(4+1); single label: 2/(1+2) and 0.
    assert m["ref_f1_all"] == pytest.approx((4 / 6 + 2 / 5) / 2)
    assert m["ref_f1_label"] == pytest.approx((2 / 3 + 0) / 2)
