"""Two machines sharing an S3 artifact store (moto's standalone server, tests/s3_server.py), played by two real
Celery workers with their own cache folders: a DPO run on one publishes its adapter to the store, and a generation
job on the other, starting from an empty cache, downloads the base and the adapter and generates with them."""

from pathlib import Path

import pytest

from config import artifacts
from generation import jobs
from generation.models import Candidate, GenerationJob
from generation.services import model_version_register
from tests.factories import PromptFactory
from tests.training_tests.conftest import SMALL_RUN, rank_items
from tests.training_tests.test_worker import wait_finished
from tests.worker import Worker
from training import services
from training.models import TrainingRun

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def cache_entries(folder: Path) -> dict[str, list[str]]:
    """Cache entry -> the names of its top-level files (complete entries only)."""
    if not folder.is_dir():
        return {}
    return {
        entry.name: sorted(p.name for p in entry.iterdir() if p.name != artifacts.CACHE_MARKER)
        for entry in folder.iterdir() if (entry / artifacts.CACHE_MARKER).is_file()
    }


def test_an_adapter_trained_on_one_worker_generates_on_another(s3_store, project, users, tiny_model, tmp_path):
    base_uri = artifacts.publish(Path(tiny_model), "models/tiny")
    base = model_version_register(name="tiny-in-s3", base_model=base_uri)
    project.responses_per_item = 3
    project.save()
    rank_items(project, base, users["labeler"], prompts=6, heldout=2)
    cache_a, cache_b = tmp_path / "machine-a-cache", tmp_path / "machine-b-cache"

    trainer = Worker(queues="gpu", extra_env=s3_store.env(cache_a))
    try:
        run = services.training_run_create(kind="dpo", base_version=base, projects=[project], settings={**SMALL_RUN, "epochs": 1})
        run = wait_finished(TrainingRun, run.pk)
    finally:
        trainer.stop()
    assert run.status == "succeeded", run.error + trainer.log[-3000:]
    version = run.model_version
    assert run.output_dir == f"{s3_store.url}/artifacts/training-runs/{run.pk}"
    assert version.adapter_path == f"{run.output_dir}/adapter" and version.base_model == base_uri
    stored = s3_store.keys()
    for name in ("adapter/adapter_config.json", "adapter/adapter_model.safetensors", "pairs.jsonl", "manifest.json", "metrics.json"):
        assert f"prefloop/artifacts/training-runs/{run.pk}/{name}" in stored
    assert [files for files in cache_entries(cache_a).values() if "model.safetensors" in files], "machine A fetched the base"
    assert not services.run_directory(run).exists(), "the store keeps the only copy"

    prompt = PromptFactory(project=project, messages=[{"role": "user", "content": "A prompt for the next round."}])
    generator = Worker(queues="gpu", extra_env=s3_store.env(cache_b))
    try:
        job = jobs.generation_job_create(
            project=project, plan=[jobs.PlanEntry(version, 3)], prompt_selection={"mode": "ids", "ids": [prompt.pk]},
            sampling={"temperature": 1.0, "max_new_tokens": 8, "seed": 5}, backend="transformers",
        )
        job = wait_finished(GenerationJob, job.pk)
    finally:
        generator.stop()
    assert job.status == "succeeded", job.error + generator.log[-3000:]
    assert Candidate.objects.filter(prompt=prompt, model_version=version).count() == 3
    fetched = cache_entries(cache_b).values()
    assert any("model.safetensors" in files for files in fetched) and any("adapter_config.json" in files for files in fetched)
    assert job.worker != run.worker
