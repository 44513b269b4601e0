import pytest
from rest_framework.test import APIClient

from annotation.roles import ADMIN, LABELER, RESEARCHER
from tests.factories import ProjectFactory, user_with_role
from tests.s3_server import s3_server, s3_store  # noqa: F401 - fixtures for the artifact store tests
from tests.tiny_models import build_lora_adapter, build_tiny_model


@pytest.fixture
def admin_user(db):
    return user_with_role(ADMIN, "alice-admin")


@pytest.fixture
def labeler(db):
    return user_with_role(LABELER, "larry-labeler")


@pytest.fixture
def researcher(db):
    return user_with_role(RESEARCHER, "rita-researcher")


@pytest.fixture
def users(admin_user, labeler, researcher):
    return {"admin": admin_user, "labeler": labeler, "researcher": researcher}


@pytest.fixture
def project(db):
    return ProjectFactory(slug="demo-project", name="Demo project")


@pytest.fixture
def api_client():
    return APIClient()


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Permissions are cached per user id, and ids are reused from test to test."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def celery_worker(transactional_db):
    from tests.worker import Worker

    worker = Worker()
    yield worker
    worker.stop()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-model")))


@pytest.fixture(scope="session")
def tiny_adapter(tiny_model, tmp_path_factory):
    return str(build_lora_adapter(tiny_model, tmp_path_factory.mktemp("tiny-adapter")))
