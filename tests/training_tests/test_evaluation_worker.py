"""An evaluation through a real Celery worker, launched and followed by `manage.py evaluate`, which prints the table."""

from io import StringIO

import pytest
from django.core.management import call_command

from generation.models import ModelVersion
from tests.factories import ProjectFactory, PromptFactory
from tests.tiny_models import build_reward_adapter
from training.models import Evaluation

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_the_evaluate_command_runs_an_evaluation_in_the_worker_and_prints_the_table(celery_worker, tiny_model, tiny_adapter, tmp_path):
    project = ProjectFactory(slug="judged")
    prompts = [PromptFactory(project=project, split="heldout") for _ in range(3)]
    PromptFactory(project=project)  # a training prompt: not evaluated with --prompts heldout
    ModelVersion.objects.create(name="w-base", base_model=tiny_model)
    ModelVersion.objects.create(name="w-tuned", base_model=tiny_model, adapter_path=tiny_adapter)
    ModelVersion.objects.create(name="w-judge", base_model=tiny_model, adapter_path=str(build_reward_adapter(tiny_model, tmp_path / "judge")), kind="reward")
    out = StringIO()
    call_command(
        "evaluate", "judged", "--model", "w-tuned", "--model", "w-base", "--judge", "w-judge", "--samples", "2",
        "--temperature", "1.0", "--max-new-tokens", "6", "--backend", "transformers", stdout=out,
    )
    evaluation = Evaluation.objects.get()
    assert evaluation.status == "succeeded", evaluation.error + celery_worker.log[-3000:]
    assert evaluation.worker and evaluation.responses.count() == 3 * 2 * 2
    assert sorted(evaluation.prompts.values_list("prompt_id", flat=True)) == [p.pk for p in prompts]
    printed = out.getvalue()
    pair = evaluation.results["pairs"][0]
    assert "Queued evaluation" in printed and "w-tuned over w-base" in printed
    assert f"{pair['win_rate']['value']:.3f} [{pair['win_rate']['low']:.3f}, {pair['win_rate']['high']:.3f}] n=3" in printed
    assert f"{pair['wins']}/{pair['ties']}/{pair['losses']}" in printed
