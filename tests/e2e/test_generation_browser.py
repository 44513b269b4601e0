"""An admin launches a generation job in Chromium and watches its progress update live (a real worker runs it)."""

import pytest

from annotation.models import RankingItem
from annotation.roles import ADMIN
from generation.models import GenerationJob, ModelVersion
from tests.e2e.conftest import log_in
from tests.factories import ProjectFactory, PromptFactory, user_with_role

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_admin_launches_a_job_and_watches_it_finish(page, live_server, celery_worker, tiny_model, output_dir):
    project = ProjectFactory(slug="gen", name="Generation project", responses_per_item=2)
    for _ in range(6):
        PromptFactory(project=project)
    ModelVersion.objects.create(name="tiny", base_model=tiny_model)
    admin = user_with_role(ADMIN, "browser-admin")
    log_in(page, live_server.url, admin.username, "pw-browser-admin")

    page.goto(f"{live_server.url}/projects/gen/")
    page.click("text=Generate candidates")
    assert page.input_value("input[name^=n_]") == "2"
    page.fill("input[name=max_new_tokens]", "8")
    page.select_option("select[name=backend]", "transformers")
    page.screenshot(path=str(output_dir / "1-launch-form.png"), full_page=True)
    page.click("text=Launch generation")
    page.wait_for_url(f"{live_server.url}/jobs/generation/*/")
    page.evaluate("window.sameDocument = true")  # gone if the page reloads: progress must come by htmx swaps
    page.wait_for_selector("#job-progress .status.succeeded", timeout=180_000)
    assert page.evaluate("window.sameDocument") is True
    assert page.inner_text("[data-prompts-done]") == "6 / 6"
    page.screenshot(path=str(output_dir / "2-job-done.png"), full_page=True)

    job = GenerationJob.objects.get()
    assert job.status == "succeeded" and job.requested_by == admin
    assert RankingItem.objects.filter(project=project).count() == 6
    page.goto(f"{live_server.url}/jobs/generation/")
    assert "tiny ×2" in page.inner_text("table")
