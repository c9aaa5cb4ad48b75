"""Evaluation metrics as batched tensor maths: update with batches, then compute.

With `P` the prediction set of an image and `R` its ReaL set:
`P = {argmax}` for softmax, `P = {argmax} | {c : sigmoid(logit_c) > rho}` otherwise.
ReaL metrics average over images whose `R` is non-empty; top-1 over images whose
original label is known; label coverage (mean |P|) over all images.

Mean average precision (mAP) reads the scores without a threshold: for each class with
at least one positive in the label sets, the area under its precision-recall steps, as
scikit-learn's `average_precision_score`; the mean over those classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
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
RANKING_NAMES = ("map", "map_classes_left_out")
"""Threshold-free metrics: one value per evaluation, not one per swept threshold."""


def prediction_sets(logits: torch.Tensor, rhos: torch.Tensor, sigmoid: bool) -> torch.Tensor:
    """Prediction sets as bool [R, B, C], one per threshold in `rhos`."""
    rows = torch.arange(len(logits), device=logits.device)
    top = logits.argmax(dim=1)
    if sigmoid:
        pred = torch.sigmoid(logits.float())[None] > rhos[:, None, None]
    else:
        pred = torch.zeros(len(rhos), *logits.shape, dtype=torch.bool, device=logits.device)
    pred[:, rows, top] = True  # the argmax always belongs to the set
    return pred


def _set_sizes(pred: torch.Tensor) -> torch.Tensor:
    """|P| per threshold and image, float64 [R, B]; summing bytes is the fast way."""
    return pred.view(torch.uint8).sum(dim=2, dtype=torch.int32).double()


def _intersections(pred: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """|P & R| per threshold and image, float64 [R, B], visiting only the ReaL entries."""
    rows, cols = real.nonzero(as_tuple=True)
    inter = torch.zeros(pred.shape[:2], dtype=torch.float64, device=pred.device)
    return inter.index_add_(1, rows, pred[:, rows, cols].double())


_COUNTS = ("images", "known", "real", "top1", "real_hit", "ref_all", "ref_label", "ref_label_n")
_SUMS = ("f1", "precision", "recall", "coverage")


class EvalAccumulator:
    """Accumulates one row of sums and counts per batch, on the device.

    Keeping a row per batch (not a running total) makes a sharded evaluation exact: each
    process fills the rows of its own batches, the rows are summed across processes
    (adding zeros is exact) and then over batches in one fixed order, exactly as a
    single process does. `compute` reads the device once.
    """

    def __init__(
        self,
        num_classes: int,
        rhos: Sequence[float],
        sigmoid: bool,
        device: torch.device | str = "cpu",
    ) -> None:
        self.num_classes = num_classes
        self.sigmoid = sigmoid
        self.device = torch.device(device)
        self.rhos = torch.tensor(list(rhos), dtype=torch.float64, device=device).float()
        self._rows: dict[int, torch.Tensor] = {}

    @property
    def width(self) -> int:
        """Length of one row: the counts, then each sum for every threshold."""
        return len(_COUNTS) + len(_SUMS) * len(self.rhos)

    def update(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        real: torch.Tensor,
        index: int | None = None,
    ) -> None:
        """Add one batch: logits [B, C], labels [B] (-1 = unknown), real bool [B, C].

        Args:
            index: the batch's position in the whole validation set (default: next).
        """
        logits = logits.detach().float()
        real = real.bool()
        pred = prediction_sets(logits, self.rhos, self.sigmoid)
        inter = _intersections(pred, real)
        p_size = _set_sizes(pred)
        r_size = real.sum(dim=1).double()
        has_real = r_size > 0
        r_safe = r_size.clamp(min=1)
        mask = has_real.double()
        top = logits.argmax(dim=1)
        rows = torch.arange(len(top), device=logits.device)
        known = labels >= 0
        label_in_real = real[rows, labels.clamp(min=0)] & known
        ref_rows = (has_real & known).double()
        counts = torch.stack([
            torch.tensor(float(len(labels)), dtype=torch.float64, device=logits.device),
            known.sum().double(),
            has_real.sum().double(),
            ((top == labels) & known).sum().double(),
            real[rows, top].sum().double(),
            # Reference F1s: predict every class, or predict the single label alone.
            (2 * r_size / (self.num_classes + r_size) * mask).sum(),
            (2 * label_in_real.double() / (1 + r_safe) * ref_rows).sum(),
            ref_rows.sum(),
        ])
        sums = torch.cat([
            (2 * inter / (p_size + r_safe) * mask).sum(dim=1),
            (inter / p_size * mask).sum(dim=1),
            (inter / r_safe * mask).sum(dim=1),
            p_size.sum(dim=1),
        ])
        self._rows[len(self._rows) if index is None else index] = torch.cat([counts, sums])

    def table(self, batches: int | None = None) -> torch.Tensor:
        """The rows as float64 [batches, width]; rows of batches not seen here are zero."""
        batches = batches if batches is not None else max(self._rows, default=-1) + 1
        table = torch.zeros(batches, self.width, dtype=torch.float64, device=self.device)
        for i, row in self._rows.items():
            table[i] = row
        return table

    def compute(self, table: torch.Tensor | None = None) -> list[dict[str, float]]:
        """One dict of metrics per threshold, with the reference F1s in each.

        Args:
            table: rows already gathered from every process (default: this one's rows).

        A metric that no image can score (no known labels, no ReaL sets) is NaN.
        """
        totals = (self.table() if table is None else table).sum(dim=0).tolist()
        c = dict(zip(_COUNTS, totals[: len(_COUNTS)], strict=True))
        n = len(self.rhos)
        flat = totals[len(_COUNTS):]
        sums = {name: flat[i * n:(i + 1) * n] for i, name in enumerate(_SUMS)}

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


# ---------------------------------------------------------------------------- ranking
def class_scores(logits: torch.Tensor, sigmoid: bool) -> torch.Tensor:
    """The scores mAP ranks, float32 [B, C]: sigmoid probabilities for the sigmoid
    schemas, softmax probabilities (across classes, then ranked per class) otherwise."""
    logits = logits.detach().float()
    return torch.sigmoid(logits) if sigmoid else torch.softmax(logits, dim=1)


def average_precisions(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Average precision of every class, float64 [C]; NaN for a class with no positive.

    `scores` [N, C] (finite; float32 or float64, ties are equal values in that dtype),
    `targets` bool [N, C]. Equal to scikit-learn's `average_precision_score` on each
    column: the sum over distinct thresholds of (R_n - R_{n-1}) P_n, tied scores being one
    threshold. Written per positive: each positive p of a class adds
    TP(s >= s_p) / N(s >= s_p), and the class's AP is the mean of those over its positives.
    So only each column's sorted values are needed (not an argsort), and positives are
    counted against them with a batched binary search.
    """
    scores = scores.detach().cpu()
    if scores.dtype not in (torch.float32, torch.float64):
        scores = scores.float()
    targets = targets.detach().cpu().bool()
    n, classes = scores.shape
    columns = scores.t().contiguous()
    # NumPy's sort of float32 / float64 is vectorised (AVX-512 where the CPU has it) and
    # sorts without the index tensor torch.sort always builds: an order of magnitude
    # faster on a CPU for ImageNet's 50,000 x 1,000 scores.
    ordered = torch.from_numpy(np.sort(columns.numpy(), axis=1))
    row, cls = targets.nonzero(as_tuple=True)
    # Class-major order (each class's positives together): sorting the few positives
    # costs less than a nonzero over the transposed [C, N] view.
    by_class = cls.argsort(stable=True)
    row, cls = row[by_class], cls[by_class]
    npos = torch.bincount(cls, minlength=classes)
    width = max(int(npos.max()) if classes else 0, 1)
    first = torch.cumsum(npos, 0) - npos
    slot = torch.arange(len(cls)) - first[cls]
    # Positives' scores per class, padded after the real ones (never read back).
    positive = torch.full((classes, width), float("inf"), dtype=columns.dtype)
    positive[cls, slot] = columns[cls, row]
    positive = positive.sort(dim=1).values
    # For the positive at ascending position j of its class: positives and items with a
    # score >= its own (the whole tie group counts: one threshold).
    tp = npos[:, None] - torch.searchsorted(positive, positive, side="left")
    seen = n - torch.searchsorted(ordered, positive, side="left")
    real = torch.arange(width)[None, :] < npos[:, None]
    precision = torch.where(real, tp.double() / seen.clamp(min=1).double(), 0.0)
    ap = precision.sum(dim=1) / npos.double()
    return torch.where(npos > 0, ap, float("nan"))


def mean_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> tuple[float, int]:
    """(mAP, classes left out): the mean AP over classes with at least one positive, and
    how many classes had none. mAP is NaN when no class has a positive."""
    ap = average_precisions(scores, targets)
    kept = ~torch.isnan(ap)
    left_out = int((~kept).sum())
    if not bool(kept.any()):
        return float("nan"), left_out
    return float(ap[kept].mean()), left_out


class ScoreKeeper:
    """Keeps every validation score and label set of an evaluation, for mAP at its end.

    Batches are kept where they are (no host sync per batch) under their position in the
    whole validation set; `gathered` puts them in that order on the CPU.
    """

    def __init__(self, sigmoid: bool) -> None:
        self.sigmoid = sigmoid
        self._batches: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def update(self, logits: torch.Tensor, real: torch.Tensor, index: int | None = None) -> None:
        """Add one batch: logits [B, C], real bool [B, C], at position `index` (default next)."""
        key = len(self._batches) if index is None else index
        self._batches[key] = (class_scores(logits, self.sigmoid), real.detach().bool())

    def parts(self) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """This keeper's batches on the CPU, by position (what a process shares)."""
        return {i: (s.cpu(), r.cpu()) for i, (s, r) in self._batches.items()}

    @staticmethod
    def compute(
        parts: Sequence[dict[int, tuple[torch.Tensor, torch.Tensor]]],
    ) -> dict[str, float]:
        """`{"map": ..., "map_classes_left_out": ...}` over the batches of every process
        in `parts`, put in validation order (mAP does not depend on it; the order only
        makes every process compute the very same sums)."""
        merged = {i: part for keeper in parts for i, part in keeper.items()}
        if not merged:
            return {"map": float("nan"), "map_classes_left_out": 0}
        order = sorted(merged)
        scores = torch.cat([merged[i][0] for i in order])
        real = torch.cat([merged[i][1] for i in order])
        value, left_out = mean_average_precision(scores, real)
        return {"map": value, "map_classes_left_out": left_out}
