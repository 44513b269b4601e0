"""A researcher exports demonstrations as an SFT dataset in Chromium at 1366x900: from the project page to the
download, only accepted demonstrations by default; and the same download streamed from an S3 artifact store."""

import hashlib
import json

import pytest

from annotation.models import Demonstration, Export
from annotation.roles import RESEARCHER
from config import artifacts
from tests.e2e.conftest import log_in
from tests.factories import ProjectFactory, PromptFactory, user_with_role

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def a_project_with_demonstrations():
    project = ProjectFactory(slug="sft-demo", name="SFT demo")
    for n, status in enumerate(["accepted", "accepted", "pending"]):
        prompt = PromptFactory(project=project, messages=[{"role": "user", "content": f"Question {n}?"}])
        text = f"Answer {n}."
        Demonstration.objects.create(
            project=project, prompt=prompt, text=text, text_hash=hashlib.sha256(text.encode()).hexdigest(), source="import", status=status
        )
    return project


@pytest.fixture
def researcher_page(page, live_server, settings, tmp_path):
    """A researcher logged in at 1366x900, exports written under tmp_path."""
    settings.EXPORTS_DIR = tmp_path / "exports"
    researcher = user_with_role(RESEARCHER, "rita-researcher")
    page.set_viewport_size({"width": 1366, "height": 900})
    log_in(page, live_server.url, researcher.username, "pw-rita-researcher")
    return page


def test_a_researcher_exports_the_accepted_demonstrations(researcher_page, live_server, output_dir):
    page = researcher_page
    project = a_project_with_demonstrations()

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


def test_an_export_kept_in_an_s3_store_downloads_through_the_browser(researcher_page, live_server, output_dir, tmp_path, s3_store):
    page = researcher_page
    project = a_project_with_demonstrations()
    page.goto(f"{live_server.url}/projects/{project.slug}/export/sft/")
    page.click("button:has-text('Export')")
    page.wait_for_selector("text=Download data")

    export = Export.objects.get()
    assert export.data_path.startswith(f"{s3_store.url}/exports/{export.pk}/")
    assert not (tmp_path / "exports" / str(export.pk)).exists(), "only the store keeps it"
    with page.expect_download() as download:
        page.click("text=Download data")
    assert download.value.suggested_filename == "sft-demo-sft.jsonl"
    rows = [json.loads(line) for line in open(download.value.path(), encoding="utf-8")]
    assert [row["messages"][-1]["content"] for row in rows] == ["Answer 0.", "Answer 1."]
    with page.expect_download() as card:
        page.click("text=Download the card")
    with artifacts.open_file(export.card_path) as stored:
        assert open(card.value.path(), "rb").read() == stored.read() and card.value.suggested_filename.endswith(".md")
    page.screenshot(path=str(output_dir / "export-from-s3.png"))
