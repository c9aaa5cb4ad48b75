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
    entropy_maximisation_loss,
    ground_truth_loss,
    large_loss,
    multi_label_bce,
    phases_of,
    pseudo_labels,
    rejected_count,
    rejection_rate,
    uses_sigmoid,
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


# ---------------------------------------------------------------- EM and LL
def test_the_new_schemas_train_one_ground_truth_phase_with_sigmoids() -> None:
    for schema in ("EM", "LL-R", "LL-Ct"):
        assert [(p.name, p.steps) for p in phases_of(schema, 7, 3)] == [("interactive", 10)]
        assert uses_sigmoid(schema)


small_logits = st.integers(2, 6).flatmap(lambda c: st.tuples(
    st.lists(st.lists(st.floats(-8, 8), min_size=c, max_size=c), min_size=1, max_size=6),
    st.lists(st.integers(0, c - 1), min_size=6, max_size=6)))


@settings(max_examples=60, deadline=None)
@given(case=small_logits, alpha=st.floats(0, 1))
def test_em_loss_is_its_formula(case: tuple[list[list[float]], list[int]],
                                alpha: float) -> None:
    rows, labels = case
    logits = torch.tensor(rows, dtype=torch.float64)
    y = torch.tensor(labels[: len(rows)])
    total = 0.0
    for i, row in enumerate(rows):
        for c, z in enumerate(row):
            p = 1 / (1 + math.exp(-z))
            if c == int(y[i]):
                total += -math.log(p)
            else:
                total += alpha * (p * math.log(p) + (1 - p) * math.log(1 - p))
    expected = total / len(rows)
    assert float(entropy_maximisation_loss(logits, y, alpha)) == pytest.approx(
        expected, rel=1e-5, abs=1e-5)
    assert float(ground_truth_loss("EM", logits, y, alpha)) == pytest.approx(
        expected, rel=1e-5, abs=1e-5)


def test_em_rewards_uncertainty_on_the_unobserved_labels() -> None:
    labels = torch.tensor([0])
    certain = torch.tensor([[5.0, -6.0, 6.0]])
    unsure = torch.tensor([[5.0, 0.0, 0.0]])  # p = 0.5: the largest entropy
    assert entropy_maximisation_loss(unsure, labels, 0.2) < entropy_maximisation_loss(
        certain, labels, 0.2)
    grad = torch.tensor([[5.0, 1.0, -1.0]], requires_grad=True)
    entropy_maximisation_loss(grad, labels, 0.2).backward()
    assert grad.grad is not None
    assert grad.grad[0, 1] > 0 and grad.grad[0, 2] < 0  # descent pulls both towards 0


def test_rejected_count_and_rate() -> None:
    assert rejection_rate(0.1, 0) == 0.0
    assert rejection_rate(0.1, 3) == pytest.approx(0.3)
    assert rejection_rate(0.3, 5) == 1.0
    assert rejected_count(10, 10, 0.1 * 3) == 30  # 0.30000000000000004 is not 31
    assert rejected_count(8, 10, 0.05) == 4
    assert rejected_count(8, 10, 0.051) == 5
    assert rejected_count(8, 10, 1.0) == 72  # every unobserved label, never more
    assert rejected_count(8, 10, 0.0) == 0


@settings(max_examples=80, deadline=None)
@given(case=small_logits, rate=st.floats(0, 1), correct=st.booleans())
def test_large_loss_takes_the_k_largest_unobserved_losses_of_the_batch(
        case: tuple[list[list[float]], list[int]], rate: float, correct: bool) -> None:
    rows, labels = case
    # float32, as the loss computes: ranks compare the very values it ranked.
    logits = torch.tensor(rows, dtype=torch.float32)
    y = torch.tensor(labels[: len(rows)])
    batch, classes = logits.shape
    observed = F.one_hot(y, classes).bool()
    loss, taken = large_loss(logits, y, rate, correct)
    per_entry = F.binary_cross_entropy_with_logits(logits, observed.float(), reduction="none")
    k = rejected_count(batch, classes, rate)
    assert not (taken & observed).any()
    assert int(taken.sum()) >= k
    if k:
        kept = per_entry[~taken & ~observed]
        if len(kept):
            assert per_entry[taken].min() > kept.max()  # taken: the largest (ties in)
        assert int(taken.sum()) == int((per_entry[~observed] >= per_entry[taken].min()).sum())
    else:
        assert not taken.any()
    towards_one = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits),
                                                     reduction="none")
    replaced = towards_one if correct else torch.zeros_like(logits)
    expected = torch.where(taken, replaced, per_entry).sum() / batch
    assert float(loss) == pytest.approx(float(expected), rel=1e-6, abs=1e-6)
    if rate == 0:
        assert float(loss) == pytest.approx(float(ground_truth_loss("sigmoid", logits, y)),
                                         rel=1e-6, abs=1e-6)


def test_large_loss_ranks_over_the_batch_not_per_image() -> None:
    # Image 0 holds the two largest unobserved losses: with k = ceil(2 * 3 * 1/3) = 2 both
    # are taken, none of image 1's.
    logits = torch.tensor([[4.0, 3.0, 0.0], [0.0, -2.0, -3.0]])
    loss, taken = large_loss(logits, torch.tensor([0, 0]), 1 / 3, correct=False)
    assert taken.tolist() == [[False, True, True], [False, False, False]]
