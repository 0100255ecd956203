import json

import pytest
import torch

from model import distributed, train
from model import evaluate as evaluate_cli
from model.checkpoint import load_checkpoint
from model.data import SyntheticScenes, make_loader
from model.evaluate import confusion, evaluate
from model.net import DeconvNet, NetConfig
from model.transforms import eval_transforms


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
    ckpt = load_checkpoint(tmp_path / "m.pt")
    scenes = SyntheticScenes(2, size=32, seed=5, transform=eval_transforms(ckpt.mean, ckpt.std))
    direct = evaluate(ckpt.model, make_loader(scenes, 8, shuffle=False, seed=0), 7)
    assert result["miou"] == round(direct["miou"], 5)
    assert result["pixel_accuracy"] == round(direct["pixel_accuracy"], 5)
    assert "| class | IoU | truth pixels | predicted pixels |" in lines
    assert any(line.startswith("| background | ") for line in lines)
    assert (tmp_path / "m.confusion.png").stat().st_size > 0


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
    assert "no such file or folder" in capsys.readouterr().err


def test_evaluate_record_stores_the_result_in_the_checkpoint(tmp_path, capsys):
    train.main(tiny_args(tmp_path, "m.pt"))
    args = evaluate_cli.get_args_parser().parse_args(
        [str(tmp_path / "m.pt"), "--images", "2", "--size", "32", "--record"])
    assert evaluate_cli.main(args) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    held_out = load_checkpoint(tmp_path / "m.pt").metrics["held_out"]
    assert held_out["miou"] == printed["miou"]
    assert held_out["command"].startswith("python -m model.evaluate")


def test_weight_decay_falls_on_conv_weights_only():
    model = DeconvNet(NetConfig(num_classes=3, widths=[4, 8]))
    decayed, plain = train.configure_optimizer(model, 1e-3, 0.1).param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decayed["params"]) and decayed["params"]
    assert all(p.dim() < 2 for p in plain["params"]) and plain["params"]
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))


def test_clipping_the_gradient_norm_holds_the_step_back(tmp_path):
    def weights_after(clip: str):
        out = f"clip{clip}.pt"
        train.main(tiny_args(tmp_path, out, "--epochs", "1", "--weight-decay", "0", "--lr",
                             "0.05", "--clip-grad-norm", clip))
        return load_checkpoint(tmp_path / out).model.head.weight.detach()

    torch.manual_seed(0)  # as train.main seeds before building the network
    start = DeconvNet(NetConfig(num_classes=7, widths=[4, 8])).head.weight.detach()
    free, clipped = weights_after("0"), weights_after("1e-12")
    assert (clipped - start).abs().max() < 0.1 * (free - start).abs().max()


def test_the_dice_weight_reaches_the_loss(tmp_path):
    def weights_after(dice: str):
        out = f"dice{dice}.pt"
        train.main(tiny_args(tmp_path, out, "--epochs", "1", "--dice", dice))
        ckpt = load_checkpoint(tmp_path / out)
        assert ckpt.training["config"]["dice"] == float(dice)
        return ckpt.model.head.weight.detach()

    assert torch.equal(weights_after("0"), weights_after("0.0"))  # the run itself repeats
    assert not torch.equal(weights_after("0"), weights_after("1"))


def test_the_run_config_is_saved_in_the_checkpoint(tmp_path):
    train.main(tiny_args(tmp_path, "m.pt", "--clip-grad-norm", "2.5"))
    config = load_checkpoint(tmp_path / "m.pt").training["config"]
    assert config["clip_grad_norm"] == 2.5 and config["widths"] == [4, 8]
    assert train.TrainConfig(**config) == train.TrainConfig.from_args(
        tiny_args(tmp_path, "m.pt", "--clip-grad-norm", "2.5"))


def test_net_options_reach_the_network(tmp_path):
    args = tiny_args(tmp_path, "m.pt", "--net", "convs_per_stage=1")
    assert train.main(args) == 0
    assert load_checkpoint(tmp_path / "m.pt").model.config.convs_per_stage == 1


def test_validation_shards_sum_to_the_whole_set(tmp_path):
    data = SyntheticScenes(5, size=24, seed=1, transform=eval_transforms([0.5] * 3, [0.25] * 3))
    parts = [distributed.shard(data, rank, 2) for rank in range(2)]
    assert sorted(i for part in parts for i in part.indices) == list(range(5))
    model = DeconvNet(NetConfig(num_classes=7, widths=[4, 8]))
    whole = train.validate(model, data, 7, "cpu", 0, 1)
    matrices = [confusion(model, make_loader(part, 8, False, 0), 7).matrix for part in parts]
    assert torch.equal(sum(matrices), confusion(model, make_loader(data, 8, False, 0), 7).matrix)
    assert whole["miou"] == evaluate(model, make_loader(data, 8, False, 0), 7)["miou"]
