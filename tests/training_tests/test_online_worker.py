"""Online RL through a real Celery worker (one process per job): an RLOO run against a reward model with another
tokenizer registers a 4-bit QLoRA policy with its rewards logged; a run whose reward model vanished after launch fails
with the reason and leaves its prompts untouched; a running GRPO run is cancelled. (The GRPO run launched from the
browser, tests/e2e/test_online_training_browser.py, goes through the worker too.)"""

import shutil
from pathlib import Path

import pytest

from config.jobs import job_cancel
from generation.models import ModelVersion
from generation.services import model_version_register
from tests.tiny_models import build_reward_adapter
from tests.training_tests.conftest import ONLINE_RUN, launch
from tests.worker import wait_until
from training.models import TrainingMetric, TrainingRun, TrainingSample

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

FINISHED = {"succeeded", "failed", "cancelled"}


def wait_finished(pk, timeout=240):
    wait_until(lambda: TrainingRun.objects.values_list("status", flat=True).get(pk=pk) in FINISHED, timeout, f"for run {pk}")
    return TrainingRun.objects.get(pk=pk)


def test_online_runs_in_the_worker(celery_worker, prompted_project, tiny_version, other_reward_model, tiny_model, tmp_path):
    other = model_version_register(name="other-reward", base_model=other_reward_model[0], adapter_path=other_reward_model[1], kind="reward")
    vanishing = model_version_register(
        name="vanishing-reward", base_model=tiny_model, adapter_path=str(build_reward_adapter(tiny_model, tmp_path / "vanishing")), kind="reward"
    )
    rloo = launch(prompted_project, tiny_version, other, kind="rloo", settings={**ONLINE_RUN, "length_penalty": 0.5})
    doomed = launch(prompted_project, tiny_version, vanishing)
    prompts_before = list(prompted_project.prompts.order_by("pk").values_list("pk", "messages", "split"))
    shutil.rmtree(vanishing.adapter_path)  # after the launch's checks: the worker finds it gone

    rloo = wait_finished(rloo.pk)
    assert rloo.status == "succeeded", rloo.error + celery_worker.log[-3000:]
    assert rloo.step == rloo.total_steps == 2 and rloo.summary["quantized_layers"] > 0
    assert rloo.summary["reward_tokenizer"] == "re-tokenized" and rloo.summary["device"] == "cpu"
    names = set(TrainingMetric.objects.filter(run=rloo).values_list("name", flat=True))
    assert {"reward", "reward_std", "kl", "rewards/reward_model/mean", "rewards/length_penalty/mean", "completions/mean_length"} <= names
    samples = TrainingSample.objects.filter(run=rloo)
    assert samples.count() == 8 and all(set(sample.rewards) == {"reward_model", "length_penalty"} for sample in samples)
    version = rloo.model_version
    assert version.kind == "policy" and version.parent == tiny_version
    assert version.config["dataset_manifest"]["reward_model"]["name"] == "other-reward"
    assert Path(version.adapter_path, "adapter_model.safetensors").is_file()

    doomed = wait_finished(doomed.pk)
    assert doomed.status == "failed" and "No adapter weights at" in doomed.error and str(vanishing.adapter_path) in doomed.error
    assert not ModelVersion.objects.filter(training_run=doomed).exists()
    assert list(prompted_project.prompts.order_by("pk").values_list("pk", "messages", "split")) == prompts_before


def test_cancel_a_running_grpo_run_in_the_worker(celery_worker, prompted_project, tiny_version, reward_version):
    run = launch(prompted_project, tiny_version, reward_version, settings={**ONLINE_RUN, "max_steps": 200})
    wait_until(lambda: TrainingRun.objects.get(pk=run.pk).step >= 2, 180, "for two steps")
    job_cancel(job=run)
    run = wait_finished(run.pk)
    assert run.status == "cancelled" and run.step < run.total_steps == 200
    assert not ModelVersion.objects.filter(training_run=run).exists()
    assert Path(run.summary["adapter_dir"], "adapter_model.safetensors").is_file()
    assert TrainingSample.objects.filter(run=run).exists()
