"""HTTPS settings come from the environment (off by default), and every response carries the Content-Security-Policy
that the pages pass (the browser tests fail on any violation: tests/e2e/conftest.py)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTTPS = {
    "PREFLOOP_SECURE_COOKIES": "1",
    "PREFLOOP_SSL_REDIRECT": "1",
    "PREFLOOP_HSTS_SECONDS": "31536000",
    "PREFLOOP_HSTS_INCLUDE_SUBDOMAINS": "1",
    "PREFLOOP_HSTS_PRELOAD": "1",
    "PREFLOOP_SECRET_KEY": "x" * 20 + "a-long-random-production-secret-key-0123456789",
}


def check_deploy(tmp_path, extra: dict) -> str:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PREFLOOP_", "DJANGO_ALLOW_ASYNC"))}
    env.update(PREFLOOP_DATA_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="config.settings", **extra)
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    return done.stdout + done.stderr


@pytest.mark.slow
def test_check_deploy_passes_with_the_readme_production_settings(tmp_path):
    plain = check_deploy(tmp_path, {})
    assert "security.W004" in plain and "security.W008" in plain  # HSTS and SSL redirect: off by default
    production = check_deploy(tmp_path, HTTPS)
    assert "System check identified no issues" in production, production


@pytest.mark.django_db
def test_pages_and_the_api_carry_the_content_security_policy(client, admin_user):
    client.force_login(admin_user)
    for path in ("/", "/jobs/", "/api/projects/"):
        policy = client.get(path).headers["Content-Security-Policy"]
        assert "script-src 'self';" in policy and "style-src 'self';" in policy and "frame-ancestors 'none'" in policy
    assert "style-src 'self' 'unsafe-inline'" in client.get("/api/docs/").headers["Content-Security-Policy"]
