"""The model repository served in-process: several models, versions, model control, swaps."""

import asyncio
import gc
import threading
import weakref

import pytest

from app.main import create_app
from app.pipeline import ModelVersion
from model.checkpoint import save_checkpoint
from tests.support.repository import add_version, write_config
from tests.support.service import (
    GatedVersion,
    entered,
    image_bytes,
    make_settings,
    post_image,
    running_client,
    serving,
)
from tests.tiny import CLASSES

ADMIN = {"X-Admin-Key": "sesame"}


def repo_app(root, factory=ModelVersion, **overrides):
    settings = make_settings("unused.pt", model_repository=root, admin_key="sesame", **overrides)
    return create_app(settings, factory=factory)


async def load(client, name):
    return await client.post(f"/v2/repository/models/{name}/load", headers=ADMIN)


def states(models_json, name):
    (model,) = [m for m in models_json if m["name"] == name]
    return {v["version"]: v["state"] for v in model["versions"]}


async def test_two_models_with_different_classes_serve_side_by_side(tmp_path):
    add_version(tmp_path, "roads", 1, classes=["background", "road"])
    add_version(tmp_path, "shapes", 1)
    async with running_client(repo_app(tmp_path)) as client:
        roads = await post_image(client, image_bytes(), fmt=None, name="a.png")
        shapes = await client.post("/models/shapes/segment",
                                   files={"file": ("a.png", image_bytes())})
        card = (await client.get("/models/shapes")).json()
        default_card = (await client.get("/model")).json()
    assert roads.json()["classes"] == ["background", "road"]  # first by name is the default
    assert roads.headers["x-model-name"] == "roads" and roads.headers["x-model-version"] == "1"
    assert shapes.json()["classes"] == CLASSES and shapes.headers["x-model-name"] == "shapes"
    assert len(card["palette"]) == 3 and len(default_card["palette"]) == 2
    assert card["name"] == "shapes" and card["version"] == 1


async def test_default_model_setting_chooses_the_unprefixed_model(tmp_path):
    add_version(tmp_path, "a", 1, classes=["background", "road"])
    add_version(tmp_path, "b", 1)
    async with running_client(repo_app(tmp_path, default_model="b")) as client:
        r = await post_image(client, image_bytes())
        models = (await client.get("/models")).json()
    assert r.headers["x-model-name"] == "b" and r.json()["model"]["version"] == 1
    assert [m["default"] for m in models] == [False, True]


async def test_loading_a_new_version_makes_it_serve_and_unloads_the_old(tmp_path):
    add_version(tmp_path, "seg", 1)
    async with running_client(repo_app(tmp_path)) as client:
        before = await post_image(client, image_bytes())
        add_version(tmp_path, "seg", 2, seed=1)
        loaded = await load(client, "seg")
        after = await post_image(client, image_bytes())
        pinned = await client.post("/models/seg/versions/1/segment",
                                   files={"file": ("a.png", image_bytes())})
        models = (await client.get("/models")).json()
    assert before.headers["x-model-version"] == "1" and after.headers["x-model-version"] == "2"
    assert loaded.status_code == 200 and loaded.json()["serving_version"] == 2
    assert states(models, "seg") == {1: "unavailable", 2: "ready"}
    assert pinned.status_code == 503 and pinned.json()["error"]["code"] == "model_not_ready"


async def test_a_request_admitted_before_the_switch_finishes_on_its_version(tmp_path):
    add_version(tmp_path, "seg", 1)
    async with running_client(repo_app(tmp_path, factory=GatedVersion)) as client:
        old = serving(client._transport.app)
        inflight = asyncio.create_task(post_image(client, image_bytes()))
        await entered(old)  # admitted to version 1, held inside predict
        add_version(tmp_path, "seg", 2, seed=1)
        loaded = await load(client, "seg")
        new = serving(client._transport.app)
        new.gate.set()
        during = (await client.get("/models")).json()
        later = asyncio.create_task(post_image(client, image_bytes()))  # queues behind v1's
        old.gate.set()
        first, after = await inflight, await later
        finished = (await client.get("/models")).json()
    assert loaded.status_code == 200 and new.number == 2
    assert states(during, "seg") == {1: "unloading", 2: "ready"}
    assert first.status_code == 200 and first.headers["x-model-version"] == "1"
    assert after.headers["x-model-version"] == "2"
    assert states(finished, "seg") == {1: "unavailable", 2: "ready"}


async def test_an_unloaded_version_is_freed(tmp_path):
    add_version(tmp_path, "seg", 1)
    async with running_client(repo_app(tmp_path)) as client:
        old = weakref.ref(serving(client._transport.app))
        await post_image(client, image_bytes())
        add_version(tmp_path, "seg", 2, seed=1)
        assert (await load(client, "seg")).status_code == 200
        gc.collect()
        assert old() is None


@pytest.mark.parametrize(("breakage", "reason"), [
    ("truncated", "truncated or corrupt"),
    ("pickle", "refused: it holds objects outside the safe weights-only allowlist"),
    ("pinned", "does not match the pinned"),
    ("classes", "the checkpoint has 2 classes"),
    ("empty", "no model.pt in the version folder"),
])
async def test_a_broken_new_version_is_refused_and_the_old_keeps_serving(tmp_path, breakage,
                                                                         reason):
    add_version(tmp_path, "seg", 2)
    if breakage == "pinned":
        write_config(tmp_path, "seg", sha256={"3": "0" * 64})
    if breakage == "classes":
        write_config(tmp_path, "seg", classes=CLASSES)
    async with running_client(repo_app(tmp_path)) as client:
        path = tmp_path / "seg" / "3" / "model.pt"
        path.parent.mkdir(parents=True)
        if breakage == "truncated":
            path.write_bytes((tmp_path / "seg" / "2" / "model.pt").read_bytes()[:900])
        elif breakage == "pickle":
            save_checkpoint(path, {"format": threading.Lock})  # a global outside the allowlist
        elif breakage in ("pinned",):
            add_version(tmp_path, "seg", 3, seed=1)
        elif breakage == "classes":
            add_version(tmp_path, "seg", 3, classes=["background", "road"])
        refused = await load(client, "seg")
        served = await post_image(client, image_bytes())
        models = (await client.get("/models")).json()
    assert refused.status_code == 400  # Triton's error shape under /v2: a string, code first
    assert refused.json()["error"].startswith("load_failed: ") and reason in refused.text
    assert served.status_code == 200 and served.headers["x-model-version"] == "2"
    (version3,) = [v for v in models[0]["versions"] if v["version"] == 3]
    assert version3["state"] == "unavailable" and reason in version3["reason"]


async def test_a_config_with_an_unknown_key_fails_that_model_only(tmp_path):
    add_version(tmp_path, "good", 1)
    add_version(tmp_path, "bad", 1)
    write_config(tmp_path, "bad", max_batch_sise=4)
    async with running_client(repo_app(tmp_path)) as client:
        good = await post_image(client, image_bytes())
        bad = await client.post("/models/bad/segment", files={"file": ("a.png", image_bytes())})
        models = (await client.get("/models")).json()
        reload = await load(client, "bad")
    assert good.status_code == 200 and good.headers["x-model-name"] == "good"
    assert bad.status_code == 503 and "unknown key 'max_batch_sise'" in bad.text
    assert "unknown key 'max_batch_sise'" in models[0]["problems"][0]
    assert reload.status_code == 400 and "max_batch_sise" in reload.text


class SlowWarmUp(ModelVersion):
    """Warm-up of any version above 1 waits for `release` (set by the test)."""

    release = threading.Event()
    warming = threading.Event()

    def warm_up(self, threads):
        if self.number > 1:
            SlowWarmUp.warming.set()
            assert SlowWarmUp.release.wait(10)
        super().warm_up(threads)


async def test_a_second_load_of_the_same_model_is_refused_while_the_first_runs(tmp_path):
    SlowWarmUp.release.clear()
    SlowWarmUp.warming.clear()
    add_version(tmp_path, "seg", 1)
    async with running_client(repo_app(tmp_path, factory=SlowWarmUp)) as client:
        add_version(tmp_path, "seg", 2, seed=1)
        first = asyncio.create_task(load(client, "seg"))
        assert await asyncio.to_thread(SlowWarmUp.warming.wait, 10)
        second = await load(client, "seg")
        loading = await client.post("/models/seg/versions/2/segment",
                                    files={"file": ("a.png", image_bytes())})
        still_v1 = await post_image(client, image_bytes())
        SlowWarmUp.release.set()
        done = await first
    assert second.status_code == 409
    assert second.json()["error"].startswith("load_in_progress: ")
    assert loading.status_code == 503 and loading.headers["retry-after"] == "1"
    assert loading.json()["error"]["code"] == "model_not_ready"
    assert still_v1.headers["x-model-version"] == "1"
    assert done.status_code == 200 and done.json()["serving_version"] == 2


async def test_loads_beyond_the_version_limit_are_refused(tmp_path):
    add_version(tmp_path, "a", 1)
    add_version(tmp_path, "b", 1)
    write_config(tmp_path, "b", version_policy="all")
    async with running_client(repo_app(tmp_path, max_loaded_versions=2)) as client:
        add_version(tmp_path, "b", 2)
        refused = await load(client, "b")
        models = (await client.get("/models")).json()
    assert refused.status_code == 409
    assert refused.json()["error"].startswith("too_many_versions: ")
    assert "the limit is 2" in refused.text
    assert states(models, "b") == {1: "ready", 2: "unavailable"}


async def test_unload_stops_the_model_and_load_brings_it_back(tmp_path):
    add_version(tmp_path, "seg", 1)
    async with running_client(repo_app(tmp_path)) as client:
        unloaded = await client.post("/v2/repository/models/seg/unload", headers=ADMIN)
        refused = await post_image(client, image_bytes())
        index = (await client.post("/v2/repository/index", headers=ADMIN)).json()
        back = await load(client, "seg")
        served = await post_image(client, image_bytes())
    assert unloaded.status_code == 200 and unloaded.json()["serving_version"] is None
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "model_not_ready"
    assert index == [{"name": "seg", "version": 1, "state": "unavailable", "reason": "unloaded"}]
    assert back.status_code == 200 and served.status_code == 200


async def test_unknown_models_and_versions_are_404_with_their_codes(tmp_path):
    add_version(tmp_path, "seg", 1)
    async with running_client(repo_app(tmp_path)) as client:
        model = await client.post("/models/nope/segment", files={"file": ("a", image_bytes())})
        version = await client.post("/models/seg/versions/9/segment",
                                    files={"file": ("a", image_bytes())})
        card = await client.get("/models/nope")
        control = await load(client, "nope")
    assert model.status_code == 404 and model.json()["error"]["code"] == "model_not_found"
    assert version.status_code == 404 and version.json()["error"]["code"] == "version_not_found"
    assert card.status_code == 404 and control.status_code == 404


async def test_a_model_folder_added_later_is_loaded_on_request(tmp_path):
    add_version(tmp_path, "seg", 1)
    async with running_client(repo_app(tmp_path)) as client:
        add_version(tmp_path, "late", 1, classes=["background", "road"])
        loaded = await load(client, "late")
        r = await client.post("/models/late/segment", files={"file": ("a", image_bytes())})
    assert loaded.status_code == 200 and r.json()["classes"] == ["background", "road"]


@pytest.mark.parametrize("headers", [{}, {"X-Admin-Key": "wrong"}, {"X-API-Key": "sesame"},
                                     {"Authorization": "Bearer Sesame"}])
async def test_model_control_needs_the_admin_key(tmp_path, headers):
    add_version(tmp_path, "seg", 1)
    async with running_client(repo_app(tmp_path)) as client:
        r = await client.post("/v2/repository/index", headers=headers)
    assert r.status_code == 401 and "admin key" in r.json()["error"]


async def test_the_admin_key_also_works_as_a_bearer_token_and_is_not_the_api_key(tmp_path):
    add_version(tmp_path, "seg", 1)
    app = repo_app(tmp_path, api_key="opensesame")
    async with running_client(app) as client:
        control = await client.post("/v2/repository/index",
                                    headers={"Authorization": "Bearer sesame"})
        upload = await client.post("/segment", files={"file": ("a", image_bytes())},
                                   headers={"Authorization": "Bearer sesame"})
    assert control.status_code == 200 and upload.status_code == 401


async def test_model_control_is_absent_without_an_admin_key(tiny_checkpoint):
    async with running_client(create_app(make_settings(tiny_checkpoint))) as client:
        r = await client.post("/v2/repository/index")
        paths = (await client.get("/openapi.json")).json()["paths"]
    assert r.status_code == 404 and not any(p.startswith("/v2/repository") for p in paths)


async def test_reloading_a_version_that_still_drains_keeps_the_new_one_ready(tmp_path):
    add_version(tmp_path, "seg", 1)
    async with running_client(repo_app(tmp_path, factory=GatedVersion)) as client:
        old = serving(client._transport.app)
        inflight = asyncio.create_task(post_image(client, image_bytes()))
        await entered(old)  # version 1 is held by a request
        unloaded = await client.post("/v2/repository/models/seg/unload", headers=ADMIN)
        reloaded = await load(client, "seg")
        new = serving(client._transport.app)
        old.gate.set()
        assert (await inflight).headers["x-model-version"] == "1"
        new.gate.set()
        after = await post_image(client, image_bytes())
        models = (await client.get("/models")).json()
    assert unloaded.json()["versions"][0]["state"] == "unloading"
    assert reloaded.status_code == 200 and new is not old
    assert after.status_code == 200 and states(models, "seg") == {1: "ready"}
