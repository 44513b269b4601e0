"""The one job lifecycle (config.jobs) and the Jobs page: every kind runs, fails, is cancelled and is reaped the
same way, and a queued job says where it stands in its queue and what it waits for."""

import os
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from annotation.models import Export
from config.job_queue import queue_place
from config.jobs import (
    Job, JobCancelled, fail_jobs_of_dead_processes, job_cancel, job_kinds, reap_dead_jobs, run_job, stop_if_cancelled, worker_name,
)
from generation.models import GenerationJob, GenerationJobModel, ModelVersion
from tests.factories import ProjectFactory
from training.models import ScoringJob, TrainingRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def policy(db):
    return ModelVersion.objects.create(name="policy-a", base_model="org/policy-a")


@pytest.fixture
def reward(db):
    return ModelVersion.objects.create(name="reward-a", base_model="org/policy-a", kind="reward", adapter_path="/rm")


def generation_job(project, policy, **fields):
    job = GenerationJob.objects.create(project=project, prompts_total=10, **fields)
    GenerationJobModel.objects.create(job=job, model_version=policy, n=project.responses_per_item)
    return job


def training_run(project, policy, **fields):
    run = TrainingRun.objects.create(kind="dpo", base_version=policy, total_steps=100, **fields)
    run.projects.set([project])
    return run


def finished(model, seconds, **fields):
    """A succeeded job that ran ``seconds``: what the queue estimates a kind's run time from."""
    now = timezone.now()
    return model.objects.create(status="succeeded", started_at=now - timedelta(seconds=seconds), finished_at=now, **fields)


def test_every_kind_shares_the_lifecycle():
    assert {model.job_kind for model in job_kinds()} == {
        "evaluation", "export", "generation", "import", "rejection_sampling", "scoring", "training",
    }
    for model in job_kinds():
        names = {field.name for field in model._meta.get_fields()}
        assert {"status", "cancel_requested", "error", "heartbeat_at", "device", "worker", "requested_by"} <= names
        assert model.progress_fields[0] in names and model.progress_fields[1] in names


def test_a_failure_keeps_the_whole_traceback(project):
    job = Export.objects.create(export_format="jsonl")

    def deep(depth):
        if depth == 0:
            raise RuntimeError("the disk is full")
        deep(depth - 1)

    job = run_job(Export, job.pk, work=lambda job: deep(20))
    assert job.status == "failed" and job.finished_at
    assert job.error.startswith("RuntimeError: the disk is full")
    # Every frame, from the runner down to the one that raised (a limit of five or eight frames cut those off).
    assert "in run_job" in job.error and 'raise RuntimeError("the disk is full")' in job.error
    assert job.worker  # host:pid of the process that ran it


def test_a_job_records_the_gpu_its_worker_was_pinned_to(project, monkeypatch):
    """`manage.py serve` pins each gpu worker with CUDA_VISIBLE_DEVICES; the claim records it beside host:pid."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    pinned = run_job(Export, Export.objects.create(export_format="jsonl").pk, work=lambda job: {})
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    unpinned = run_job(Export, Export.objects.create(export_format="jsonl").pk, work=lambda job: {})
    assert (pinned.status, pinned.gpu, pinned.worker) == ("succeeded", "1", worker_name(os.getpid()))
    assert (unpinned.status, unpinned.gpu, unpinned.worker) == ("succeeded", "", worker_name(os.getpid()))


def test_the_jobs_page_a_jobs_page_and_the_api_say_which_worker_and_gpu_ran_it(client, api_client, users, project, policy):
    fields = {"status": "succeeded", "device": "cpu", "backend_used": "transformers"}
    on_gpu = generation_job(project, policy, worker="box:123", gpu="1", **fields)
    unpinned = generation_job(project, policy, worker="box:456", **fields)
    not_started = generation_job(project, policy)

    client.force_login(users["researcher"])
    page = client.get(reverse("jobs")).content.decode()
    parts = lambda *ran_in: (  # noqa: E731
        "cpu · transformers" + "".join(f'<span class="ran-in meta">{part}</span>' for part in ran_in) + "</td>"
    )
    assert parts("worker box:123", "GPU 1") in page and parts("worker box:456") in page
    assert 'data-worker>Ran on worker box:123 · GPU 1</p>' in client.get(reverse("job_detail", args=[on_gpu.pk])).content.decode()
    assert 'data-worker>Ran on worker box:456</p>' in client.get(reverse("job_detail", args=[unpinned.pk])).content.decode()
    assert "data-worker" not in client.get(reverse("job_detail", args=[not_started.pk])).content.decode()

    api_client.force_authenticate(users["researcher"])
    rows = {row["id"]: row for row in api_client.get(reverse("api_jobs"), {"kind": "generation"}).json()}
    assert [(rows[job.pk]["worker"], rows[job.pk]["gpu"]) for job in (on_gpu, unpinned, not_started)] == [("box:123", "1"), ("box:456", ""), ("", "")]
    assert api_client.get(reverse("api_generation_job", args=[on_gpu.pk])).json()["gpu"] == "1"


def test_cancel_success_and_a_failing_success_hook(project, policy):
    job = generation_job(project, policy)
    assert run_job(GenerationJob, job.pk, work=lambda job: {"prompts_done": 10}).prompts_done == 10

    cancelled = generation_job(project, policy)
    GenerationJob.objects.filter(pk=cancelled.pk).update(cancel_requested=True)
    cancelled = run_job(GenerationJob, cancelled.pk, work=lambda job: stop_if_cancelled(job, prompts_done=3))
    assert (cancelled.status, cancelled.prompts_done) == ("cancelled", 3)

    def register(job, result):
        GenerationJob.objects.filter(pk=job.pk).update(tokens_generated=99)
        raise ValueError("name taken")

    broken = run_job(GenerationJob, generation_job(project, policy).pk, work=lambda job: None, succeed=register)
    assert broken.status == "failed" and "name taken" in broken.error
    assert broken.tokens_generated == 0  # the hook's writes rolled back with it


def test_cancel_rules(project, policy):
    queued = generation_job(project, policy)
    assert job_cancel(job=queued).status == "cancelled"
    with pytest.raises(ValidationError, match="generation job is already cancelled"):
        job_cancel(job=queued)
    running = training_run(project, policy, status="running")
    assert job_cancel(job=running).cancel_requested
    with pytest.raises(JobCancelled):
        stop_if_cancelled(running)


def test_the_reaper_fails_silent_jobs_of_every_kind_with_their_own_message(project, policy, reward, settings):
    silent = timezone.now() - timedelta(seconds=settings.JOB_DEAD_AFTER_SECONDS + 1)
    dead = [
        generation_job(project, policy, status="running", heartbeat_at=silent),
        training_run(project, policy, status="running", heartbeat_at=silent),
        ScoringJob.objects.create(project=project, reward_version=reward, status="running", heartbeat_at=silent),
        Export.objects.create(export_format="jsonl", status="running", heartbeat_at=silent),
    ]
    alive = training_run(project, policy, status="running", heartbeat_at=timezone.now())
    assert reap_dead_jobs() == 4
    for job in dead:
        job.refresh_from_db()
        assert job.status == "failed" and job.error == type(job).dead_worker_message and job.finished_at
    alive.refresh_from_db()
    assert alive.status == "running"


def test_jobs_of_processes_seen_to_die_fail_at_once_and_no_others(project, policy, reward):
    """What `manage.py serve` does when a worker it supervises exits: fresh heartbeats do not matter, the pid does."""
    now = timezone.now()
    dead = [
        generation_job(project, policy, status="running", heartbeat_at=now, worker=worker_name(4001)),
        ScoringJob.objects.create(project=project, reward_version=reward, status="running", heartbeat_at=now, worker=worker_name(4002)),
    ]
    other_pid = training_run(project, policy, status="running", heartbeat_at=now, worker=worker_name(4003))
    other_host = training_run(project, policy, status="running", heartbeat_at=now, worker="elsewhere:4001")
    done = generation_job(project, policy, status="succeeded", worker=worker_name(4001))
    assert fail_jobs_of_dead_processes({4001, 4002}) == 2
    for job in dead:
        job.refresh_from_db()
        assert job.status == "failed" and job.error == type(job).dead_worker_message and job.finished_at
    for job, status in ((other_pid, "running"), (other_host, "running"), (done, "succeeded")):
        job.refresh_from_db()
        assert job.status == status


def test_a_message_delivered_again_never_runs_a_job_twice(project, policy):
    job = generation_job(project, policy, status="running", heartbeat_at=timezone.now())
    ran = []
    assert run_job(GenerationJob, job.pk, work=ran.append).status == "running"
    assert ran == []


def test_queue_place_and_what_a_job_waits_for(project, policy, reward):
    finished(TrainingRun, 600, kind="dpo", base_version=policy)
    finished(GenerationJob, 120, project=project)
    running = training_run(project, policy, status="running", started_at=timezone.now(), heartbeat_at=timezone.now())
    first = generation_job(project, policy)
    second = ScoringJob.objects.create(project=project, reward_version=reward)
    export = Export.objects.create(export_format="jsonl")  # the default queue: not in the GPU line

    place = queue_place(second)
    assert place.position == 2
    assert place.ahead == [running, first]
    # The running run has no rate yet, so its kind's typical 600 s stand for it; then the generation job's 120 s.
    assert 690 <= place.wait_seconds <= 720
    assert place.sentence == f"2nd in line on the gpu queue, behind generation job {first.pk} (now running: training run {running.pk}), about 12 min left"
    assert queue_place(first).sentence.startswith(f"1st in line on the gpu queue, behind training run {running.pk}, about")
    assert queue_place(export).sentence == "1st in line on the default queue, starting as soon as a worker takes it"
    assert queue_place(running) is None

    # Once it trains, its own rate counts: 50 steps in 100 s after 30 s of loading, 50 steps to go.
    TrainingRun.objects.filter(pk=running.pk).update(step=50, started_at=timezone.now() - timedelta(seconds=130), load_seconds=30)
    assert queue_place(first).wait_seconds == pytest.approx(100, abs=5)


def test_unknown_waits_are_said(project, policy, reward):
    running = generation_job(project, policy, status="running", started_at=timezone.now())
    queued = ScoringJob.objects.create(project=project, reward_version=reward)
    assert queue_place(queued).wait_seconds is None
    assert "wait unknown" in queue_place(queued).sentence and f"behind generation job {running.pk}" in queue_place(queued).sentence


def test_jobs_api_lists_every_kind_with_filters_and_queue(api_client, users, project, policy, reward):
    other = ProjectFactory(slug="other")
    running = training_run(project, policy, status="running", started_at=timezone.now(), requested_by=users["admin"])
    queued = ScoringJob.objects.create(project=other, reward_version=reward)
    export = Export.objects.create(export_format="jsonl", status="succeeded")
    export.projects.set([project])

    api_client.force_authenticate(users["researcher"])
    rows = api_client.get(reverse("api_jobs")).json()
    assert [(row["kind"], row["id"]) for row in rows] == [("export", export.pk), ("scoring", queued.pk), ("training", running.pk)]
    by_kind = {row["kind"]: row for row in rows}
    assert by_kind["training"]["requested_by"] == "alice-admin" and by_kind["training"]["queue"] is None
    assert by_kind["scoring"]["queue"]["position"] == 1
    assert by_kind["scoring"]["queue"]["waiting_for"] == [{"kind": "training", "id": running.pk, "status": "running"}]
    assert by_kind["scoring"]["url"] == reverse("scoring_detail", args=[queued.pk])
    assert "reward-a scoring" in by_kind["scoring"]["subject"]

    assert [row["kind"] for row in api_client.get(reverse("api_jobs"), {"project": project.slug}).json()] == ["export", "training"]
    assert [row["kind"] for row in api_client.get(reverse("api_jobs"), {"status": "queued"}).json()] == ["scoring"]
    assert [row["id"] for row in api_client.get(reverse("api_jobs"), {"kind": "training"}).json()] == [running.pk]
    refused = api_client.get(reverse("api_jobs"), {"kind": "nope", "status": "lost"})
    assert refused.status_code == 400 and set(refused.json()) == {"kind", "status"}

    # The same place in the queue on the job's own endpoint.
    own = api_client.get(reverse("api_scoring_job", args=[queued.pk])).json()
    assert own["queue"]["text"].startswith(f"1st in line on the gpu queue, behind training run {running.pk}")

    api_client.force_authenticate(users["labeler"])
    assert api_client.get(reverse("api_jobs")).status_code == 403


def test_jobs_page_and_a_jobs_own_page_show_the_queue(client, users, project, policy, reward):
    running = generation_job(project, policy, status="running", started_at=timezone.now())
    queued = training_run(project, policy, requested_by=users["admin"])

    client.force_login(users["researcher"])
    page = client.get(reverse("jobs")).content.decode()
    assert f"Generation job {running.pk}" in page and f"Training run {queued.pk}" in page
    assert f"1st in line on the gpu queue, behind generation job {running.pk}" in page
    assert "alice-admin" in page and "0 / 100 steps" in page

    filtered = client.get(reverse("jobs"), {"kind": "training"}).content.decode()
    assert f"Training run {queued.pk}" in filtered and f"Generation job {running.pk}" not in filtered
    assert client.get(reverse("jobs"), {"kind": "nope"}).status_code == 200  # a hand-written filter filters on nothing

    own = client.get(reverse("run_detail", args=[queued.pk])).content.decode()
    assert "1st in line on the gpu queue" in own and reverse("job_detail", args=[running.pk]) in own

    client.force_login(users["labeler"])
    assert client.get(reverse("jobs")).status_code == 403


def test_a_finished_job_is_not_in_line(project, policy):
    job = generation_job(project, policy, status=Job.Status.SUCCEEDED)
    assert queue_place(job) is None


def test_a_list_reads_the_queues_once_however_many_jobs_wait(api_client, users, project, policy, reward):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    api_client.force_authenticate(users["researcher"])
    training_run(project, policy, status="running", started_at=timezone.now())

    def queries_listing(queued: int) -> int:
        for _ in range(queued):
            ScoringJob.objects.create(project=project, reward_version=reward)
        with CaptureQueriesContext(connection) as captured:
            rows = api_client.get(reverse("api_jobs"), {"kind": "scoring"}).json()
        assert all(row["queue"]["position"] >= 1 for row in rows)
        return len(captured)

    queries_listing(0)  # the first request also reads the user's permissions
    assert queries_listing(2) == queries_listing(6)


def test_a_job_the_broker_did_not_take_says_so_and_is_sent_again_later(project, policy, settings):
    """The broker is down (nothing listens on the port): the launch keeps the row, the queue line says why it waits,
    and the reaper's re-send fails quietly until the broker answers (tests/test_broker_outage.py runs the recovery)."""
    from config.jobs import job_dispatch, redispatch_undelivered_jobs, waits_for_broker
    from tests.test_demo import free_port
    from tests.worker import broker

    job = generation_job(project, policy)
    assert not waits_for_broker(job) and "1st in line" in queue_place(job).sentence
    with broker(f"redis://127.0.0.1:{free_port()}/0"):
        assert job_dispatch(job) is False
        job.refresh_from_db()
        assert job.dispatched_at is None and "Connection refused" in job.dispatch_error
        place = queue_place(job)
        assert place.waiting_for_broker and place.as_dict()["waiting_for_broker"] is True
        assert "the broker could not be reached" in place.sentence
        settings.JOB_REAPER_SECONDS = 0
        assert redispatch_undelivered_jobs() == 0


def test_with_two_gpu_workers_a_queued_job_waits_for_the_first_to_free(project, policy, reward):
    finished(TrainingRun, 600, kind="dpo", base_version=policy)
    finished(GenerationJob, 120, project=project)
    now = timezone.now()
    long_run = training_run(project, policy, status="running", started_at=now, heartbeat_at=now, gpu="0")
    short_job = generation_job(project, policy, status="running", started_at=now - timedelta(seconds=60), heartbeat_at=now, gpu="1")
    first = generation_job(project, policy)
    second = ScoringJob.objects.create(project=project, reward_version=reward)

    # Two jobs run, so the gpu queue has two workers: the generation job frees GPU 1 after about 60 s more.
    assert queue_place(first).wait_seconds == pytest.approx(60, abs=5)
    place = queue_place(second)
    # `first` takes GPU 1 from 60 s to 180 s; GPU 0 frees at 600 s: `second` starts at 180 s.
    assert place.position == 2 and place.wait_seconds == pytest.approx(180, abs=5)
    assert f"(now running: training run {long_run.pk}, generation job {short_job.pk})" in place.sentence
