import json

import pytest
import torch

from model import evaluate as evaluate_cli
from model import train
from model.checkpoint import load_checkpoint


def tiny_args(tmp_path, name, *extra):
    return train.get_args_parser().parse_args([
        "--epochs", "2", "--epoch-size", "8", "--batch-size", "4", "--crop-size", "24",
        "--val-images", "2", "--val-size", "24", "--widths", "4", "8", "--workers", "0",
        "--warmup-steps", "1", "--no-progress", "--out", str(tmp_path / name), *extra,
    ])


def test_training_writes_a_loadable_checkpoint_and_curves(tmp_path):
    assert train.main(tiny_args(tmp_path, "m.pt", "--cutmix", "0.5", "--mixup", "0.5")) == 0
    ckpt = load_checkpoint(tmp_path / "m.pt")
    assert ckpt.classes[0] == "background" and ckpt.train_size == 24
    assert ckpt.training["epochs_done"] == 2 and len(ckpt.training["history"]) == 2
    assert "val_miou" in ckpt.metrics
    assert (tmp_path / "m.curves.png").stat().st_size > 0
    assert (tmp_path / "m.state.pt").exists()


def test_resume_continues_exactly(tmp_path):
    torch.use_deterministic_algorithms(True)
    try:
        train.main(tiny_args(tmp_path, "straight.pt"))
        train.main(tiny_args(tmp_path, "split.pt", "--stop-after", "1"))
        assert load_checkpoint(tmp_path / "split.pt").training["epochs_done"] == 1
        train.main(tiny_args(tmp_path, "split.pt", "--resume", str(tmp_path / "split.state.pt")))
    finally:
        torch.use_deterministic_algorithms(False)
    straight = load_checkpoint(tmp_path / "straight.pt").model.state_dict()
    split = load_checkpoint(tmp_path / "split.pt").model.state_dict()
    for name in straight:
        assert torch.equal(straight[name], split[name]), name


def test_evaluate_prints_json_last_line(tmp_path, capsys):
    train.main(tiny_args(tmp_path, "m.pt"))
    capsys.readouterr()
    args = evaluate_cli.get_args_parser().parse_args(
        [str(tmp_path / "m.pt"), "--images", "2", "--size", "32", "--seed", "5"])
    assert evaluate_cli.main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert 0.0 <= result["miou"] <= 1.0 and 0.0 <= result["pixel_accuracy"] <= 1.0
    assert any("IoU" in line and "background" in line for line in lines)


def test_evaluate_reports_a_bad_checkpoint_clearly(tmp_path, capsys):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    args = evaluate_cli.get_args_parser().parse_args([str(tmp_path / "bad.pt")])
    assert evaluate_cli.main(args) == 2
    assert "bad.pt: truncated or corrupt" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["missing-folder"])
def test_training_on_a_bad_folder_exits_with_message(tmp_path, capsys, bad):
    args = tiny_args(tmp_path, "m.pt")
    args.data = str(tmp_path / bad)
    assert train.main(args) == 2
    assert "images/ and masks/" in capsys.readouterr().err


def test_evaluate_record_stores_the_result_in_the_checkpoint(tmp_path, capsys):
    train.main(tiny_args(tmp_path, "m.pt"))
    args = evaluate_cli.get_args_parser().parse_args(
        [str(tmp_path / "m.pt"), "--images", "2", "--size", "32", "--record"])
    assert evaluate_cli.main(args) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    held_out = load_checkpoint(tmp_path / "m.pt").metrics["held_out"]
    assert held_out["miou"] == printed["miou"]
    assert held_out["command"].startswith("python -m model.evaluate")
