"""The loop closed through a real Celery worker (one process per job, the embedded broker or Redis): rankings →
QLoRA DPO and reward runs in 4 bits → a DPO version generating with both backends → a reward version scoring."""

from pathlib import Path

import pytest

from annotation.labeling import assignment_next
from config.jobs import job_cancel
from generation import jobs
from generation.backends.base import ModelSpec, PromptRequest, Sampling, open_backend
from generation.models import Candidate, GenerationJob, ModelVersion
from tests.factories import PromptFactory, user_with_role
from tests.training_tests.conftest import SMALL_RUN
from tests.worker import wait_until
from training import scoring, selectors, services
from training.models import CandidateScore, ScoringJob, TrainingMetric, TrainingRun

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

FINISHED = {"succeeded", "failed", "cancelled"}


def status_of(model, pk):
    return model.objects.values_list("status", flat=True).get(pk=pk)


def wait_finished(model, pk, timeout=240):
    wait_until(lambda: status_of(model, pk) in FINISHED, timeout, f"for {model.__name__} {pk}")
    return model.objects.get(pk=pk)


def test_dpo_run_in_the_worker_then_its_policy_generates(celery_worker, ranked_project, tiny_version):
    run = services.training_run_create(
        kind="dpo", base_version=tiny_version, projects=[ranked_project], settings={**SMALL_RUN, "epochs": 2}
    )
    # Metrics reach the database while the run is going, not only at the end.
    wait_until(
        lambda: status_of(TrainingRun, run.pk) == "running" and TrainingMetric.objects.filter(run=run).exists(),
        180, "for metrics while running",
    )
    run = wait_finished(TrainingRun, run.pk)
    assert run.status == "succeeded", run.error + celery_worker.log[-3000:]
    assert run.step == run.total_steps == 12 and run.summary["quantized_layers"] > 0
    version = run.model_version
    assert version.kind == "policy" and version.parent == tiny_version

    # The next generation round uses the DPO version (transformers backend, through the worker).
    prompt = PromptFactory(project=ranked_project, messages=[{"role": "user", "content": "A fresh prompt for round two."}])
    job = jobs.generation_job_create(
        project=ranked_project, plan=[jobs.PlanEntry(version, 3)], prompt_selection={"mode": "ids", "ids": [prompt.pk]},
        sampling={"temperature": 1.0, "max_new_tokens": 8, "seed": 3}, backend="transformers",
    )
    job = wait_finished(GenerationJob, job.pk)
    assert job.status == "succeeded", job.error
    assert Candidate.objects.filter(prompt=prompt, model_version=version).count() == 3

    # And vLLM serves the same adapter.
    backend = open_backend("vllm", ModelSpec(version.base_model, version.adapter_path), max_model_len=256, cpu_kv_cache_bytes=256 * 1024**2)
    try:
        batches = list(backend.generate([PromptRequest(key=1, messages=prompt.messages, n=2)], Sampling(temperature=1.0, max_new_tokens=8, seed=1)))
    finally:
        backend.close()
    assert sum(len(batch) for batch in batches) == 2


def test_reward_run_in_the_worker_then_it_scores_and_orders_the_queue(celery_worker, ranked_project, tiny_version):
    run = services.training_run_create(
        kind="reward", base_version=tiny_version, projects=[ranked_project],
        settings={**SMALL_RUN, "epochs": 6, "learning_rate": 5e-3},
    )
    run = wait_finished(TrainingRun, run.pk)
    assert run.status == "succeeded", run.error + celery_worker.log[-3000:]
    version = run.model_version
    assert version.kind == "reward" and Path(version.adapter_path, "adapter_config.json").is_file()
    names = set(TrainingMetric.objects.filter(run=run, split="eval").values_list("name", flat=True))
    assert {"loss", "accuracy", "margin"} <= names

    job = wait_finished(ScoringJob, scoring.scoring_job_create(project=ranked_project, reward_version=version).pk)
    assert job.status == "succeeded", job.error
    assert CandidateScore.objects.filter(reward_version=version).count() == Candidate.objects.count()
    accuracy = selectors.reward_accuracy(version, ranked_project)
    assert accuracy["pairs"] == 6 and accuracy["accuracy"] == 1.0

    scoring.project_queue_order_set(project=ranked_project, order="reward_spread", reward_version=version)
    from tests.factories import make_item

    easy = make_item(ranked_project, texts=["You are wonderful, my dear friend!", "You are fine.", "Go away."])
    hard = make_item(ranked_project, texts=["Go away.", "Go away!", "Go away now."])
    job = wait_finished(ScoringJob, scoring.scoring_job_create(project=ranked_project, reward_version=version).pk)
    assert job.status == "succeeded"
    easy.refresh_from_db(), hard.refresh_from_db()
    assert hard.reward_spread < easy.reward_spread  # refreshed at the end of the job: the project orders by it
    assert assignment_next(labeler=user_with_role("labeler", "next-round-labeler"), project=ranked_project).item_id == hard.pk

    # The worker's log of a training run and three scoring jobs: metrics at INFO, no progress-bar redraws, and no
    # "score.weight MISSING" (the adapter's head replaces the base's new one).
    job_log = celery_worker.log[celery_worker.log.index("Task training.tasks.run_training"):]
    assert "WARNING/ForkPoolWorker" not in job_log and "ERROR/ForkPoolWorker" not in job_log, job_log[-3000:]
    assert "|#" not in job_log and "MISSING" not in job_log
    assert "INFO/ForkPoolWorker-1] {'loss'" in job_log and "score head from" in job_log


def test_cancel_a_running_run_in_the_worker(celery_worker, ranked_project, tiny_version):
    run = services.training_run_create(
        kind="dpo", base_version=tiny_version, projects=[ranked_project], settings={**SMALL_RUN, "epochs": 100}
    )
    wait_until(lambda: TrainingRun.objects.get(pk=run.pk).step >= 2, 180, "for two steps")
    job_cancel(job=run)
    run = wait_finished(TrainingRun, run.pk)
    assert run.status == "cancelled" and run.step < run.total_steps
    assert not ModelVersion.objects.filter(training_run=run).exists()
    assert Path(run.summary["adapter_dir"], "adapter_model.safetensors").is_file()  # what it reached is kept
