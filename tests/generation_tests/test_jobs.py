"""Generation jobs run in this process: candidates, items, dedup, top-up, cancel and failure."""

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from annotation.models import RankingItem
from config.jobs import job_cancel, reap_dead_jobs
from generation import jobs, selectors
from generation.models import Candidate, GenerationJob, ModelVersion
from tests.factories import ProjectFactory, PromptFactory

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

SAMPLING = {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 6, "seed": 3}


@pytest.fixture
def tiny_version(tiny_model):
    return ModelVersion.objects.create(name="tiny", base_model=tiny_model)


@pytest.fixture
def tiny_adapter_version(tiny_model, tiny_adapter, tiny_version):
    return ModelVersion.objects.create(name="tiny-lora", base_model=tiny_model, adapter_path=tiny_adapter, parent=tiny_version)


def launch(project, plan, **kwargs):
    options = {"prompt_selection": {"mode": "missing"}, "sampling": SAMPLING, "backend": "transformers", **kwargs}
    return jobs.generation_job_create(project=project, plan=[jobs.PlanEntry(v, n) for v, n in plan], **options)


def test_a_job_fills_prompts_to_k_and_creates_ranking_items(tiny_version, tiny_adapter_version):
    project = ProjectFactory(responses_per_item=4)
    prompts = [PromptFactory(project=project) for _ in range(3)]
    job = launch(project, [(tiny_version, 2), (tiny_adapter_version, 2)])
    job = jobs.generation_job_run(job.pk)
    assert job.status == GenerationJob.Status.SUCCEEDED, job.error
    assert job.device == "cpu"  # the device the backend resolved, recorded on the job
    assert (job.prompts_done, job.prompts_total) == (3, 3) and job.tokens_generated > 0
    for prompt in prompts:
        item = RankingItem.objects.get(prompt=prompt)
        shown = list(item.candidates.all())
        assert len(shown) == 4
        assert sorted(c.model_version.name for c in shown) == ["tiny", "tiny", "tiny-lora", "tiny-lora"]
        assert all(c.generation_job == job and c.sampling["seed"] in (3, 1003, 2003) and c.text.strip() for c in shown)
    # Prompts that have an item are no longer "missing": a second job finds nothing to do.
    with pytest.raises(ValidationError, match="No prompt matches"):
        launch(project, [(tiny_version, 4)])


def test_duplicates_are_dropped_counted_and_topped_up(tiny_version):
    project = ProjectFactory(responses_per_item=2)
    prompt = PromptFactory(project=project)
    first = jobs.generation_job_run(launch(project, [(tiny_version, 2)], prompt_selection={"mode": "ids", "ids": [prompt.pk]}).pk)
    assert first.duplicates_dropped == 0
    # The same seed gives the same two texts again: both are dropped, and a reseeded top-up round replaces them.
    second = jobs.generation_job_run(launch(project, [(tiny_version, 2)], prompt_selection={"mode": "ids", "ids": [prompt.pk]}).pk)
    assert second.status == GenerationJob.Status.SUCCEEDED
    assert second.duplicates_dropped == 2
    assert (second.dropped_duplicate, second.dropped_empty, second.top_up_rounds, second.topped_up, second.prompts_short) == (2, 0, 1, 2, 0)
    assert selectors.dropped_text(second) == (
        "2 responses dropped (2 duplicate of another response to its prompt); 2 generated again in 1 extra round "
        "(freshly seeded); every prompt reached K = 2"
    )
    items = list(RankingItem.objects.filter(prompt=prompt).order_by("id"))
    assert len(items) == 2
    assert not set(items[0].candidates.all()) & set(items[1].candidates.all())
    assert {c.sampling["seed"] for c in items[1].candidates.all()} == {1003}


def test_empty_responses_are_dropped_and_a_prompt_short_of_k_gets_no_item(tiny_model, tiny_version):
    # Greedy decoding of this random tiny model yields only whitespace: every response is empty, every round.
    twin = ModelVersion.objects.create(name="tiny-twin", base_model=tiny_model)
    project = ProjectFactory(responses_per_item=2)
    prompt = PromptFactory(project=project)
    job = jobs.generation_job_run(launch(project, [(tiny_version, 1), (twin, 1)], sampling={**SAMPLING, "temperature": 0}).pk)
    assert job.status == GenerationJob.Status.SUCCEEDED
    assert job.duplicates_dropped == job.dropped_empty == 2 * (1 + jobs.TOP_UP_ROUNDS)
    assert (job.dropped_duplicate, job.top_up_rounds, job.topped_up, job.prompts_short) == (0, jobs.TOP_UP_ROUNDS, 0, 1)
    assert selectors.dropped_text(job) == (
        f"6 responses dropped (6 empty); 0 generated again in {jobs.TOP_UP_ROUNDS} extra rounds (freshly seeded); "
        "1 prompt still short of K = 2 after the extra rounds: no ranking item for it"
    )
    assert not Candidate.objects.filter(prompt=prompt).exists()
    assert not RankingItem.objects.filter(prompt=prompt).exists()


def test_a_missing_model_fails_the_job_with_its_error(db):
    project = ProjectFactory(responses_per_item=2)
    PromptFactory(project=project)
    version = ModelVersion.objects.create(name="ghost", base_model="/no/such/model")
    job = jobs.generation_job_run(launch(project, [(version, 2)]).pk)
    assert job.status == GenerationJob.Status.FAILED
    assert "/no/such/model" in job.error
    assert not Candidate.objects.exists()


def test_cancel_a_queued_job_and_a_running_one(tiny_version, monkeypatch):
    project = ProjectFactory(responses_per_item=2)
    for _ in range(12):  # 24 samples: two batches of the backend's 16
        PromptFactory(project=project)
    queued = launch(project, [(tiny_version, 2)])
    job_cancel(job=queued)
    assert jobs.generation_job_run(queued.pk).status == GenerationJob.Status.CANCELLED
    with pytest.raises(ValidationError, match="already cancelled"):
        job_cancel(job=queued)

    def run_cancelled():
        running = launch(project, [(tiny_version, 2)])
        GenerationJob.objects.filter(pk=running.pk).update(status="running")
        job_cancel(job=running)
        GenerationJob.objects.filter(pk=running.pk).update(status="queued")  # let this process pick it up
        finished = jobs.generation_job_run(running.pk)
        assert finished.status == GenerationJob.Status.CANCELLED
        return finished

    # The in-batch progress report notices the cancel at once, inside the first batch: nothing was saved yet.
    stopped = run_cancelled()
    assert not Candidate.objects.filter(generation_job=stopped).exists()
    # Without in-batch reports (never due), it stops after its first batch (8 prompts x 2 samples) and keeps what
    # that batch saved, items included: prompts enter the labeling queue as soon as they have their K candidates.
    monkeypatch.setattr(jobs, "PROGRESS_WRITE_SECONDS", float("inf"))
    stopped = run_cancelled()
    assert Candidate.objects.filter(generation_job=stopped).count() == 16
    assert RankingItem.objects.filter(project=project).count() == 8
    assert (stopped.responses_done, stopped.responses_total, stopped.work_done) == (16, 24, 16.0)


@pytest.mark.parametrize(
    ("plan_n", "sampling", "message"),
    [
        (3, {}, "add up to the project's K"),
        (2, {"temperature": 3}, "Temperature must be between 0 and 2"),
        (2, {"top_p": 0}, "top_p must be above 0"),
        (2, {"max_new_tokens": 0}, "max_new_tokens must be between"),
        (2, {"temperature": 0}, "Greedy decoding"),
        (2, {"seed": "x"}, "must be numbers"),
    ],
)
def test_bad_jobs_are_refused(tiny_version, plan_n, sampling, message):
    project = ProjectFactory(responses_per_item=2)
    PromptFactory(project=project)
    with pytest.raises(ValidationError, match=message):
        launch(project, [(tiny_version, plan_n)], sampling={**SAMPLING, **sampling})
    assert not GenerationJob.objects.exists()


def test_reward_models_do_not_generate_and_a_worker_death_is_noticed(tiny_version):
    project = ProjectFactory(responses_per_item=2)
    PromptFactory(project=project)
    reward = ModelVersion.objects.create(name="rm", base_model=tiny_version.base_model, kind="reward")
    with pytest.raises(ValidationError, match="Only policy models generate"):
        launch(project, [(reward, 2)])
    job = launch(project, [(tiny_version, 2)])
    GenerationJob.objects.filter(pk=job.pk).update(status="running", heartbeat_at=timezone.now())
    assert jobs.generation_job_run(job.pk).status == GenerationJob.Status.RUNNING  # delivered again: never run twice
    assert not Candidate.objects.filter(generation_job=job).exists()


def test_a_job_whose_worker_went_quiet_is_marked_failed(tiny_version):
    from datetime import timedelta

    from django.utils import timezone

    project = ProjectFactory(responses_per_item=2)
    PromptFactory(project=project)
    quiet = launch(project, [(tiny_version, 2)])
    GenerationJob.objects.filter(pk=quiet.pk).update(status="running", heartbeat_at=timezone.now() - timedelta(minutes=6))
    assert reap_dead_jobs() == 1
    quiet.refresh_from_db()
    assert quiet.status == "failed" and "stopped" in quiet.error and quiet.finished_at


def test_progress_moves_within_a_batch_and_the_backend_auto_chose_is_recorded(tiny_version, monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks auto's choice on a machine without a GPU")
    project = ProjectFactory(responses_per_item=2)
    for _ in range(8):  # 16 responses: one batch of the backend's 16
        PromptFactory(project=project)
    monkeypatch.setattr(jobs, "PROGRESS_WRITE_SECONDS", 0.0)  # write every step the backend reports
    written = []
    real_update = jobs.job_update

    def recording_update(job, **fields):
        real_update(job, **fields)
        row = GenerationJob.objects.get(pk=job.pk)
        written.append((row.responses_done, row.work_done, row.tokens_in_batch))

    monkeypatch.setattr(jobs, "job_update", recording_update)
    sampling = {**SAMPLING, "max_new_tokens": 24}
    job = jobs.generation_job_run(launch(project, [(tiny_version, 2)], backend="auto", sampling=sampling).pk)
    assert job.status == GenerationJob.Status.SUCCEEDED, job.error
    in_batch = [(work, tokens) for done, work, tokens in written if done == 0 and work > 0]
    assert len(in_batch) >= 3  # the row moved while the one batch ran, before anything was saved
    assert [w for w, _ in in_batch] == sorted(w for w, _ in in_batch) and 0 < in_batch[0][0] < in_batch[-1][0] <= 16
    assert [t for _, t in in_batch] == sorted(t for _, t in in_batch) and in_batch[-1][1] > in_batch[0][1]
    assert (job.responses_done, job.responses_total, job.work_done, job.tokens_in_batch) == (16, 16, 16.0, 0)
    assert (job.backend, job.backend_used, job.device, job.backend_reason) == ("auto", "transformers", "cpu", "auto chose it: no GPU")
