"""SFT runs through a real Celery worker (one process per job): demonstrations → a QLoRA SFT policy in 4 bits,
registered with its manifest, generating the next round's candidates; and a running SFT run cancelled."""

from pathlib import Path

import pytest

from config.jobs import job_cancel
from generation import jobs
from generation.models import Candidate, GenerationJob, ModelVersion
from tests.factories import PromptFactory
from tests.training_tests.conftest import SMALL_RUN
from tests.worker import wait_until
from training import services
from training.models import TrainingMetric, TrainingRun

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

FINISHED = {"succeeded", "failed", "cancelled"}


def wait_finished(model, pk, timeout=240):
    wait_until(lambda: model.objects.values_list("status", flat=True).get(pk=pk) in FINISHED, timeout, f"for {model.__name__} {pk}")
    return model.objects.get(pk=pk)


def test_sft_run_in_the_worker_registers_a_policy_that_generates(celery_worker, demonstrated_project, tiny_version):
    run = services.training_run_create(
        kind="sft", base_version=tiny_version, projects=[demonstrated_project], settings={**SMALL_RUN, "epochs": 3}
    )
    wait_until(
        lambda: TrainingMetric.objects.filter(run=run, name="mean_token_accuracy").exists(), 180, "for token accuracy while running"
    )
    run = wait_finished(TrainingRun, run.pk)
    assert run.status == "succeeded", run.error + celery_worker.log[-3000:]
    assert run.step == run.total_steps == 12 and run.summary["quantized_layers"] > 0 and (run.train_pairs_used, run.eval_pairs_used) == (8, 4)
    version = run.model_version
    assert version.kind == "policy" and version.parent == tiny_version
    manifest = version.config["dataset_manifest"]
    assert manifest["demonstrations"] == {"train": 8, "eval": 4} and manifest["demonstrations_used"]["train"] == 8
    assert manifest["sources"] == {"train": {"import": 8}, "eval": {"import": 4}} and manifest["sha256"] == run.dataset_manifest["sha256"]
    assert Path(run.output_dir, "demonstrations.jsonl").is_file()

    prompt = PromptFactory(project=demonstrated_project, messages=[{"role": "user", "content": "A fresh prompt for round two."}])
    job = jobs.generation_job_create(
        project=demonstrated_project, plan=[jobs.PlanEntry(version, demonstrated_project.responses_per_item)], prompt_selection={"mode": "ids", "ids": [prompt.pk]},
        sampling={"temperature": 1.0, "max_new_tokens": 8, "seed": 3}, backend="transformers",
    )
    job = wait_finished(GenerationJob, job.pk)
    assert job.status == "succeeded", job.error
    assert Candidate.objects.filter(prompt=prompt, model_version=version).count() == demonstrated_project.responses_per_item


def test_cancel_a_running_sft_run_in_the_worker(celery_worker, demonstrated_project, tiny_version):
    run = services.training_run_create(
        kind="sft", base_version=tiny_version, projects=[demonstrated_project], settings={**SMALL_RUN, "epochs": 100}
    )
    wait_until(lambda: TrainingRun.objects.get(pk=run.pk).step >= 2, 180, "for two steps")
    job_cancel(job=run)
    run = wait_finished(TrainingRun, run.pk)
    assert run.status == "cancelled" and run.step < run.total_steps
    assert not ModelVersion.objects.filter(training_run=run).exists()
    assert Path(run.summary["adapter_dir"], "adapter_model.safetensors").is_file()
