"""Rejection sampling through a real Celery worker, launched and followed by `manage.py rejection_sample`, which prints
the summary: demonstrations and judge pairs made in the worker, judge pairs left out of the default pair selection."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from annotation.models import Demonstration, PreferencePair
from annotation.pairs import pair_filter_from, selected_pairs
from generation.models import ModelVersion
from tests.factories import ProjectFactory, PromptFactory
from tests.tiny_models import build_reward_adapter
from training import selection
from training.models import RejectionSamplingJob

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_the_rejection_sample_command_runs_the_job_in_the_worker_and_prints_the_summary(celery_worker, tiny_model, tmp_path):
    project = ProjectFactory(slug="sampled")
    prompts = [PromptFactory(project=project) for _ in range(3)]
    PromptFactory(project=project, split="heldout")  # not sampled: the train split is the default
    ModelVersion.objects.create(name="w-policy", base_model=tiny_model)
    judge = ModelVersion.objects.create(
        name="w-judge", base_model=tiny_model, adapter_path=str(build_reward_adapter(tiny_model, tmp_path / "judge")), kind="reward"
    )
    out = StringIO()
    call_command(
        "rejection_sample", "sampled", "--policy", "w-policy", "--judge", "w-judge", "--n", "4", "--select", "top-k-per-prompt",
        "--k", "2", "--pairs", "--temperature", "1.0", "--max-new-tokens", "6", "--backend", "transformers", stdout=out,
    )
    job = RejectionSamplingJob.objects.get()
    assert job.status == "succeeded", job.error + celery_worker.log[-3000:]
    assert job.worker and job.samples.count() == 3 * 4 and sorted(set(job.samples.values_list("prompt_id", flat=True))) == [p.pk for p in prompts]
    matrix = {}
    for row in job.samples.order_by("prompt_id", "sample"):
        matrix.setdefault(row.prompt_id, []).append(row.score if row.text.strip() else None)
    if all(len(set(job.samples.filter(prompt_id=p).values_list("text", flat=True))) == 4 for p in matrix):  # no repeated text
        assert set(job.samples.filter(selected=True).values_list("prompt_id", "sample")) == set(selection.top_k_per_prompt(matrix, 2))
    assert Demonstration.objects.filter(source="rejection_sampling", status="accepted").count() == job.selected_count == 6
    pairs = PreferencePair.objects.filter(source="judge", judge=judge)
    assert pairs.count() == job.pairs_created > 0
    assert not selected_pairs([project], pair_filter_from({})).exists()  # judge pairs stay out by default
    assert selected_pairs([project], pair_filter_from({"sources": ["judge"]})).count() == pairs.count()

    printed = out.getvalue()
    assert "Queued rejection sampling job" in printed and "Succeeded: 24/24 responses (generated, then scored)" in printed
    assert f"Rejection sampling job {job.pk}: 3 prompts x 4 responses from w-policy, judged by w-judge; Top K per prompt, K = 2." in printed
    assert f"{'every response':<20} {12:>8} {job.results['scores']['mean']:>9.3f}" in printed
    assert f"Selected 6 responses as accepted demonstrations (mean score {job.results['selected']['mean']:.3f}" in printed
    assert f"; {job.pairs_created} new judge pairs." in printed
    assert f"--rejection-job {job.pk}" in printed

    with pytest.raises(CommandError, match="K may be 1 to 4"):
        call_command("rejection_sample", "sampled", "--policy", "w-policy", "--judge", "w-judge", "--n", "4", "--select",
                     "top-k-per-prompt", "--k", "5", stdout=StringIO())
    with pytest.raises(CommandError, match="No model version named 'nobody'"):
        call_command("rejection_sample", "sampled", "--policy", "nobody", "--judge", "w-judge", stdout=StringIO())
    queued = StringIO()
    call_command("rejection_sample", "sampled", "--policy", "w-policy", "--judge", "w-judge", "--n", "2", "--prompts",
                 str(prompts[0].pk), "--temperature", "1.0", "--max-new-tokens", "4", "--backend", "transformers", "--no-wait", stdout=queued)
    assert "(1 prompts x 2 responses)" in queued.getvalue()
