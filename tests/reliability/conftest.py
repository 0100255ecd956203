import pytest

from app.main import create_app
from app.settings import Settings
from tests.support.service import make_settings, running_client

# The size limits as shipped, so the corpus meets the defaults users get.
DEFAULT_LIMITS = {name: Settings.model_fields[name].default
                  for name in ("max_pixels", "max_side", "max_upload_bytes")}


@pytest.fixture
def settings(tiny_checkpoint):
    return make_settings(tiny_checkpoint, **DEFAULT_LIMITS)


@pytest.fixture
async def client(settings):
    async with running_client(create_app(settings)) as c:
        yield c
