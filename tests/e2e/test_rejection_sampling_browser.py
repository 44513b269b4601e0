"""Rejection sampling seen in Chromium: an admin goes from the project page to the form, launches a job, follows it,
and reads the score histogram, the selection and the reward matrix (no inline style or script refused by the CSP)."""

import pytest

from generation.models import ModelVersion
from tests.e2e.conftest import log_in
from tests.factories import ProjectFactory, PromptFactory, user_with_role
from tests.tiny_models import build_reward_adapter
from training import rejection_sampling as service
from training.models import RejectionSamplingJob

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_an_admin_launches_rejection_sampling_and_reads_the_reward_matrix(browser, page, live_server, output_dir, tiny_model, tmp_path):
    project = ProjectFactory(slug="rs-e2e", name="Sampled")
    for n in range(3):
        PromptFactory(project=project, messages=[{"role": "user", "content": f"Train question {n}?"}])
    ModelVersion.objects.create(name="rs-e2e-policy", base_model=tiny_model)
    ModelVersion.objects.create(
        name="rs-e2e-judge", base_model=tiny_model, adapter_path=str(build_reward_adapter(tiny_model, tmp_path / "j")), kind="reward"
    )
    admin = user_with_role("admin", "rs-admin")

    page.set_viewport_size({"width": 1366, "height": 900})
    log_in(page, live_server.url, admin.username, "pw-rs-admin")
    page.goto(f"{live_server.url}/projects/rs-e2e/")
    page.click("text=Rejection sampling")
    page.click("text=New rejection sampling")
    assert page.locator("#id_judge").input_value() == "rs-e2e-judge"  # the only reward model is preselected
    page.select_option("#id_policy", "rs-e2e-policy")
    page.fill("#id_n", "4")
    page.check("input[name=selection][value=top-k-per-prompt]")
    page.fill("#id_k", "2")
    page.fill("#id_temperature", "1.0")
    page.fill("#id_max_new_tokens", "6")
    page.select_option("#id_backend", "transformers")
    page.check("#id_make_pairs")
    page.screenshot(path=str(output_dir / "form.png"), full_page=True)
    page.click("button:has-text('Launch rejection sampling')")
    page.wait_for_selector("#rejection-sampling-progress")
    job = RejectionSamplingJob.objects.get()
    assert (job.n, job.selection, job.k, job.make_pairs) == (4, "top-k-per-prompt", 2, True)

    assert service.rejection_sampling_execute(job.pk).status == "succeeded"  # as the gpu worker would
    page.wait_for_selector("#reward-matrix", timeout=15_000)  # the polling panel reloads the page once the job ends
    assert page.locator("figure.histogram svg rect").count() >= 2
    assert page.locator("#reward-matrix tr.selected").count() == 6
    assert page.locator("#reward-matrix article").count() == 3
    assert "Train SFT on this selection" in page.content() and "Export as SFT dataset" in page.content()
    page.screenshot(path=str(output_dir / "detail.png"), full_page=False)
    page.click("text=Show only what was selected")
    assert page.locator("#reward-matrix tbody tr").count() == 6
