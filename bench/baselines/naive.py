"""What a user would write by hand: one FastAPI endpoint, decode and eager fp32 per request.

`DECONVSEG_CHECKPOINT=weights/model.pt DECONVSEG_PORT=8001 python -m bench.baselines.naive`
"""

from __future__ import annotations

import io
import os

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, File, UploadFile
from fastapi.responses import Response
from PIL import Image

from model.checkpoint import load_checkpoint
from model.transforms import preprocess

ckpt = load_checkpoint(os.environ.get("DECONVSEG_CHECKPOINT", "weights/model.pt"))
app = FastAPI()


@app.get("/readyz")
def readyz() -> dict:
    return {"status": "ready"}


@app.post("/segment")
def segment(file: UploadFile = File(...)) -> Response:  # noqa: B008 - the naive way
    image = np.asarray(Image.open(io.BytesIO(file.file.read())).convert("RGB"))
    with torch.no_grad():
        logits = ckpt.model(preprocess(image, ckpt.mean, ckpt.std)[None])
    mask = logits[0].argmax(0).to(torch.uint8).numpy()
    buffer = io.BytesIO()
    Image.fromarray(mask).save(buffer, format="PNG")
    return Response(buffer.getvalue(), media_type="image/png")


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("DECONVSEG_PORT", "8001")),
                log_level="warning")
