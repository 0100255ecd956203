"""The ONNX export: any batch and size in ONNX Runtime, fp32 eager's masks, a Triton folder."""

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import model.export as export
from model.checkpoint import load_checkpoint
from tests.tiny import CLASSES


def run_export(*argv: str) -> int:
    return export.main(export.get_args_parser().parse_args(list(argv)))


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    assert run_export(str(tiny_checkpoint), "--format", "onnx", "--out", str(out)) == 0
    return load_checkpoint(tiny_checkpoint), out


@pytest.fixture(scope="module")
def session(exported):
    return ort.InferenceSession(str(exported[1] / "model.onnx"),
                                providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(("batch", "height", "width"),
                         [(1, 1, 1), (2, 7, 600), (3, 257, 255), (1, 640, 480)])
def test_onnx_runtime_masks_equal_fp32_eager_at_any_batch_and_size(exported, session, batch,
                                                                   height, width):
    ckpt, _ = exported
    torch.manual_seed(height * 1000 + width)
    image = torch.randn(batch, 3, height, width)
    with torch.inference_mode():
        reference = ckpt.model(image)
    logits, mask = session.run(["logits", "mask"], {"image": image.numpy()})
    assert logits.shape == (batch, len(CLASSES), height, width)
    assert mask.dtype == np.uint8 and mask.shape == (batch, height, width)
    np.testing.assert_allclose(logits, reference.numpy(), atol=1e-4)
    assert np.array_equal(mask, reference.argmax(1).numpy())


def test_the_graph_declares_batch_height_and_width_dynamic_and_carries_the_classes(exported):
    ckpt, out = exported
    graph = onnx.load(out / "model.onnx")
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in [*graph.graph.input, *graph.graph.output]}
    assert dims == {"image": ["batch", 3, "height", "width"],
                    "logits": ["batch", len(CLASSES), "height", "width"],
                    "mask": ["batch", "height", "width"]}
    props = {p.key: p.value for p in graph.metadata_props}
    assert props["classes"] == '["background", "a", "b"]'
    assert props["mean"] == "[0.5, 0.5, 0.5]" and props["std"] == "[0.25, 0.25, 0.25]"
    assert props["checkpoint_sha256"] == ckpt.sha256


def test_the_triton_folder_holds_the_model_its_config_and_labels(exported):
    _, out = exported
    folder = out / "tiny"  # the checkpoint's stem
    assert (folder / "1" / "model.onnx").read_bytes() == (out / "model.onnx").read_bytes()
    assert (folder / "labels.txt").read_text().splitlines() == CLASSES
    config = (folder / "config.pbtxt").read_text()
    for line in ['name: "tiny"', 'platform: "onnxruntime_onnx"', "max_batch_size: 8",
                 '{ name: "image", data_type: TYPE_FP32, dims: [ 3, -1, -1 ] }',
                 '{ name: "logits", data_type: TYPE_FP32, dims: [ 3, -1, -1 ] }',
                 '{ name: "mask", data_type: TYPE_UINT8, dims: [ -1, -1 ]']:
        assert line in config


def test_the_config_parses_with_tritons_own_schema(exported):
    # A fresh interpreter: tritonclient.grpc's protos and kserve's (imported by other tests)
    # register the same message names, which one process's descriptor pool refuses.
    _, out = exported
    code = ("import sys; from google.protobuf import text_format; "
            "from tritonclient.grpc import model_config_pb2 as m; "
            "c = text_format.Parse(open(sys.argv[1]).read(), m.ModelConfig()); "
            "print([(t.name, list(t.dims)) for t in [*c.input, *c.output]])")
    result = subprocess.run([sys.executable, "-c", code, str(out / "tiny" / "config.pbtxt")],
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ("[('image', [3, -1, -1]), ('logits', [3, -1, -1]), "
                                     "('mask', [-1, -1])]")


def test_name_and_max_batch_size_override_the_defaults(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "export_onnx", lambda ckpt: onnx.ModelProto())
    assert run_export(str(tiny_checkpoint), "--out", str(tmp_path), "--name", "roads",
                      "--max-batch-size", "2") == 0
    config = (tmp_path / "roads" / "config.pbtxt").read_text()
    assert 'name: "roads"' in config and "max_batch_size: 2" in config


def test_a_model_the_service_made_channels_last_exports_too(tiny_checkpoint):
    ckpt = load_checkpoint(tiny_checkpoint)
    ckpt.model.to(memory_format=torch.channels_last)
    assert export.export_onnx(ckpt, masks=False).graph.output[0].name == "logits"


@pytest.mark.parametrize(("content", "reason"), [(None, "no such file"),
                                                 (b"not a zip", "truncated or corrupt")])
def test_a_bad_checkpoint_is_one_line_naming_the_file(tmp_path, capsys, content, reason):
    path = tmp_path / "bad.pt"
    if content is not None:
        path.write_bytes(content)
    assert run_export(str(path), "--out", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and reason in err
    assert not (tmp_path / "out").exists()


def test_an_output_folder_that_cannot_be_made_is_one_line(tiny_checkpoint, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert run_export(str(tiny_checkpoint), "--out", str(blocker / "out")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(blocker) in err and "cannot create" in err
