import pytest
from django.contrib.auth.models import User

from tests.factories import make_user


@pytest.fixture
def people(db) -> tuple[User, User, User]:
    """Who runs an unlock: the scheduler and the two other staff members who approve it."""
    return (
        make_user("scheduler", is_staff=True),
        make_user("alice", is_staff=True),
        make_user("bob", is_staff=True),
    )
