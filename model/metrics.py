"""Confusion-matrix segmentation metrics: per-class IoU, mIoU, pixel accuracy."""

from __future__ import annotations

from typing import TypedDict

import torch

from model.classes import IGNORE_INDEX


class SegMetrics(TypedDict):
    """What `ConfusionMatrix.compute` (and `model.evaluate.evaluate`) return."""

    miou: float
    pixel_accuracy: float
    per_class_iou: list[float]


class ConfusionMatrix:
    """Accumulates a (C, C) matrix, rows = truth, columns = prediction; ignore pixels skipped."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, target: torch.Tensor, prediction: torch.Tensor) -> None:
        valid = target != IGNORE_INDEX
        t, p = target[valid].long().flatten(), prediction[valid].long().flatten()
        n = self.num_classes
        self.matrix += torch.bincount(t * n + p, minlength=n * n).reshape(n, n).cpu()

    def reduce_from(self, other: torch.Tensor) -> None:
        """Replace the matrix (after a distributed all-reduce, say)."""
        self.matrix = other.to(torch.int64).cpu()

    def per_class_iou(self) -> torch.Tensor:
        """IoU per class; NaN for a class absent from both truth and prediction."""
        m = self.matrix.double()
        tp = m.diag()
        union = m.sum(0) + m.sum(1) - tp
        return torch.where(union > 0, tp / union.clamp(min=1), torch.tensor(float("nan")))

    def compute(self) -> SegMetrics:
        iou = self.per_class_iou()
        total = self.matrix.sum().item()
        return {
            "miou": float(iou.nanmean()) if (~iou.isnan()).any() else float("nan"),
            "pixel_accuracy": self.matrix.diag().sum().item() / total if total else float("nan"),
            "per_class_iou": [float(v) for v in iou],
        }
