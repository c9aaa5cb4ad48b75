"""Training schemas: their losses, their pseudo-labels and how they predict label sets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import torch
import torch.nn.functional as F

from mile_engine.config import Schema

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


def multi_label_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on logits, summed over classes and averaged over the batch."""
    loss = F.binary_cross_entropy_with_logits(
        logits.float(), targets.to(torch.float32), reduction="sum"
    )
    return loss / logits.shape[0]


def ground_truth_loss(
    schema: Schema, logits: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """The loss on the single labels: cross-entropy for softmax, one-hot BCE otherwise."""
    if schema == "softmax":
        return F.cross_entropy(logits.float(), labels)
    one_hot = F.one_hot(labels, logits.shape[1])
    return multi_label_bce(logits, one_hot)


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
