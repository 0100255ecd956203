import pytest

from app.main import create_app
from tests.support.service import make_settings, running_client


@pytest.fixture
def settings(tiny_checkpoint):
    return make_settings(tiny_checkpoint)


@pytest.fixture
async def client(settings):
    async with running_client(create_app(settings)) as c:
        yield c
