"""A researcher reads the Jobs page in Chromium: every kind of job, the queue line of a waiting one, and the filter
that narrows the table in place (htmx)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from annotation.models import Export
from annotation.roles import RESEARCHER
from generation.models import GenerationJob, GenerationJobModel, ModelVersion
from tests.e2e.conftest import log_in
from tests.factories import ProjectFactory, user_with_role
from training.models import ScoringJob, TrainingRun

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_jobs_page_shows_the_queue_and_filters_in_place(page, live_server, output_dir):
    page.set_viewport_size({"width": 1366, "height": 900})
    project = ProjectFactory(name="Helpful assistant", responses_per_item=2)
    policy = ModelVersion.objects.create(name="smollm2-135m-instruct", base_model="org/policy")
    reward = ModelVersion.objects.create(name="round1-reward", base_model="org/policy", kind="reward", adapter_path="/rm")
    now = timezone.now()
    done = TrainingRun.objects.create(kind="reward", base_version=policy, status="succeeded", started_at=now - timedelta(minutes=9), finished_at=now, step=40, total_steps=40, device="cuda", worker="gpu-box-1:311", gpu="0")
    done.projects.set([project])
    running = GenerationJob.objects.create(
        project=project, status="running", prompts_total=24, prompts_done=9, responses_total=48, responses_done=18, work_done=19.5,
        started_at=now - timedelta(seconds=60), heartbeat_at=now, device="cpu", backend_used="transformers",
        worker="gpu-box-2:4242", gpu="1",
    )
    GenerationJobModel.objects.create(job=running, model_version=policy, n=2)
    waiting = TrainingRun.objects.create(kind="dpo", base_version=policy)
    waiting.projects.set([project])
    ScoringJob.objects.create(project=project, reward_version=reward, candidates_total=48)
    export = Export.objects.create(export_format="jsonl", status="failed", error="OSError: No space left on device")
    export.projects.set([project])

    researcher = user_with_role(RESEARCHER, "rita-reader")
    log_in(page, live_server.url, researcher.username, "pw-rita-reader")
    page.click("nav >> text=Jobs")
    row = page.locator(f'tr[data-job="training-{waiting.pk}"]')
    assert f"1st in line on the gpu queue, behind generation job {running.pk}" in row.inner_text()
    generating = page.locator(f'tr[data-job="generation-{running.pk}"]').inner_text()
    assert "18 / 48 responses" in generating
    ran_on = page.locator(f'tr[data-job="generation-{running.pk}"] [data-ran-on]').inner_text()
    assert ran_on.split("\n") == ["cpu · transformers", "worker gpu-box-2:4242", "GPU 1"]
    page.screenshot(path=str(output_dir / "1-jobs.png"))

    page.select_option("select[name=kind]", "training")
    page.wait_for_function("() => !document.querySelector('tr[data-job^=generation]')")
    assert page.locator("tr[data-job]").count() == 2 and "kind=training" in page.url
    assert page.locator(f'tr[data-job="training-{done.pk}"] [data-ran-on]').inner_text().split("\n") == ["cuda", "worker gpu-box-1:311", "GPU 0"]
    page.screenshot(path=str(output_dir / "2-training-only.png"))

    row.locator("a").click()
    assert "1st in line on the gpu queue" in page.locator("[data-queue-place]").inner_text()
    page.screenshot(path=str(output_dir / "3-queued-run.png"))
