"""Generation jobs through a real Celery worker (the broker of the environment: Redis in CI)."""

import re

import pytest

from annotation.models import RankingItem
from generation import jobs
from generation.models import Candidate, GenerationJob, ModelVersion
from tests.factories import ProjectFactory, PromptFactory
from tests.worker import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

FINISHED = {GenerationJob.Status.SUCCEEDED, GenerationJob.Status.FAILED, GenerationJob.Status.CANCELLED}


def wait_for_job(job, worker, timeout=180):
    wait_until(lambda: GenerationJob.objects.get(pk=job.pk).status in FINISHED, timeout, f"for job {job.pk}:\n{worker.log}")
    return GenerationJob.objects.get(pk=job.pk)


def test_jobs_run_end_to_end_in_the_worker_one_process_each(celery_worker, tiny_model):
    project = ProjectFactory(responses_per_item=2)
    prompts = [PromptFactory(project=project) for _ in range(3)]
    sampling = {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 6, "seed": 1}

    broken = ModelVersion.objects.create(name="broken", base_model="/no/such/model")
    failed = wait_for_job(jobs.generation_job_create(project=project, plan=[jobs.PlanEntry(broken, 2)], prompt_selection={"mode": "missing"}, sampling=sampling, backend="transformers"), celery_worker)
    assert failed.status == GenerationJob.Status.FAILED and "/no/such/model" in failed.error

    tiny = ModelVersion.objects.create(name="tiny", base_model=tiny_model)
    job = jobs.generation_job_create(project=project, plan=[jobs.PlanEntry(tiny, 2)], prompt_selection={"mode": "missing"}, sampling=sampling, backend="transformers")
    job = wait_for_job(job, celery_worker)
    assert job.status == GenerationJob.Status.SUCCEEDED, job.error
    assert (job.prompts_done, job.prompts_total) == (3, 3)
    assert RankingItem.objects.filter(prompt__in=prompts).count() == 3
    assert Candidate.objects.filter(generation_job=job).count() == 6
    # Each job ran in its own child process, which exited afterwards (--max-tasks-per-child 1).
    children = re.findall(r"/(ForkPoolWorker-\d+)\] Task generation\.tasks\.run_generation_job\[[^]]+\] succeeded", celery_worker.log)
    assert len(children) == 2 and len(set(children)) == 2, celery_worker.log


def test_a_vllm_job_runs_in_the_prefork_worker_with_an_adapter(celery_worker, tiny_model, tiny_adapter):
    pytest.importorskip("vllm")
    project = ProjectFactory(responses_per_item=2)
    prompts = [PromptFactory(project=project) for _ in range(2)]
    tuned = ModelVersion.objects.create(name="tiny-lora", base_model=tiny_model, adapter_path=tiny_adapter)
    sampling = {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 6, "seed": 2}
    job = jobs.generation_job_create(project=project, plan=[jobs.PlanEntry(tuned, 2)], prompt_selection={"mode": "missing"}, sampling=sampling, backend="vllm")
    job = wait_for_job(job, celery_worker)
    assert job.status == GenerationJob.Status.SUCCEEDED, job.error
    assert RankingItem.objects.filter(prompt__in=prompts).count() == 2
    assert set(Candidate.objects.filter(generation_job=job).values_list("model_version__name", flat=True)) == {"tiny-lora"}
