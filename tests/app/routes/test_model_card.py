from app.schemas import ModelCard


async def test_model_card_describes_checkpoint_input_policy_and_batching(client):
    card = ModelCard.model_validate((await client.get("/model")).json())
    assert card.name == "tiny" and len(card.sha256) == 64
    assert card.classes == ["background", "a", "b"] and len(card.palette) == 3
    assert card.normalization == {"mean": [0.5] * 3, "std": [0.25] * 3}
    assert card.train_size == 32 and card.metrics == {"val_miou": 0.5}
    assert card.input_policy["resolution"] == "native" and card.input_policy["tile_size"] == 64
    assert card.input_policy["max_pixels"] == 200_000
    assert card.batching["max_batch_size"] == 4 and card.batching["forward"] == "per_item"
    assert card.architecture["widths"] == [4, 8] and card.architecture["parameters"] > 0
    assert card.device == "cpu"


async def test_openapi_lists_every_route_with_its_error_statuses(client):
    spec = (await client.get("/openapi.json")).json()
    assert {"/segment", "/segment/batch", "/model", "/healthz", "/readyz", "/metrics"} <= set(
        spec["paths"])
    segment = spec["paths"]["/segment"]["post"]["responses"]
    assert {"200", "400", "413", "415", "422", "500", "503", "504"} <= set(segment)
    assert "image/png" in segment["200"]["content"]
    assert segment["413"]["content"]["application/json"]["example"]["error"]["code"]
    assert "503" in spec["paths"]["/readyz"]["get"]["responses"]
    assert "examples" in str(spec["components"]["schemas"]["SegmentResponse"])
    assert (await client.get("/docs")).status_code == 200
