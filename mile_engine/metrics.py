"""Evaluation metrics as batched tensor maths: update with batches, then compute.

With `P` the prediction set of an image and `R` its ReaL set:
`P = {argmax}` for softmax, `P = {argmax} | {c : sigmoid(logit_c) > rho}` otherwise.
ReaL metrics average over images whose `R` is non-empty; top-1 over images whose
original label is known; label coverage (mean |P|) over all images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

METRIC_NAMES = (
    "top1",
    "real_accuracy",
    "real_f1",
    "real_precision",
    "real_recall",
    "coverage",
)
REFERENCE_NAMES = ("ref_f1_all", "ref_f1_label")


def prediction_sets(logits: torch.Tensor, rhos: torch.Tensor, sigmoid: bool) -> torch.Tensor:
    """Prediction sets as bool [R, B, C], one per threshold in `rhos`."""
    top = logits.argmax(dim=1)
    top_hot = torch.zeros_like(logits, dtype=torch.bool)
    top_hot[torch.arange(len(top), device=logits.device), top] = True
    if not sigmoid:
        return top_hot.expand(len(rhos), -1, -1)
    probs = torch.sigmoid(logits.float())
    return (probs[None] > rhos[:, None, None]) | top_hot[None]


class EvalAccumulator:
    """Accumulates sums and counts on the device; `compute` reads them once at the end."""

    _SUMS = ("f1", "precision", "recall", "coverage")

    def __init__(
        self,
        num_classes: int,
        rhos: Sequence[float],
        sigmoid: bool,
        device: torch.device | str = "cpu",
    ) -> None:
        self.num_classes = num_classes
        self.sigmoid = sigmoid
        self.rhos = torch.tensor(list(rhos), dtype=torch.float32, device=device)
        zeros = torch.zeros(len(self.rhos), dtype=torch.float64, device=device)
        self._sums = {name: zeros.clone() for name in self._SUMS}
        scalar = torch.zeros((), dtype=torch.float64, device=device)
        self._counts = {
            name: scalar.clone()
            for name in ("images", "known", "real", "top1", "real_hit", "ref_all", "ref_label",
                         "ref_label_n")
        }

    def update(self, logits: torch.Tensor, labels: torch.Tensor, real: torch.Tensor) -> None:
        """Add one batch: logits [B, C], labels [B] (-1 = unknown), real bool [B, C]."""
        logits = logits.detach().float()
        real = real.bool()
        pred = prediction_sets(logits, self.rhos, self.sigmoid)
        inter = (pred & real[None]).sum(dim=2).double()
        p_size = pred.sum(dim=2).double()
        r_size = real.sum(dim=1).double()
        has_real = r_size > 0
        r_safe = r_size.clamp(min=1)
        mask = has_real.double()
        self._sums["f1"] += (2 * inter / (p_size + r_safe) * mask).sum(dim=1)
        self._sums["precision"] += (inter / p_size * mask).sum(dim=1)
        self._sums["recall"] += (inter / r_safe * mask).sum(dim=1)
        self._sums["coverage"] += p_size.sum(dim=1)

        c = self._counts
        top = logits.argmax(dim=1)
        rows = torch.arange(len(top), device=logits.device)
        known = labels >= 0
        c["images"] += len(labels)
        c["known"] += known.sum()
        c["real"] += has_real.sum()
        c["top1"] += ((top == labels) & known).sum()
        c["real_hit"] += real[rows, top].sum()
        # Reference F1s: predict every class, or predict the single label alone.
        c["ref_all"] += (2 * r_size / (self.num_classes + r_size) * mask).sum()
        label_in_real = real[rows, labels.clamp(min=0)] & known
        ref_rows = has_real & known
        c["ref_label"] += (2 * label_in_real.double() / (1 + r_safe) * ref_rows.double()).sum()
        c["ref_label_n"] += ref_rows.sum()

    def compute(self) -> list[dict[str, float]]:
        """One dict of metrics per threshold, with the reference F1s in each.

        A metric that no image can score (no known labels, no ReaL sets) is NaN.
        """
        c = {name: float(value) for name, value in self._counts.items()}
        sums = {name: value.tolist() for name, value in self._sums.items()}

        def ratio(num: float, den: float) -> float:
            return num / den if den else float("nan")

        results = []
        for i, rho in enumerate(self.rhos.tolist()):
            results.append(
                {
                    "rho": round(rho, 6),
                    "top1": ratio(c["top1"], c["known"]),
                    "real_accuracy": ratio(c["real_hit"], c["real"]),
                    "real_f1": ratio(sums["f1"][i], c["real"]),
                    "real_precision": ratio(sums["precision"][i], c["real"]),
                    "real_recall": ratio(sums["recall"][i], c["real"]),
                    "coverage": ratio(sums["coverage"][i], c["images"]),
                    "ref_f1_all": ratio(c["ref_all"], c["real"]),
                    "ref_f1_label": ratio(c["ref_label"], c["ref_label_n"]),
                }
            )
        return results


def evaluate_logits(
    logits: torch.Tensor,
    labels: torch.Tensor,
    real: torch.Tensor,
    rho: float,
    sigmoid: bool,
) -> dict[str, float]:
    """All metrics of one set of logits at one threshold."""
    acc = EvalAccumulator(logits.shape[1], [rho], sigmoid, logits.device)
    acc.update(logits, labels, real)
    return acc.compute()[0]
