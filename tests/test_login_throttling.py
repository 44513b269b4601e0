"""Password guessing: after PREFLOOP_LOGIN_FAILURE_LIMIT wrong passwords for one username from one address, the
login page and the token endpoint refuse that pair (even with the right password) until the cool-off ends; the same
user from another address, and other users, are not affected."""

import pytest
from django.conf import settings
from django.urls import reverse

from tests.factories import user_with_role

pytestmark = pytest.mark.django_db

ATTACKER = "203.0.113.7"
OFFICE = "198.51.100.20"


def log_in_page(client, username, password, address):
    return client.post(reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=address)


def token(client, username, password, address):
    return client.post(reverse("api_token"), {"username": username, "password": password}, REMOTE_ADDR=address)


def test_guessing_passwords_on_the_login_page_locks_that_username_from_that_address(client):
    user_with_role("labeler", "lena")
    user_with_role("labeler", "omar")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert log_in_page(client, "lena", "guess", ATTACKER).status_code == 200  # the form again, with its error
    locked = log_in_page(client, "lena", "guess", ATTACKER)
    assert locked.status_code == 429 and "Too many failed logins" in locked.content.decode()
    assert log_in_page(client, "lena", "pw-lena", ATTACKER).status_code == 429  # even the right password

    assert log_in_page(client, "lena", "pw-lena", OFFICE).status_code == 302  # lena herself, from her office
    client.logout()
    assert log_in_page(client, "omar", "pw-omar", ATTACKER).status_code == 302  # other users from that address


def test_guessing_passwords_for_an_api_token_locks_too(client):
    user_with_role("researcher", "rita")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert token(client, "rita", "guess", ATTACKER).status_code == 400
    assert token(client, "rita", "guess", ATTACKER).status_code == 429
    refused = token(client, "rita", "pw-rita", ATTACKER)
    assert refused.status_code == 429 and "too many" in refused.json()["detail"].lower()
    assert token(client, "rita", "pw-rita", OFFICE).status_code == 200
