"""Schemas: phases, losses, pseudo-labels and the sigmoid head's start."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from mile_engine.models import build_model
from mile_engine.schemas import (
    ground_truth_loss,
    multi_label_bce,
    phases_of,
    pseudo_labels,
)


def test_phases_give_equal_compute() -> None:
    mile = phases_of("MILe", 7, 3)
    assert [(p.name, p.steps) for p in mile] == [("interactive", 7), ("imitation", 3)]
    for schema in ("sigmoid", "softmax"):
        assert [(p.name, p.steps) for p in phases_of(schema, 7, 3)] == [("interactive", 10)]


def test_pseudo_labels_threshold_probabilities_not_logits() -> None:
    logits = torch.tensor([[-0.5, 0.2, -3.0, 2.0]])
    # sigmoid: 0.378, 0.550, 0.047, 0.881; a raw-logit threshold at 0.25 would drop -0.5.
    assert pseudo_labels(logits, 0.25).tolist() == [[True, True, False, True]]
    assert pseudo_labels(logits, 0.6).tolist() == [[False, False, False, True]]
    with_gt = pseudo_labels(logits, 0.6, labels=torch.tensor([2]))
    assert with_gt.tolist() == [[False, False, True, True]]


def test_losses() -> None:
    logits = torch.randn(5, 4)
    labels = torch.tensor([0, 1, 2, 3, 0])
    bce = ground_truth_loss("sigmoid", logits, labels)
    expected = F.binary_cross_entropy_with_logits(
        logits, F.one_hot(labels, 4).float(), reduction="none"
    ).sum(1).mean()
    assert bce == pytest.approx(expected.item())
    assert ground_truth_loss("MILe", logits, labels) == pytest.approx(expected.item())
    assert ground_truth_loss("softmax", logits, labels) == pytest.approx(
        F.cross_entropy(logits, labels).item()
    )
    targets = torch.rand(5, 4) > 0.5
    assert multi_label_bce(logits, targets) == pytest.approx(
        F.binary_cross_entropy_with_logits(logits, targets.float(), reduction="sum").item() / 5
    )


def test_sigmoid_head_bias_starts_at_minus_log_c() -> None:
    model = build_model("resnet18-10", 10, sigmoid_head=True)
    assert isinstance(model.fc, nn.Linear)
    assert torch.allclose(model.fc.bias, torch.full((10,), -math.log(10)))
    plain = build_model("resnet18-10", 10, sigmoid_head=False)
    assert isinstance(plain.fc, nn.Linear)
    assert not torch.allclose(plain.fc.bias, torch.full((10,), -math.log(10)))


# ------------------------------------------------------------------ pseudo-labels at the threshold
# Pseudo-labels at the edges DESIGN.md fixes: `y = 1[sigmoid(teacher(x)) > rho]` is a
# strict inequality, and the optional ground-truth OR sets each image's own label only.
#
# Written against plausible slips that the training reference cannot see (its teacher
# logits never sit exactly on the threshold): `>=` for `>`, and an OR that broadcasts the
# batch's labels to every row.
def test_a_probability_equal_to_rho_is_not_a_pseudo_label() -> None:
    # sigmoid(0) is exactly 0.5 in floating point.
    assert not pseudo_labels(torch.zeros(3, 4), 0.5).any()
    # Thresholds that some teacher probabilities hit exactly (float32 values, as the
    # probabilities are): those entries stay off, the larger ones are on.
    logits = torch.tensor([[-2.0, -0.75, 0.3, 1.5, 2.25]])
    probs = torch.sigmoid(logits)
    for j in range(logits.shape[1]):
        rho = float(probs[0, j])
        assert pseudo_labels(logits, rho).tolist() == [[k > j for k in range(5)]]
        with_label = pseudo_labels(logits, rho, torch.tensor([j]))
        assert with_label.tolist() == [[k >= j for k in range(5)]]


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 6),
    classes=st.integers(2, 8),
    rho=st.sampled_from([0.05, 0.25, 0.5, 0.75]),
    seed=st.integers(0, 2**16),
)
def test_gt_or_adds_each_images_own_label_only(
    rows: int, classes: int, rho: float, seed: int
) -> None:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, classes, generator=gen) * 3
    labels = torch.randint(0, classes, (rows,), generator=gen)
    got = pseudo_labels(logits, rho, labels)
    # Plain per-entry rule: probability over rho, or the entry is this image's label.
    probs = torch.sigmoid(logits).tolist()
    expected = [
        [p > rho or c == int(labels[i]) for c, p in enumerate(row)]
        for i, row in enumerate(probs)
    ]
    assert got.tolist() == expected
    assert pseudo_labels(logits, rho).tolist() == [[p > rho for p in row] for row in probs]
