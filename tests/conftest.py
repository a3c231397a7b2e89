"""Fixed people for every test: anonymous, a developer with no special rights (`outsider`), a
staff member who runs releases and reviews access (`staff`: tests/factories.MANAGER_PERMISSIONS)
and an admin. Data is made through the project's own services."""

import uuid

import pytest
from django.contrib.auth.models import AnonymousUser, User
from rest_framework.test import APIClient

from tests.celery_worker import route_tasks_to_test_queue
from tests.factories import make_manager, make_user


@pytest.fixture(scope="session", autouse=True)
def _celery_test_queue():
    """Tasks published by tests go to a queue of this session's own, never to a demo worker."""
    route_tasks_to_test_queue()


@pytest.fixture
def anonymous() -> AnonymousUser:
    return AnonymousUser()


@pytest.fixture
def outsider(db) -> User:
    return make_user("outsider")


@pytest.fixture
def staff(db) -> User:
    return make_manager("staff")


@pytest.fixture
def admin_user(db) -> User:
    return make_user("admin", is_staff=True, is_superuser=True)


@pytest.fixture
def api() -> APIClient:
    return APIClient()


@pytest.fixture(autouse=True)
def _cache_of_its_own(settings):
    """Redis outlives each test's rolled-back database and is shared with other runs: each test
    gets a key prefix of its own, so nothing cached by another test (a revocation list signed by
    a key that no longer exists, say) leaks in."""
    settings.CACHES = {
        "default": {**settings.CACHES["default"], "KEY_PREFIX": f"test-{uuid.uuid4().hex}"}
    }


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """Test users' passwords protect nothing; PBKDF2's deliberate slowness would dominate."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _plain_static_files(settings, tmp_path_factory):
    """Tests render admin pages without running collectstatic first."""
    settings.STATIC_ROOT = tmp_path_factory.getbasetemp() / "static"
    settings.STATIC_ROOT.mkdir(exist_ok=True)
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
