import json

import pytest

from app.model_config import ConfigError, ModelConfig, ServingOptions, read_config
from app.settings import Settings


def test_absent_config_means_every_server_default(tmp_path):
    options = ServingOptions.resolve(read_config(tmp_path / "config.json"), Settings())
    assert options.max_batch_size == Settings().max_batch_size
    assert options.tile_size == Settings().tile_size


def test_a_model_key_overrides_the_server_setting_and_leaves_the_rest():
    options = ServingOptions.resolve(ModelConfig(max_batch_size=2, engine="eager"),
                                     Settings(max_batch_size=16, tile_size=256))
    assert (options.max_batch_size, options.engine, options.tile_size) == (2, "eager", 256)


def test_unknown_key_is_refused_naming_the_key(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"max_batch_sise": 4}))
    with pytest.raises(ConfigError, match=r"config.json: unknown key 'max_batch_sise'"):
        read_config(tmp_path / "config.json")


def test_model_keys_keep_the_server_settings_bounds(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"max_batch_size": 0}))
    with pytest.raises(ConfigError, match="max_batch_size: Input should be greater than"):
        read_config(tmp_path / "config.json")


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_unreadable_config_names_the_file(tmp_path, text):
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ConfigError, match=str(tmp_path / "config.json")):
        read_config(tmp_path / "config.json")


def test_overlap_must_stay_below_the_tile_after_merging():
    with pytest.raises(ConfigError, match="tile_overlap 300 must be smaller than tile_size 256"):
        ServingOptions.resolve(ModelConfig(tile_size=256), Settings(tile_overlap=300,
                                                                    tile_size=512))


@pytest.mark.parametrize(("policy", "expected"), [
    ("latest", {3}), ("all", {1, 2, 3}), ([1, 3, 7], {1, 3}),
])
def test_version_policy_selects_among_the_versions_on_disk(policy, expected):
    assert ModelConfig(version_policy=policy).select({1, 2, 3}) == expected


def test_version_policy_of_an_empty_model_selects_nothing():
    assert ModelConfig().select(set()) == set()
