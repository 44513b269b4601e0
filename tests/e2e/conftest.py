"""Real-browser tests: Debian's Chromium driven by Playwright against pytest-django's live server."""

import os
import re
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]
OUTPUT = Path(os.environ.get("PREFLOOP_TEST_OUTPUT", Path(__file__).resolve().parents[2] / "var" / "test-results"))

# Playwright's sync API runs an event loop in this thread; Django's async-safety check would refuse ORM calls.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: run `bash config/install.sh test`.")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def output_dir(request):
    folder = OUTPUT / re.sub(r"[^\w.-]+", "_", request.node.nodeid)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def page(browser, output_dir):
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # Every page must pass the Content-Security-Policy (config/security.py): Chromium reports what it refused here.
    page.on("console", lambda message: "Content Security Policy" in message.text and errors.append(message.text))
    yield page
    page.screenshot(path=str(output_dir / "last.png"), full_page=True)
    context.close()
    assert not errors, f"JavaScript errors or refused by the Content-Security-Policy: {errors}"


def log_in(page, base_url: str, username: str, password: str) -> None:
    page.goto(base_url + "/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(base_url + "/")


from tests.training_tests.conftest import ranked_project, tiny_version  # noqa: E402,F401 - fixtures for the training browser test
