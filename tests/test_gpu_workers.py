"""A machine that joins a deployment with two GPUs: `manage.py serve --workers-only --queues gpu --gpus 0,1` as a real
process, on the test database and the broker of the environment, runs two gpu workers and nothing else; two generation
jobs launched together run at the same time, one in each worker, and each records the GPU its worker was pinned to.
(Without CUDA here, CUDA_VISIBLE_DEVICES changes nothing about where they compute; the pinning is what is tested.)"""

import re
import signal
import subprocess
import sys

import pytest

from generation import jobs
from generation.models import GenerationJob, ModelVersion
from tests.factories import ProjectFactory, PromptFactory
from tests.test_supervisor import children_of
from tests.worker import REPO, Output, celery_env, purge_queues, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def generation(version: ModelVersion) -> GenerationJob:
    """A job of a few seconds on the tiny model (most of it loading torch and the model)."""
    project = ProjectFactory(responses_per_item=2)
    for _ in range(6):
        PromptFactory(project=project)
    return jobs.generation_job_create(
        project=project, plan=[jobs.PlanEntry(version, 2)], prompt_selection={"mode": "missing"},
        sampling={"temperature": 1.0, "top_p": 1.0, "seed": 1, "max_new_tokens": 24}, backend="transformers",
    )


def test_two_gpu_workers_run_two_jobs_at_once_each_on_its_gpu(tiny_model):
    env = celery_env()
    purge_queues("gpu", env)
    serve = subprocess.Popen([sys.executable, "manage.py", "serve", "--workers-only", "--queues", "gpu", "--gpus", "0,1"],
                             cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = Output(serve)
    try:
        output.wait_for(r"gpu0@\S+ ready\.", timeout=60)
        output.wait_for(r"gpu1@\S+ ready\.", timeout=30)
        assert "gpu workers: worker-gpu0 on GPU 0, worker-gpu1 on GPU 1 (from --gpus)." in output.text
        started = children_of(serve.pid).values()
        assert sorted(re.search(r"worker --queues gpu --hostname (\S+)", line)[1] for line in started) == ["gpu0@%h", "gpu1@%h"], started

        version = ModelVersion.objects.create(name="tiny", base_model=tiny_model)
        first, second = generation(version), generation(version)
        wait_until(lambda: GenerationJob.objects.filter(pk__in=[first.pk, second.pk], status__in=["queued", "running"]).count() == 0,
                   75, lambda: f"for both jobs to finish:\n{output.text[-6000:]}")
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)
    assert serve.returncode == 0, output.text[-6000:]

    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == ("succeeded", "succeeded"), (first.error, second.error)
    assert first.started_at < second.finished_at and second.started_at < first.finished_at  # they ran at the same time
    assert first.worker != second.worker and first.worker.rsplit(":", 1)[0] == second.worker.rsplit(":", 1)[0]
    assert {first.gpu, second.gpu} == {"0", "1"}
