"""Metrics equal a plain per-image reference written from DESIGN.md's metric table."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mile_engine.metrics import (
    EvalAccumulator,
    ScoreKeeper,
    average_precisions,
    evaluate_logits,
    mean_average_precision,
)
from tests.helpers.metrics import as_python, assert_metrics_equal, reference_metrics

# ---------------------------------------------------------------------------- the reference
# ---------------------------------------------------------------------------- properties
# Logits on a grid of quarters plus a per-class offset of 1/1024: no two classes tie for
# the argmax, and no sigmoid lands within float32 error of a threshold (those lie at
# logits -2.197, -1.099, 0, 1.099, 2.197), so float32 and float64 sets agree.
RHOS = (0.1, 0.25, 0.5, 0.75, 0.9)


@st.composite
def evaluation_sets(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random logits [N, C], single labels (-1: unknown) and ReaL sets (some empty)."""
    n = draw(st.integers(1, 12))
    c = draw(st.integers(2, 7))
    quarters = draw(st.lists(st.integers(-16, 16), min_size=n * c, max_size=n * c))
    logits = torch.tensor(quarters, dtype=torch.float32).view(n, c) / 4
    logits += torch.arange(c, dtype=torch.float32) / 1024
    labels = torch.tensor(draw(st.lists(st.integers(-1, c - 1), min_size=n, max_size=n)))
    bits = draw(st.lists(st.booleans(), min_size=n * c, max_size=n * c))
    real = torch.tensor(bits).view(n, c)
    return logits, labels, real


@settings(max_examples=150, deadline=None, database=None)
@given(data=evaluation_sets(), rho=st.sampled_from(RHOS), sigmoid=st.booleans())
def test_metrics_equal_the_per_image_reference_on_random_sets(
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor], rho: float, sigmoid: bool
) -> None:
    logits, labels, real = data
    expected = reference_metrics(*as_python(logits, labels, real), rho, sigmoid)
    assert_metrics_equal(evaluate_logits(logits, labels, real, rho, sigmoid), expected)


@settings(max_examples=40, deadline=None, database=None)
@given(data=evaluation_sets(), cuts=st.lists(st.integers(1, 11), max_size=3, unique=True))
def test_batched_updates_at_several_thresholds_equal_the_reference(
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor], cuts: list[int]
) -> None:
    logits, labels, real = data
    bounds = [0, *sorted(x for x in cuts if x < len(labels)), len(labels)]
    acc = EvalAccumulator(logits.shape[1], list(RHOS), True)
    for start, end in zip(bounds, bounds[1:], strict=False):
        acc.update(logits[start:end], labels[start:end], real[start:end])
    results = acc.compute()
    assert [r["rho"] for r in results] == list(RHOS)
    for rho, got in zip(RHOS, results, strict=True):
        assert_metrics_equal(got, reference_metrics(*as_python(logits, labels, real), rho,
                                                    True))


# ---------------------------------------------------------------------------- examples
@pytest.mark.parametrize("sigmoid", [True, False])
@pytest.mark.parametrize("rho", [0.1, 0.5, 0.8])
def test_metrics_match_the_reference_on_a_larger_set(sigmoid: bool, rho: float) -> None:
    gen = torch.Generator().manual_seed(3)
    n, c = 300, 12
    logits = torch.randn(n, c, generator=gen) * 2
    labels = torch.randint(c, (n,), generator=gen)
    labels[::17] = -1  # unknown single labels
    real = torch.rand(n, c, generator=gen) < 0.2
    real[::5] = False  # empty ReaL sets
    expected = reference_metrics(*as_python(logits, labels, real), rho, sigmoid)
    assert_metrics_equal(evaluate_logits(logits, labels, real, rho, sigmoid), expected)


def test_no_real_sets_gives_nan_not_division_error() -> None:
    logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0], [0.0, 3.0, 0.0]])
    m = evaluate_logits(logits, torch.tensor([0, 1, 0, 0]),
                        torch.zeros(4, 3, dtype=torch.bool), 0.4, True)
    # argmaxes 0, 1, 2, 1 against labels 0, 1, 0, 0: two right. sigmoid(0) = 0.5 > 0.4,
    # so every class is predicted: coverage 3.
    assert m["top1"] == 0.5 and m["coverage"] == 3.0
    for key in ("real_accuracy", "real_f1", "real_precision", "real_recall", "ref_f1_all",
                "ref_f1_label"):
        assert math.isnan(m[key]), key


def test_a_hand_computed_image() -> None:
    # One image, 4 classes, ReaL {0, 1}, label 1; argmax 2; sigmoid > 0.5 for classes 1, 2.
    logits = torch.tensor([[-1.0, 0.5, 2.0, -3.0]])
    m = evaluate_logits(logits, torch.tensor([1]), torch.tensor([[1, 1, 0, 0]]).bool(), 0.5,
                        True)
    # P = {1, 2}, R = {0, 1}: |P & R| = 1.
    assert m["top1"] == 0.0 and m["real_accuracy"] == 0.0
    assert m["real_f1"] == pytest.approx(2 * 1 / (2 + 2))
    assert m["real_precision"] == pytest.approx(1 / 2)
    assert m["real_recall"] == pytest.approx(1 / 2)
    assert m["coverage"] == 2.0
    softmax = evaluate_logits(logits, torch.tensor([1]), torch.tensor([[1, 1, 0, 0]]).bool(),
                              0.5, False)
    assert softmax["coverage"] == 1.0 and softmax["real_f1"] == 0.0  # P = {2}


def test_reference_f1s_of_a_hand_built_set() -> None:
    real = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 0]], dtype=torch.bool)
    labels = torch.tensor([0, 3])
    m = evaluate_logits(torch.zeros(2, 4), labels, real, 0.5, False)
    # every class: 2*2/(4+2) and 2*1/(4+1); single label: 2/(1+2) and 0.
    assert m["ref_f1_all"] == pytest.approx((4 / 6 + 2 / 5) / 2)
    assert m["ref_f1_label"] == pytest.approx((2 / 3 + 0) / 2)


# ---------------------------------------------------------------------------- mAP
@st.composite
def ranking_sets(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores [N, C] and label sets: continuous scores, or scores from a few values (many
    ties); some classes with no positive at all, some with every image positive."""
    n = draw(st.integers(1, 40))
    c = draw(st.integers(1, 7))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    levels = draw(st.sampled_from([0, 1, 2, 3, 5]))  # 0: continuous
    scores = torch.rand(n, c, generator=gen, dtype=torch.float64)
    if levels:
        scores = torch.randint(0, levels, (n, c), generator=gen).double() / levels
    density = draw(st.sampled_from([0.05, 0.3, 0.7]))
    targets = torch.rand(n, c, generator=gen) < density
    for column in draw(st.lists(st.integers(0, c - 1), max_size=2)):
        targets[:, column] = False
    if draw(st.booleans()):
        targets[:, 0] = True
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    return scores.to(dtype), targets


@settings(max_examples=200, deadline=None, database=None)
@given(data=ranking_sets())
def test_average_precision_equals_scikit_learn(
    data: tuple[torch.Tensor, torch.Tensor],
) -> None:
    from sklearn.metrics import average_precision_score

    scores, targets = data
    got = average_precisions(scores, targets)
    expected = []
    for c in range(scores.shape[1]):
        if not targets[:, c].any():
            assert math.isnan(got[c]), c  # no positive: left out, never a 0
            continue
        want = average_precision_score(targets[:, c].numpy(), scores[:, c].numpy())
        assert float(got[c]) == pytest.approx(want, abs=1e-12), c
        expected.append(want)
    value, left_out = mean_average_precision(scores, targets)
    assert left_out == scores.shape[1] - len(expected)
    if expected:
        macro = average_precision_score(targets.numpy()[:, targets.any(0).numpy()],
                                        scores.numpy()[:, targets.any(0).numpy()])
        assert value == pytest.approx(macro, abs=1e-12)
        assert value == pytest.approx(sum(expected) / len(expected), abs=1e-12)
    else:
        assert math.isnan(value)


def test_average_precision_of_a_hand_ranked_class() -> None:
    # Scores 0.9 (pos), 0.8 (neg), 0.8 (pos), 0.1 (pos): thresholds 0.9, 0.8, 0.1 give
    # precision 1/1, 2/3, 3/4 at recall 1/3, 2/3, 1; AP = (1 + 2/3 + 3/4) / 3.
    scores = torch.tensor([[0.9], [0.8], [0.8], [0.1]])
    targets = torch.tensor([[True], [False], [True], [True]])
    assert float(average_precisions(scores, targets)[0]) == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)


@settings(max_examples=30, deadline=None, database=None)
@given(data=ranking_sets(), sigmoid=st.booleans(), shards=st.integers(1, 3))
def test_score_keeper_over_sharded_batches_equals_one_pass(
    data: tuple[torch.Tensor, torch.Tensor], sigmoid: bool, shards: int,
) -> None:
    """Batches dealt to processes round-robin, then merged, give the mAP of all the scores
    at once, the scores being sigmoid or softmax probabilities of the logits."""
    logits, targets = data
    logits = (logits.float() - 0.5) * 8
    keepers = [ScoreKeeper(sigmoid) for _ in range(shards)]
    for k, start in enumerate(range(0, len(logits), 4)):
        keepers[k % shards].update(logits[start:start + 4], targets[start:start + 4], index=k)
    got = ScoreKeeper.compute([keeper.parts() for keeper in keepers])
    probs = torch.sigmoid(logits) if sigmoid else torch.softmax(logits, dim=1)
    value, left_out = mean_average_precision(probs, targets)
    assert got["map_classes_left_out"] == left_out
    assert got["map"] == pytest.approx(value, abs=1e-12, nan_ok=True)
