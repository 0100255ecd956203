import math

import torch

from model.classes import IGNORE_INDEX
from model.metrics import ConfusionMatrix


def test_iou_and_accuracy_from_confusion_matrix():
    cm = ConfusionMatrix(3)
    target = torch.tensor([[0, 0, 1, 1, IGNORE_INDEX]])
    pred = torch.tensor([[0, 1, 1, 1, 2]])
    cm.update(target, pred)
    result = cm.compute()
    assert result["per_class_iou"][0] == 0.5  # tp 1, union 2
    assert result["per_class_iou"][1] == 2 / 3  # tp 2, union 3
    assert math.isnan(result["per_class_iou"][2])  # absent from both: excluded from the mean
    assert result["miou"] == (0.5 + 2 / 3) / 2
    assert result["pixel_accuracy"] == 3 / 4  # the ignored pixel is not counted


def test_reduce_from_replaces_the_matrix_with_an_int64_cpu_copy():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0, 1]), torch.tensor([0, 0]))
    reduced = torch.tensor([[3.0, 1.0], [0.0, 4.0]])  # e.g. summed across ranks
    cm.reduce_from(reduced)
    assert cm.matrix.dtype == torch.int64 and cm.matrix.device.type == "cpu"
    assert cm.matrix.tolist() == [[3, 1], [0, 4]]
    assert cm.compute()["pixel_accuracy"] == 7 / 8
