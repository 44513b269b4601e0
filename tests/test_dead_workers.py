"""kill -9 of the GPU worker in the middle of a generation job, a training run and a scoring job, each followed by a
job of another kind: Celery beat's reaper marks the dead job failed within its period (no new GPU worker needed for
that), and the next job runs on a fresh worker. Real workers and Celery beat; the generation case on the embedded
filesystem broker, the other two on the broker of the environment (Redis in CI). The reaper and the claim do not
depend on the broker, so each case runs on one (each took about 40 s; all six pairs pushed CI past 30 minutes)."""

import os
import signal

import pytest
from django.conf import settings

from annotation.importing import content_hash
from generation import jobs
from generation.models import Candidate, GenerationJob, ModelVersion
from tests.factories import ProjectFactory, PromptFactory
from tests.tiny_models import build_reward_adapter
from tests.training_tests.conftest import SMALL_RUN, ranked_project, tiny_version  # noqa: F401 - fixtures
from tests.worker import Beat, Worker, broker, wait_until
from training import scoring, services
from training.models import ScoringJob, TrainingRun

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

HEARTBEAT, DEAD_AFTER, REAPER = 1, 6, 2
FAST_LIFECYCLE = {
    "PREFLOOP_JOB_HEARTBEAT_SECONDS": str(HEARTBEAT),
    "PREFLOOP_JOB_DEAD_AFTER_SECONDS": str(DEAD_AFTER),
    "PREFLOOP_JOB_REAPER_SECONDS": str(REAPER),
}
SAMPLING = {"temperature": 1.0, "top_p": 1.0, "seed": 1}


EMBEDDED, ENVIRONMENT = "filesystem://", settings.CELERY_BROKER_URL


class Lifecycle:
    """Beat and a default-queue worker (which runs the reaper), on one broker, with a fast lifecycle."""

    def __init__(self, env: dict, schedule_file):
        self.env = env
        self.default = Worker("default", extra_env=env)
        self.beat = Beat(schedule_file, extra_env=env)

    def logs(self) -> str:
        """What the reaper's side printed, for a test that timed out waiting for it."""
        return f"default worker:\n{self.default.log[-6000:]}\nbeat:\n{self.beat.log[-3000:]}"

    def stop(self) -> None:
        self.beat.stop()
        self.default.stop()


@pytest.fixture
def lifecycle(request, tmp_path):
    """On the broker the test names (``@pytest.mark.parametrize("lifecycle", [url], indirect=True)``)."""
    with broker(request.param, FAST_LIFECYCLE) as env:
        processes = Lifecycle(env, tmp_path / "beat-schedule")
        try:
            yield processes
        finally:
            processes.stop()


@pytest.fixture
def gpu(lifecycle):
    worker = Worker("gpu", extra_env=lifecycle.env)
    yield worker
    if worker.process.poll() is None:
        worker.stop()


def kill_in_the_middle(worker: Worker, model, pk, started) -> None:
    """Wait until the job is under way, then kill -9 the worker and the process running the job."""
    wait_until(lambda: started(model.objects.get(pk=pk)), 180, f"for {model.__name__} {pk} to be under way:\n{worker.log}")
    job = model.objects.get(pk=pk)
    assert job.status == "running", job.error
    child = int(job.worker.rsplit(":", 1)[1])
    os.kill(worker.process.pid, signal.SIGKILL)  # first, so it cannot start another child
    os.kill(child, signal.SIGKILL)
    worker.process.wait(timeout=30)


def assert_reaped(lifecycle: Lifecycle, model, pk) -> None:
    """Marked failed by the reaper within its period of the job's heartbeat going stale."""
    wait_until(lambda: model.objects.get(pk=pk).status != "running", DEAD_AFTER + REAPER + 30,
               lambda: f"for {model.__name__} {pk} to be reaped\n{lifecycle.logs()}")
    job = model.objects.get(pk=pk)
    assert job.status == "failed" and job.error == model.dead_worker_message
    silent_for = (job.finished_at - job.heartbeat_at).total_seconds()
    assert DEAD_AFTER <= silent_for <= DEAD_AFTER + REAPER + 5, silent_for


def run_next(lifecycle: Lifecycle, model, pk) -> None:
    """A fresh GPU worker takes the job queued behind the dead one."""
    worker = Worker("gpu", extra_env=lifecycle.env, purge=False)
    try:
        wait_until(lambda: model.objects.get(pk=pk).status in ("succeeded", "failed", "cancelled"), 240, f"for {model.__name__} {pk}:\n{worker.log}")
    finally:
        worker.stop()
    job = model.objects.get(pk=pk)
    assert job.status == "succeeded", job.error


@pytest.fixture
def reward_version(tiny_model, tmp_path_factory):
    adapter = build_reward_adapter(tiny_model, tmp_path_factory.mktemp("reward"))
    return ModelVersion.objects.create(name="tiny-reward", base_model=tiny_model, adapter_path=str(adapter), kind="reward")


def long_generation(project, version):
    for _ in range(240):
        PromptFactory(project=project)
    return jobs.generation_job_create(
        project=project, plan=[jobs.PlanEntry(version, project.responses_per_item)], prompt_selection={"mode": "missing"},
        sampling={**SAMPLING, "max_new_tokens": 100}, backend="transformers",
    )


def scored_project(candidates: int):
    project = ProjectFactory(responses_per_item=2)
    version, _ = ModelVersion.objects.get_or_create(name="writer", defaults={"base_model": "org/writer"})
    prompts = [PromptFactory(project=project) for _ in range(max(1, candidates // 50))]
    texts = [(prompts[n % len(prompts)], f"Answer {n}: " + "a rather long and thoughtful reply " * 30) for n in range(candidates)]
    Candidate.objects.bulk_create(
        Candidate(prompt=prompt, text=text, text_hash=content_hash(text), source="generated", model_version=version) for prompt, text in texts
    )
    return project


@pytest.mark.parametrize("lifecycle", [EMBEDDED], indirect=True)
def test_a_generation_job_killed_midway_then_a_scoring_job(lifecycle, gpu, tiny_model, reward_version):
    dead = long_generation(ProjectFactory(responses_per_item=2), ModelVersion.objects.create(name="tiny", base_model=tiny_model))
    following = scoring.scoring_job_create(project=scored_project(20), reward_version=reward_version)
    kill_in_the_middle(gpu, GenerationJob, dead.pk, started=lambda job: job.prompts_done > 0)
    assert_reaped(lifecycle, GenerationJob, dead.pk)
    assert 0 < GenerationJob.objects.get(pk=dead.pk).prompts_done < dead.prompts_total
    run_next(lifecycle, ScoringJob, following.pk)


@pytest.mark.parametrize("lifecycle", [ENVIRONMENT], indirect=True)
def test_a_training_run_killed_midway_then_a_generation_job(lifecycle, gpu, ranked_project, tiny_version):
    dead = services.training_run_create(kind="dpo", base_version=tiny_version, projects=[ranked_project], settings={**SMALL_RUN, "epochs": 100})
    prompt = PromptFactory(project=ranked_project)
    following = jobs.generation_job_create(
        project=ranked_project, plan=[jobs.PlanEntry(tiny_version, 3)], prompt_selection={"mode": "ids", "ids": [prompt.pk]},
        sampling={**SAMPLING, "max_new_tokens": 8}, backend="transformers",
    )
    kill_in_the_middle(gpu, TrainingRun, dead.pk, started=lambda run: run.step >= 2)
    assert_reaped(lifecycle, TrainingRun, dead.pk)
    assert not ModelVersion.objects.filter(training_run_id=dead.pk).exists()
    run_next(lifecycle, GenerationJob, following.pk)


@pytest.mark.parametrize("lifecycle", [ENVIRONMENT], indirect=True)
def test_a_scoring_job_killed_midway_then_a_training_run(lifecycle, gpu, ranked_project, tiny_version, reward_version):
    dead = scoring.scoring_job_create(project=scored_project(30_000), reward_version=reward_version)
    following = services.training_run_create(kind="reward", base_version=tiny_version, projects=[ranked_project], settings={**SMALL_RUN, "epochs": 1})
    kill_in_the_middle(gpu, ScoringJob, dead.pk, started=lambda job: job.candidates_done > 0)
    assert_reaped(lifecycle, ScoringJob, dead.pk)
    assert 0 < ScoringJob.objects.get(pk=dead.pk).candidates_done < dead.candidates_total
    run_next(lifecycle, TrainingRun, following.pk)
    assert ModelVersion.objects.filter(training_run_id=following.pk, kind="reward").exists()
