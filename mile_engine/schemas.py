"""Training schemas: their losses, their pseudo-labels and how they predict label sets."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

import torch
import torch.nn.functional as F

from mile_engine.config.schema import Schema

PhaseName = Literal["interactive", "imitation"]
INTERACTIVE: Final = "interactive"
IMITATION: Final = "imitation"


@dataclass(frozen=True)
class Phase:
    """One phase of a generation: its name and its number of optimizer steps."""

    name: PhaseName
    steps: int


def phases_of(schema: Schema, k_t: int, k_s: int) -> list[Phase]:
    """The phases of one generation.

    MILe alternates `k_t` interactive and `k_s` imitation steps; the baselines take the
    same `k_t + k_s` steps on the ground truth, so every schema gets equal compute.
    """
    if schema == "MILe":
        return [Phase(INTERACTIVE, k_t), Phase(IMITATION, k_s)]
    return [Phase(INTERACTIVE, k_t + k_s)]


def uses_sigmoid(schema: Schema) -> bool:
    """Whether the schema trains (and predicts) with per-class sigmoids."""
    return schema != "softmax"


LARGE_LOSS_SCHEMAS: Final[tuple[Schema, ...]] = ("LL-R", "LL-Ct")
"""The schemas that reject (LL-R) or correct (LL-Ct) the largest unobserved losses."""


def rejection_rate(delta: float, generation: int) -> float:
    """LL's rate in generation `generation` (from 0): `delta` per generation, at most 1.

    The paper's schedule starts at 0 in the first epoch and grows by `delta` after each;
    here a generation is an epoch.
    """
    return min(1.0, delta * generation)


def rejected_count(batch_size: int, num_classes: int, rate: float) -> int:
    """How many unobserved labels a batch rejects: `ceil(B * C * rate)`, at most the
    `B * (C - 1)` unobserved labels there are.

    The product is rounded to 9 decimals first, so that float noise in `rate`
    (`0.1 * 3 = 0.30000000000000004`) cannot add one more.
    """
    k = math.ceil(round(batch_size * num_classes * rate, 9))
    return max(0, min(k, batch_size * (num_classes - 1)))


def multi_label_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on logits, summed over classes and averaged over the batch."""
    loss = F.binary_cross_entropy_with_logits(
        logits.float(), targets.to(torch.float32), reduction="sum"
    )
    return loss / logits.shape[0]


def ground_truth_loss(
    schema: Schema, logits: torch.Tensor, labels: torch.Tensor, em_alpha: float = 0.1
) -> torch.Tensor:
    """The loss on the single labels: cross-entropy for softmax, EM's loss for EM,
    one-hot BCE otherwise (sigmoid, MILe's interactive phase; LL's before any rejection).
    """
    if schema == "softmax":
        return F.cross_entropy(logits.float(), labels)
    if schema == "EM":
        return entropy_maximisation_loss(logits, labels, em_alpha)
    one_hot = F.one_hot(labels, logits.shape[1])
    return multi_label_bce(logits, one_hot)


def entropy_maximisation_loss(
    logits: torch.Tensor, labels: torch.Tensor, alpha: float
) -> torch.Tensor:
    """EM (Zhou et al., ECCV 2022): `-log p` for the observed label, `-alpha * H(p)` for
    every unobserved class, `H(p) = -p log p - (1 - p) log(1 - p)`; summed over classes
    and averaged over the batch, as `multi_label_bce`.

    The logarithms come from `logsigmoid` (exact where `p` rounds to 0 or 1); the
    authors' code adds 1e-5 inside them instead.
    """
    z = logits.float()
    observed = F.one_hot(labels, z.shape[1]).bool()
    log_p, log_q = F.logsigmoid(z), F.logsigmoid(-z)  # log p, log(1 - p)
    p = torch.sigmoid(z)
    entropy = -(p * log_p + (1 - p) * log_q)
    per_entry = torch.where(observed, -log_p, -alpha * entropy)
    return per_entry.sum() / z.shape[0]


def large_loss(
    logits: torch.Tensor, labels: torch.Tensor, rate: float, correct: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """LL-R / LL-Ct (Kim et al., CVPR 2022): "assume negative" BCE, except for the
    largest losses among the batch's unobserved labels, which are dropped (LL-R) or
    trained towards 1 instead (`correct`, LL-Ct).

    The batch's `k = rejected_count(B, C, rate)` largest unobserved losses are taken
    over the whole batch, not per image; as in the authors' code, every unobserved label
    whose loss reaches the k-th largest is taken (ties included), and the observed label
    never is. Summed over classes and averaged over the batch, as `multi_label_bce`.

    Returns:
        The loss, and the bool [B, C] mask of the labels rejected or corrected.
    """
    z = logits.float()
    batch, classes = z.shape
    observed = F.one_hot(labels, classes).bool()
    per_entry = F.binary_cross_entropy_with_logits(z, observed.float(), reduction="none")
    k = rejected_count(batch, classes, rate)
    if k == 0:
        taken = torch.zeros_like(observed)
    else:
        unobserved = per_entry.detach().masked_fill(observed, -math.inf)
        kth = unobserved.flatten().topk(k).values[-1]
        taken = unobserved >= kth
    if correct:
        per_entry = torch.where(
            taken, F.binary_cross_entropy_with_logits(z, torch.ones_like(z), reduction="none"),
            per_entry)
    else:
        per_entry = per_entry.masked_fill(taken, 0.0)
    return per_entry.sum() / batch, taken


def pseudo_labels(
    teacher_logits: torch.Tensor, rho: float, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """MILe's pseudo-labels: `sigmoid(teacher logits) > rho`, optionally OR the ground truth.

    The threshold applies to probabilities (as in the authors' code), not to raw logits.
    """
    targets = torch.sigmoid(teacher_logits.float()) > rho
    if labels is not None:
        targets[torch.arange(len(labels), device=labels.device), labels] = True
    return targets
