from tests.support.service import image_bytes, post_image


async def test_metrics_count_requests_by_route_template_and_status(client):
    await post_image(client, image_bytes())
    await client.get("/no/such/route")
    text = (await client.get("/metrics")).text
    assert 'deconvseg_requests_total{route="/segment",status="200"} 1.0' in text
    assert 'deconvseg_requests_total{route="unmatched",status="404"} 1.0' in text
    for stage in ("decode", "queue", "inference", "encode"):
        assert (f'deconvseg_stage_seconds_count{{model="tiny",stage="{stage}",version="1"}} 1.0'
                in text)
    assert 'deconvseg_batch_size_count{model="tiny",version="1"} 1.0' in text
    assert 'deconvseg_model_ready{model="tiny",version="1"} 1.0' in text
    assert "deconvseg_queue_depth 0.0" in text and "deconvseg_ready 1.0" in text
