"""The `onnxruntime` engine: the network exported in memory at start-up (`model.export`, dynamic
batch and size) and run by ONNX Runtime's CPU execution provider, in fp32.

Threads. The worker policy (`app.workers`) gives each forward a thread count, set as the calling
thread's torch thread count; an ONNX Runtime session fixes its intra-op threads when it is made.
So there is one session per thread count, made on first use: a one-thread session computes in
the caller's thread alone, and two busy workers never share one session's thread pool.
"""

from __future__ import annotations

import logging
import threading
import time

import onnxruntime as ort
import torch

from model.checkpoint import Checkpoint
from model.export import INPUT, export_onnx

log = logging.getLogger("deconvseg.inference")


class OnnxRuntimeNet:
    """Normalised float32 (B, 3, h, w) → float32 logits (B, K, h, w), like the nn.Module."""

    def __init__(self, ckpt: Checkpoint) -> None:
        start = time.perf_counter()
        self._model = export_onnx(ckpt, masks=False).SerializeToString()
        log.info("%s exported to ONNX in %.1f s", ckpt.name, time.perf_counter() - start)
        self._sessions: dict[int, ort.InferenceSession] = {}
        self._lock = threading.Lock()  # guards _sessions

    def session(self, threads: int) -> ort.InferenceSession:
        """The session computing with `threads` intra-op threads (made once)."""
        with self._lock:
            if threads not in self._sessions:
                options = ort.SessionOptions()
                options.intra_op_num_threads = threads
                self._sessions[threads] = ort.InferenceSession(
                    self._model, options, providers=["CPUExecutionProvider"])
            return self._sessions[threads]

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        session = self.session(torch.get_num_threads())
        (logits,) = session.run(["logits"], {INPUT: batch.float().contiguous().numpy()})
        return torch.from_numpy(logits)
