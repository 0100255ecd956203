import subprocess
import sys

import pytest

from model.checkpoint import load_checkpoint


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
