"""Per-servable batching settings over the API: kept with the servable, validated."""

from __future__ import annotations

from tests.integration.api.conftest import HarnessFactory
from tests.payloads import serve_body


async def test_batching_settings_are_kept_and_validated(harness_factory: HarnessFactory) -> None:
    harness = await harness_factory()
    body = serve_body("v1")
    body["servableSettings"]["batchingSettings"] = {"maxBatchSize": 4}
    assert (await harness.client.post("/servable", json=body)).status_code == 201
    settings = await harness.client.get("/samples/energy_output/0/v1/settings")
    assert settings.json()["ServableSettings"]["batchingSettings"] == {"maxBatchSize": 4}

    body = serve_body("v2")
    body["servableSettings"]["batchingSettings"] = {"maxBatchSize": 0}
    refused = await harness.client.post("/servable", json=body)
    assert refused.status_code == 422, refused.text
    assert refused.json()["CreateServableRequestInvalidError"]["field"].endswith("maxBatchSize")


async def test_batching_settings_survive_a_restart(harness_factory: HarnessFactory) -> None:
    first = await harness_factory()
    body = serve_body("v1")
    body["servableSettings"]["batchingSettings"] = {"maxBatchSize": 3}
    assert (await first.client.post("/servable", json=body)).status_code == 201
    await first.app.shutdown()

    again = await harness_factory(data_dir=first.app.settings.data_dir)
    settings = await again.client.get("/samples/energy_output/0/v1/settings")
    assert settings.json()["ServableSettings"]["batchingSettings"] == {"maxBatchSize": 3}
    slot = again.app.runner._slots[next(iter(again.app.runner._slots))]  # type: ignore[attr-defined]
    assert slot.batcher._max_batch_size == 3
