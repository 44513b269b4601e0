"""A researcher exports demonstrations as an SFT dataset in Chromium at 1366x900: from the project page to the
download, only accepted demonstrations by default."""

import hashlib
import json

import pytest

from annotation.models import Demonstration
from annotation.roles import RESEARCHER
from tests.e2e.conftest import log_in
from tests.factories import ProjectFactory, PromptFactory, user_with_role

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_a_researcher_exports_the_accepted_demonstrations(page, live_server, output_dir, settings, tmp_path):
    settings.EXPORTS_DIR = tmp_path / "exports"
    project = ProjectFactory(slug="sft-demo", name="SFT demo")
    for n, status in enumerate(["accepted", "accepted", "pending"]):
        prompt = PromptFactory(project=project, messages=[{"role": "user", "content": f"Question {n}?"}])
        text = f"Answer {n}."
        Demonstration.objects.create(
            project=project, prompt=prompt, text=text, text_hash=hashlib.sha256(text.encode()).hexdigest(), source="import", status=status
        )
    researcher = user_with_role(RESEARCHER, "rita-researcher")
    page.set_viewport_size({"width": 1366, "height": 900})
    log_in(page, live_server.url, researcher.username, "pw-rita-researcher")

    page.goto(f"{live_server.url}/projects/{project.slug}/")
    page.click("text=Export SFT")
    page.wait_for_selector("h1:has-text('Export demonstrations (SFT)')")
    assert page.is_checked("input[name=statuses][value=accepted]") and not page.is_checked("input[name=statuses][value=pending]")
    page.screenshot(path=str(output_dir / "sft-export-form.png"))
    page.click("button:has-text('Export')")
    page.wait_for_selector("text=Download data")
    assert "2 / 2" in page.inner_text("[data-rows]")
    page.screenshot(path=str(output_dir / "sft-export-done.png"))

    with page.expect_download() as download:
        page.click("text=Download data")
    rows = [json.loads(line) for line in open(download.value.path(), encoding="utf-8")]
    assert [row["messages"][-1] for row in rows] == [{"role": "assistant", "content": f"Answer {n}."} for n in (0, 1)]
