import pytest
from pydantic import ValidationError

from app.settings import Settings, describe_validation_error


def error_line(**values) -> str:
    with pytest.raises(ValidationError) as info:
        Settings(**values)
    return describe_validation_error(info.value)


def test_defaults_match_the_documented_ones(monkeypatch):
    for name in ("DECONVSEG_CHECKPOINT", "DECONVSEG_PORT", "DECONVSEG_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    s = Settings()
    assert str(s.checkpoint) == "weights/model.pt" and s.port == 8000 and s.host == "127.0.0.1"
    assert s.device == "auto" and s.resolution == "native" and s.api_key is None
    assert (s.tile_size, s.tile_overlap) == (768, 64) and s.cors_origins == []


@pytest.mark.parametrize("name,value", [
    ("max_batch_size", 0), ("port", 70000), ("device", "tpu"), ("max_batch_delay_ms", -1),
    ("request_timeout_s", 0), ("resolution", "huge"), ("threads", 0), ("max_queue", 0),
])
def test_invalid_values_are_named_as_environment_variables(name, value):
    assert f"DECONVSEG_{name.upper()}=" in error_line(**{name: value})


def test_environment_is_read_with_the_prefix(monkeypatch):
    monkeypatch.setenv("DECONVSEG_MAX_BATCH_SIZE", "3")
    monkeypatch.setenv("DECONVSEG_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("DECONVSEG_CORS_ORIGINS", "http://a.example, http://b.example")
    s = Settings()
    assert s.max_batch_size == 3 and s.log_level == "debug"
    assert s.cors_origins == ["http://a.example", "http://b.example"]


def test_overlap_must_be_smaller_than_the_tile():
    assert "DECONVSEG_TILE_OVERLAP=64 must be smaller than DECONVSEG_TILE_SIZE=64" in error_line(
        tile_size=64, tile_overlap=64)


def test_pinned_sha256_must_be_a_digest():
    assert "DECONVSEG_PINNED_SHA256" in error_line(pinned_sha256="abc")
    assert Settings(pinned_sha256="A" * 64).pinned_sha256 == "a" * 64


def test_empty_api_key_means_no_key_and_a_bad_one_is_never_echoed():
    assert Settings(api_key="").api_key is None
    assert "<hidden>" in error_line(api_key=123)


@pytest.mark.parametrize(("values", "device_type", "expected"), [
    ({"threads": 2}, "cpu", 2),  # one worker per torch thread on CPU
    ({"threads": 16}, "cpu", 4),  # at most 4
    ({"threads": 16}, "cuda", 1),  # one worker feeds a GPU
    ({"threads": 16, "workers": 3}, "cpu", 3),  # an explicit setting wins
])
def test_worker_count_defaults_by_device(values, device_type, expected):
    assert Settings(**values).resolved_workers(device_type) == expected
