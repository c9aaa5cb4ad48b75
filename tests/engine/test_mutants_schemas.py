"""Pseudo-labels at the edges DESIGN.md fixes: `y = 1[sigmoid(teacher(x)) > rho]` is a
strict inequality, and the optional ground-truth OR sets each image's own label only.

Written against plausible slips that the training reference cannot see (its teacher
logits never sit exactly on the threshold): `>=` for `>`, and an OR that broadcasts the
batch's labels to every row.
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mile_engine.schemas import pseudo_labels


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
