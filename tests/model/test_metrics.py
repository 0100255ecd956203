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
