import re

import numpy as np
import pytest
import torch

from app.inference import InferenceOptions, Segmenter, resolve_device
from model.checkpoint import load_checkpoint
from model.tiling import sliding_window_mask, top_probability
from model.transforms import preprocess


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    return load_checkpoint(tiny_checkpoint)


def segmenter(checkpoint, **options) -> Segmenter:
    return Segmenter(checkpoint, InferenceOptions(**options), torch.device("cpu"))


def random_image(height, width, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def normalised_by_hand(batch: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """(x / 255 − mean) / std, written out here rather than through the service's code."""
    return ((batch.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1))
            / torch.tensor(std).view(1, 3, 1, 1))


@pytest.mark.parametrize(("cpu_bf16", "cuda_bf16"), [(True, False), (False, True)])
def test_auto_backend_is_bf16_only_where_the_device_computes_it(monkeypatch, cpu_bf16,
                                                                 cuda_bf16):
    """A named backend is kept as it is; `auto` asks the device that will run it, and is
    fp32 for onnxruntime whatever the device can do."""
    from app.inference import resolve_backend
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: cpu_bf16)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: cuda_bf16)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert [resolve_backend(name, device) for name in ("fp32", "bf16")
            for device in (cpu, cuda)] == ["fp32", "fp32", "bf16", "bf16"]
    expected = {True: "bf16", False: "fp32"}
    assert resolve_backend("auto", cpu) == expected[cpu_bf16]
    assert resolve_backend("auto", cuda) == expected[cuda_bf16]
    assert resolve_backend("auto", cpu, "onnxruntime") == "fp32"


def test_cuda_without_a_gpu_is_refused_with_the_setting_name(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(RuntimeError, match=re.escape(
            "DECONVSEG_DEVICE=cuda, but torch sees no CUDA device; use auto or cpu")):
        resolve_device("cuda")


def test_auto_device_is_cuda_where_torch_sees_one_and_a_named_device_is_kept(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("engine", ["eager", "torchscript"])
@pytest.mark.parametrize("stacked", [False, True])
def test_batched_masks_equal_single_request_masks(checkpoint, stacked, engine):
    seg = segmenter(checkpoint, stacked=stacked, engine=engine)
    items = [seg.prepare(random_image(24, 40, seed=i)) for i in range(4)]
    singles = [seg.predict([item])[0] for item in items]
    batched = seg.predict(items)
    for alone, together in zip(singles, batched, strict=True):
        assert np.array_equal(alone, together)


@pytest.mark.parametrize("engine", ["eager", "torchscript"])
@pytest.mark.parametrize("resolution", ["native", "resize"])
@pytest.mark.parametrize("size", [(1, 1), (7, 600), (33, 17), (600, 7)])
def test_mask_has_the_upload_size(checkpoint, resolution, size, engine):
    seg = segmenter(checkpoint, resolution=resolution, tile_size=64, tile_overlap=8,
                    engine=engine)
    mask = seg.predict([seg.prepare(random_image(*size))])[0]
    assert mask.shape == size and mask.dtype == np.uint8 and mask.max() < 3


@pytest.mark.parametrize("size", [(1, 1), (31, 64), (64, 31), (200, 90)])
def test_torchscript_fp32_masks_equal_eager_masks_at_any_shape(checkpoint, size):
    eager, scripted = segmenter(checkpoint), segmenter(checkpoint, engine="torchscript")
    item = eager.prepare(random_image(*size))
    assert np.array_equal(eager.predict([item])[0], scripted.predict([item])[0])


def test_resize_policy_infers_at_the_training_size(checkpoint):
    seg = segmenter(checkpoint, resolution="resize")
    item = seg.prepare(random_image(48, 64))
    assert item.shape == (24, 32) and (item.height, item.width) == (48, 64)  # train_size 32


def test_images_larger_than_a_tile_use_the_sliding_window(checkpoint):
    seg = segmenter(checkpoint, tile_size=32, tile_overlap=8, tile_batch_size=3)
    image = random_image(70, 100)
    item = seg.prepare(image)
    assert item.tensor.dtype == torch.uint8  # kept raw; the forward normalises each tile
    normalised = preprocess(image, seg.ckpt.mean, seg.ckpt.std)[None]
    expected = sliding_window_mask(seg.model, normalised, tile=32, overlap=8,
                                   batch_size=3).numpy()
    assert np.array_equal(seg.predict([item])[0], expected)
    # rows: 3 tiles of 29 px for 70; columns: 4 tiles of 31 px for 100
    assert seg.padding_ratio([item]) == pytest.approx(1 - 70 * 100 / (3 * 29 * 4 * 31))


def test_buckets_group_exact_shapes_and_isolate_tiled_images(checkpoint):
    seg = segmenter(checkpoint, tile_size=32, tile_overlap=8)
    a, b = (seg.prepare(random_image(20, 30, seed=s)) for s in (0, 1))
    big1, big2 = (seg.prepare(random_image(40, 40, seed=s)) for s in (0, 1))
    assert seg.bucket(a) == seg.bucket(b) == ((20, 30), False, False)
    b.probabilities = True  # asking for probabilities takes another path: another batch
    assert seg.bucket(b) != seg.bucket(a)
    b.probabilities, b.confidence = False, True  # and so does asking for confidence
    assert seg.bucket(b) != seg.bucket(a)
    assert seg.bucket(seg.prepare(random_image(30, 20))) != seg.bucket(a)
    assert seg.bucket(big1) != seg.bucket(big2)
    assert seg.padding_ratio([a, b]) == 0.0


@pytest.mark.parametrize(("stacked", "max_batch_size", "batches"),
                         [(True, 2, [1, 1, 1, 2]), (True, 1, [1, 1, 1]), (False, 4, [1, 1, 1])])
def test_warm_up_runs_the_shapes_the_service_will_see(checkpoint, stacked, max_batch_size,
                                                      batches):
    """Three single uint8 images (TorchScript optimises on the second call), then a stacked
    batch of the largest size when batches are stacked; per-item batches run single images."""
    seg = segmenter(checkpoint, stacked=stacked, tile_size=64)
    seen: list[tuple[tuple[int, ...], torch.dtype]] = []
    network = seg._net

    def recording(batch):
        seen.append((tuple(batch.shape), batch.dtype))
        return network(batch)

    seg._net = recording
    seg.warm_up(max_batch_size=max_batch_size)
    side = min(checkpoint.train_size, 64)
    assert seen == [((n, 3, side, side), torch.uint8) for n in batches]


@pytest.mark.parametrize(("size", "options"), [
    ((20, 30), {}), ((70, 50), {"tile_size": 32, "tile_overlap": 8}),
    ((90, 60), {"resolution": "resize"}),
], ids=["whole", "tiled", "resized"])
def test_probabilities_come_with_the_same_mask_and_sum_to_one(checkpoint, size, options):
    seg = segmenter(checkpoint, **options)
    item = seg.prepare(random_image(*size, seed=3))
    mask, probabilities, _ = seg.probabilities(item)
    assert np.array_equal(mask, seg.predict([item])[0])
    assert probabilities.dtype == np.float16 and probabilities.shape == (3, *size)
    assert np.allclose(probabilities.astype(np.float32).sum(axis=0), 1, atol=3e-3)


@pytest.mark.parametrize(("size", "options"), [
    ((20, 30), {}), ((70, 50), {"tile_size": 32, "tile_overlap": 8}),
    ((90, 60), {"resolution": "resize"}),
], ids=["whole", "tiled", "resized"])
def test_confidence_is_the_top_probability_times_255(checkpoint, size, options):
    seg = segmenter(checkpoint, **options)
    item = seg.prepare(random_image(*size, seed=4))
    mask, probabilities, _ = seg.probabilities(item)
    ((same_mask, confidence),) = seg.predict_with_confidence([item])
    assert np.array_equal(same_mask, mask) and confidence.dtype == np.uint8
    expected = np.rint(probabilities.astype(np.float32).max(axis=0) * 255)
    assert np.abs(confidence.astype(np.int16) - expected).max() <= 1  # float16 probabilities
    assert np.array_equal(probabilities.argmax(axis=0), mask)


def test_confidence_is_255_only_where_the_top_probability_rounds_to_one():
    logits = torch.tensor([[0.0, 0.0, 10.0, 3.0]]).T.reshape(1, 4, 1, 1).repeat(1, 1, 1, 3)
    logits[0, :, 0, 1] = torch.tensor([0.0, 0.0, 0.0, 0.0])  # a four-way tie: 0.25
    logits[0, :, 0, 2] = torch.tensor([0.0, 20.0, 0.0, 0.0])  # certain
    top = top_probability(logits)[0, 0].tolist()
    probability = torch.softmax(torch.tensor([0.0, 0.0, 10.0, 3.0]), 0).max().item()
    assert top == [round(probability * 255), 64, 255]
    assert (top[0] == 255) == (round(probability * 255) == 255)


def test_a_resized_image_over_the_tile_size_is_tiled_then_brought_to_the_upload_size(checkpoint):
    """resize policy, train_size 32 > tile 16: the resized pixels run as tiles, and the
    stitched logits are resized to the upload before the argmax."""
    from model.tiling import sliding_window_logits
    seg = segmenter(checkpoint, resolution="resize", tile_size=16, tile_overlap=4)
    item = seg.prepare(random_image(48, 64))
    assert item.shape == (24, 32) and item.tensor.dtype == torch.uint8 and seg.needs_tiling(item)
    normalised = preprocess(item.tensor, seg.ckpt.mean, seg.ckpt.std)[None]
    with torch.inference_mode():
        logits = sliding_window_logits(seg.model, normalised, 3, tile=16, overlap=4)
        logits = torch.nn.functional.interpolate(logits, size=(48, 64), mode="bilinear",
                                                 align_corners=False)
    (mask, top), = seg.predict_with_confidence([item])
    assert np.array_equal(mask, logits[0].argmax(0).numpy().astype(np.uint8))
    assert np.array_equal(top, top_probability(logits)[0].numpy())
    assert np.array_equal(seg.predict([item])[0], mask)


def test_tiled_probabilities_are_the_softmax_of_the_stitched_logits(checkpoint):
    """Not of one forward over the whole image, which differs near the seams."""
    from model.tiling import sliding_window_logits
    seg = segmenter(checkpoint, tile_size=32, tile_overlap=8)
    item = seg.prepare(random_image(70, 50, seed=5))
    assert seg.needs_tiling(item)
    normalised = preprocess(item.tensor, seg.ckpt.mean, seg.ckpt.std)[None]
    with torch.inference_mode():
        logits = sliding_window_logits(seg.model, normalised, 3, tile=32, overlap=8)
        whole = seg.model(normalised)
    _, probabilities, _ = seg.probabilities(item)
    assert np.array_equal(probabilities, logits[0].softmax(0).half().numpy())
    assert not torch.equal(whole, logits)  # the two really differ here


def test_probabilities_give_a_uint8_mask_that_is_their_argmax(checkpoint):
    seg = segmenter(checkpoint)
    mask, probs, top = seg.probabilities(seg.prepare(random_image(20, 30)))
    assert mask.dtype == np.uint8 and probs.dtype == np.float16 and top.dtype == np.uint8
    assert np.array_equal(mask, probs.astype(np.float32).argmax(0))


@pytest.mark.parametrize("engine", ["eager", "torchscript"])
def test_forward_is_the_network_on_pixels_normalised_with_the_checkpoints_mean_and_std(
        checkpoint, engine):
    """Written out by hand, not through the service's preprocessing: (x / 255 − mean) / std."""
    from dataclasses import replace
    mean, std = [0.2, 0.5, 0.7], [0.1, 0.3, 0.2]  # not the tiny checkpoint's 0.5 / 0.25
    seg = segmenter(replace(checkpoint, mean=mean, std=std), engine=engine)
    batch = torch.randint(0, 256, (2, 3, 16, 24), dtype=torch.uint8)
    with torch.inference_mode():
        expected = checkpoint.model(normalised_by_hand(batch, mean, std))
    torch.testing.assert_close(seg.forward(batch), expected, rtol=1e-4, atol=1e-5)


def test_an_upload_already_at_the_training_size_is_tiled_as_the_normalised_tensor(checkpoint):
    """resize policy, long side = train_size 32 > tile 16: no resize, so the pixels run through
    the memory-bounded tiled path, normalised once."""
    seg = segmenter(checkpoint, resolution="resize", tile_size=16, tile_overlap=4)
    image = random_image(24, 32)
    item = seg.prepare(image)
    assert item.shape == (24, 32) and np.array_equal(item.tensor.permute(1, 2, 0).numpy(), image)
    with torch.inference_mode():
        expected = sliding_window_mask(seg.model, preprocess(image, seg.ckpt.mean,
                                                             seg.ckpt.std)[None],
                                       tile=16, overlap=4).numpy()
    assert np.array_equal(seg.predict([item])[0], expected)


def test_an_image_exactly_the_tile_size_is_not_tiled(checkpoint):
    seg = segmenter(checkpoint, tile_size=32, tile_overlap=8)
    seen: list[tuple[int, ...]] = []
    network = seg._net
    seg._net = lambda batch: seen.append(tuple(batch.shape)) or network(batch)
    seg.predict([seg.prepare(random_image(32, 20))])
    assert seen == [(1, 3, 32, 20)]  # one forward of the whole image
    seen.clear()
    seg.predict([seg.prepare(random_image(33, 20))])
    assert len(seen) == 2 and all(shape[2] < 33 for shape in seen)  # two tiles of rows


@pytest.mark.parametrize(("size", "shape"), [((1, 600), (1, 32)), ((600, 1), (32, 1))])
def test_resizing_never_drops_a_side_below_one_pixel(checkpoint, size, shape):
    seg = segmenter(checkpoint, resolution="resize")
    assert seg.prepare(random_image(*size)).shape == shape


def test_downscaling_to_the_training_size_is_antialiased_bilinear(checkpoint):
    """Against Pillow's bilinear resize, which widens its filter when reducing."""
    from PIL import Image
    seg = segmenter(checkpoint, resolution="resize")
    image = np.kron(random_image(16, 12), np.ones((4, 4, 1), np.uint8))  # 64×48, smooth-ish
    expected = np.asarray(Image.fromarray(image).resize((24, 32), Image.Resampling.BILINEAR))
    resized = seg.prepare(image).tensor.permute(1, 2, 0).numpy()
    assert resized.shape == (32, 24, 3)
    assert np.abs(resized.astype(int) - expected.astype(int)).max() <= 1


def test_a_read_only_upload_over_the_tile_size_is_prepared_without_a_warning(checkpoint):
    import warnings
    seg = segmenter(checkpoint, tile_size=32, tile_overlap=8)
    image = random_image(40, 50)
    image.flags.writeable = False  # as decoded uploads can be
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert seg.prepare(image).tensor.dtype == torch.uint8


def test_a_checkpoint_of_256_classes_is_served_and_one_of_257_is_refused(checkpoint):
    """Masks are uint8: class indices 0..255."""
    from dataclasses import replace

    from model.checkpoint import CheckpointError
    fits = replace(checkpoint, classes=[f"c{i}" for i in range(256)])
    assert len(Segmenter(fits, InferenceOptions(engine="eager"), torch.device("cpu"))
               .ckpt.classes) == 256
    over = replace(checkpoint, classes=[f"c{i}" for i in range(257)])
    with pytest.raises(CheckpointError, match=re.escape(
            f"{over.path}: 257 classes do not fit the 8-bit masks this service returns "
            "(at most 256)")):
        Segmenter(over, InferenceOptions(engine="eager"), torch.device("cpu"))


@pytest.mark.parametrize("engine", ["eager", "torchscript"])
@pytest.mark.parametrize("backend", ["fp32", "bf16"])
def test_logits_are_computed_in_the_backends_dtype(checkpoint, backend, engine):
    """bf16 logits survive a round trip through bf16 unchanged; fp32 ones do not."""
    seg = segmenter(checkpoint, backend=backend, engine=engine)
    logits = seg.forward(torch.randint(0, 256, (1, 3, 16, 24), dtype=torch.uint8))
    assert logits.dtype == torch.float32
    assert torch.equal(logits, logits.bfloat16().float()) == (backend == "bf16")


def test_eager_bf16_is_the_network_under_bf16_autocast_on_normalised_pixels(checkpoint):
    from dataclasses import replace
    mean, std = [0.2, 0.5, 0.7], [0.1, 0.3, 0.2]
    seg = segmenter(replace(checkpoint, mean=mean, std=std), backend="bf16")
    batch = torch.randint(0, 256, (2, 3, 16, 24), dtype=torch.uint8)
    normalised = normalised_by_hand(batch, mean, std)
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        expected = checkpoint.model(normalised.contiguous(memory_format=torch.channels_last))
    assert torch.equal(seg.forward(batch), expected.float())


def test_freezing_hides_torch_jits_deprecation_warning_and_leaves_the_eager_model_in_fp32(
        checkpoint):
    import warnings

    from app.inference import freeze_torchscript
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        frozen = freeze_torchscript(checkpoint.model, torch.bfloat16)
    assert isinstance(frozen, torch.jit.ScriptModule)
    assert {p.dtype for p in checkpoint.model.parameters()} == {torch.float32}
