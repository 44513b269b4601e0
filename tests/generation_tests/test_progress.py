"""Generation progress as the pages and the API show it: responses with the share of the batch in flight, an ETA
that waits for enough to go on and then moves smoothly, the backend that ran, and what "dropped" means."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token

from config.job_queue import ETA_AFTER_FRACTION, job_progress
from generation import selectors
from generation.models import GenerationJob, GenerationJobModel, ModelVersion

pytestmark = pytest.mark.django_db


@pytest.fixture
def job(project):
    version = ModelVersion.objects.create(name="policy", base_model="org/policy")
    job = GenerationJob.objects.create(
        project=project, sampling={"temperature": 0.8, "top_p": 0.95, "max_new_tokens": 64, "seed": 0},
        prompts_total=24, responses_total=96, status=GenerationJob.Status.RUNNING,
    )
    GenerationJobModel.objects.create(job=job, model_version=version, n=4)
    return job


def at(job, working_seconds, work_done, responses_done=0, load_seconds=40.0):
    """The row as it stands ``working_seconds`` after its model finished loading."""
    job.started_at = timezone.now() - timedelta(seconds=load_seconds + working_seconds)
    job.load_seconds, job.work_done, job.responses_done = load_seconds, work_done, responses_done
    return job_progress(job)


def test_no_eta_until_enough_to_go_on_then_one_that_moves_smoothly(job):
    assert at(job, 0.5, 0.0).eta_seconds is None  # nothing done yet
    assert at(job, 4.0, 3.0).eta_seconds is None  # too soon: under ETA_AFTER_SECONDS of work
    assert at(job, 20.0, ETA_AFTER_FRACTION * 96 / 2).eta_seconds is None  # too little of the work done
    # A steady 0.2 responses/s, counted within batches (16 responses finish together every 80 s): the ETA is the
    # time left, falling second by second, not a figure that doubles between two batches.
    etas = [at(job, t, 0.2 * t, responses_done=16 * int(0.2 * t // 16)).eta_seconds for t in range(30, 480, 15)]
    assert all(abs(eta - (480 - t)) < 2 for eta, t in zip(etas, range(30, 480, 15)))
    assert all(later < earlier for earlier, later in zip(etas, etas[1:]))
    progress = at(job, 100.0, 20.0, responses_done=16)
    assert (progress.done, progress.total, progress.percent) == (16, 96, 20)  # the bar counts the batch in flight


def test_the_exact_count_never_goes_below_the_whole_one_or_past_the_total(job):
    job.responses_done, job.work_done = 16, 0.0  # a row written before work_done existed
    assert job.done_exact == 16.0
    job.work_done = 120.0
    assert job.done_exact == 96.0


def test_the_page_and_api_say_which_backend_ran_and_what_was_dropped(client, api_client, admin_user, job):
    job.backend_used, job.backend_reason, job.device = "transformers", "auto chose it: no GPU", "cpu"
    job.duplicates_dropped, job.dropped_empty, job.dropped_duplicate = 3, 2, 1
    job.top_up_rounds, job.topped_up, job.responses_done, job.work_done = 1, 3, 90, 93.5
    job.tokens_generated, job.tokens_in_batch = 5000, 123
    job.save()
    client.force_login(admin_user)
    page = client.get(reverse("job_detail", args=[job.pk])).content.decode()
    assert "transformers on cpu (auto chose it: no GPU)" in page
    assert "90 / 96" in page and "~5123" in page
    assert "3 responses dropped (2 empty, 1 duplicate of another response to its prompt); 3 generated again in 1 extra round" in page
    jobs_page = client.get(reverse("jobs")).content.decode()
    assert "cpu · transformers" in jobs_page and "90 / 96 responses" in jobs_page
    token, _ = Token.objects.get_or_create(user=admin_user)
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    body = api_client.get(reverse("api_generation_job", args=[job.pk])).json()
    assert (body["backend"], body["backend_used"], body["backend_reason"]) == ("auto", "transformers", "auto chose it: no GPU")
    assert (body["dropped_empty"], body["dropped_duplicate"], body["topped_up"], body["prompts_short"]) == (2, 1, 3, 0)
    assert body["progress"]["work_done"] == 93.5 and body["progress"]["tokens"] == 5123
    assert body["progress"]["backend"] == "transformers on cpu (auto chose it: no GPU)"

    job.status, job.prompts_short = GenerationJob.Status.SUCCEEDED, 1
    assert selectors.dropped_text(job).endswith("1 prompt still short of K = 4 after the extra rounds: no ranking item for it")
    job.prompts_short = 0
    assert selectors.dropped_text(job).endswith("every prompt reached K = 4")
    job.duplicates_dropped = 0
    assert selectors.dropped_text(job).startswith("none dropped")


def test_before_it_starts_auto_says_how_it_will_choose(job):
    job.status = GenerationJob.Status.QUEUED
    assert selectors.backend_text(job).startswith("auto (chosen when the job starts")
