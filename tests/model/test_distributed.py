import subprocess
import sys

import pytest

from model.checkpoint import load_checkpoint
from model.data import SyntheticScenes, make_loader
from model.evaluate import evaluate
from model.transforms import eval_transforms


@pytest.mark.slow
def test_torchrun_trains_with_two_cpu_processes(tmp_path):
    out = tmp_path / "ddp.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "model.train", "--epochs", "2", "--epoch-size", "16", "--batch-size", "4",
           "--crop-size", "24", "--val-images", "2", "--val-size", "24", "--widths", "4", "8",
           "--workers", "0", "--threads", "1", "--no-progress", "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    ckpt = load_checkpoint(out)
    assert ckpt.training["world_size"] == 2
    assert ckpt.training["epochs_done"] == 2
    assert result.stderr.count("epoch 2/2") == 1  # only rank 0 logs
    # Each rank scored its half of the validation scenes; the summed confusion matrices give
    # the metrics one process gets on all of them.
    val = SyntheticScenes(2, size=24, seed=1, transform=eval_transforms(ckpt.mean, ckpt.std))
    whole = evaluate(ckpt.model, make_loader(val, 8, shuffle=False, seed=0), 7)
    assert ckpt.metrics["val_miou"] == pytest.approx(whole["miou"], abs=1e-9)
