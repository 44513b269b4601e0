"""Training runs in-process: pair selection, the split, validation, running, registering, failing, reaping."""

from datetime import timedelta
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from annotation.labeling import item_flag
from annotation.models import PreferencePair, Prompt, Ranking
from annotation.pairs import pair_filter_from, selected_pairs
from config.jobs import job_cancel
from generation.models import ModelVersion
from generation.services import model_version_register
from tests.factories import user_with_role
from tests.training_tests.conftest import SMALL_RUN, rank_items
from training import selectors, services
from training.models import TrainingMetric, TrainingRun, TrainingRunPair


def create_run(project, version, kind="dpo", settings=None, pair_filter=None):
    return services.training_run_create(
        kind=kind, base_version=version, projects=[project], pair_filter=pair_filter, settings={**SMALL_RUN, **(settings or {})}
    )


def snapshot_pairs():
    return list(PreferencePair.objects.order_by("id").values_list("id", "chosen_id", "rejected_id", "margin", "ranking_id"))


# --- selection and split ----------------------------------------------------------------------------------------


def test_the_run_fixes_its_pairs_split_by_prompt(ranked_project, tiny_version):
    run = create_run(ranked_project, tiny_version)
    assert run.dataset_manifest["pairs"] == {"train": 12, "eval": 6}
    assert run.dataset_manifest["prompts"] == {"train": 4, "eval": 2}
    assert run.dataset_manifest["eval_rule"] == "prompts marked held-out" and len(run.dataset_manifest["sha256"]) == 64
    eval_prompts = set(TrainingRunPair.objects.filter(run=run, split="eval").values_list("pair__prompt_id", flat=True))
    train_prompts = set(TrainingRunPair.objects.filter(run=run, split="train").values_list("pair__prompt_id", flat=True))
    assert not eval_prompts & train_prompts
    assert eval_prompts == set(Prompt.objects.filter(split="heldout").values_list("id", flat=True))
    # Pairs ranked after the launch do not join the run.
    rank_items(ranked_project, tiny_version, user_with_role("labeler", "late-labeler"), prompts=1, heldout=0)
    assert TrainingRunPair.objects.filter(run=run).count() == 18


def test_without_held_out_prompts_a_fixed_fraction_of_prompts_is_held_out(ranked_project, tiny_version):
    Prompt.objects.update(split=Prompt.Split.TRAIN)
    pairs = selected_pairs([ranked_project], pair_filter_from({"eval_fraction": 0.5}))
    first = selectors.split_examples(pairs, 0.5)
    again = selectors.split_examples(pairs, 0.5)
    assert [e.pair_id for e in first.eval] == [e.pair_id for e in again.eval] and first.eval_rule.startswith("50%")
    assert first.prompts["train"] + first.prompts["eval"] == 6 and first.prompts["eval"] > 0
    eval_prompts = {tuple(e.prompt[0].values()) for e in first.eval}
    assert not eval_prompts & {tuple(e.prompt[0].values()) for e in first.train}
    assert not selectors.split_examples(pairs, 0.0).eval


def test_filters(ranked_project, tiny_version):
    everything = pair_filter_from({})
    assert selected_pairs([ranked_project], everything).count() == 18
    assert not selected_pairs([ranked_project], pair_filter_from({"sources": ["import"]})).exists()
    # A flagged item's pairs are left out unless asked for.
    ranking = Ranking.objects.order_by("id").first()
    other = user_with_role("labeler", "flagging-labeler")
    from annotation.labeling import assignment_next

    ranked_project.rankings_per_item = 2
    ranked_project.save()
    assert assignment_next(labeler=other, project=ranked_project).item_id == ranking.item_id
    item_flag(labeler=other, item_id=ranking.item_id, reason="unsafe")
    assert selected_pairs([ranked_project], everything).count() == 15
    assert selected_pairs([ranked_project], pair_filter_from({"exclude_flagged": False})).count() == 18
    # Dates are inclusive days.
    today = timezone.localdate()
    assert selected_pairs([ranked_project], pair_filter_from({"created_from": today.isoformat(), "created_to": today.isoformat()})).count() == 15
    assert not selected_pairs([ranked_project], pair_filter_from({"created_to": (today - timedelta(days=1)).isoformat()})).exists()


def test_agreement_threshold_keeps_items_labelers_agree_on(project, tiny_version):
    project.responses_per_item, project.rankings_per_item = 3, 2
    project.save()
    first, second = user_with_role("labeler", "first-labeler"), user_with_role("labeler", "second-labeler")
    agreeing = rank_items(project, tiny_version, first, prompts=2, heldout=0)
    # The second labeler agrees on the first item and reverses the second.
    from annotation.labeling import assignment_next, ranking_submit

    for ranking, reverse in zip(agreeing, [False, True]):
        assert assignment_next(labeler=second, project=project).item_id == ranking.item_id
        tiers = list(reversed(ranking.tiers)) if reverse else ranking.tiers
        ranking_submit(labeler=second, item_id=ranking.item_id, tiers=tiers)
    kept = selected_pairs([project], pair_filter_from({"min_agreement": 0.9}))
    assert set(kept.values_list("ranking__item_id", flat=True)) == {agreeing[0].item_id}
    assert kept.count() == 6


@pytest.mark.parametrize(
    "pair_filter, field",
    [
        ({"sources": ["human", "web"]}, "sources"),
        ({"min_agreement": 1.5}, "min_agreement"),
        ({"eval_fraction": "lots"}, "eval_fraction"),
        ({"eval_fraction": 0.95}, "eval_fraction"),
        ({"created_from": "22/11/2026"}, "created_from"),
        ({"created_from": "2026-11-22", "created_to": "2026-11-01"}, "created_to"),
        ({"exclude_flagged": "no"}, "exclude_flagged"),
        ({"source": ["human"]}, "source"),
    ],
)
def test_bad_filters_name_the_field(pair_filter, field):
    with pytest.raises(ValidationError) as caught:
        pair_filter_from(pair_filter)
    assert field in caught.value.message_dict


def test_launch_validation(ranked_project, tiny_version, project):
    with pytest.raises(ValidationError) as caught:
        create_run(ranked_project, tiny_version, settings={"lora_rank": 0, "beta": -1})
    assert set(caught.value.message_dict) == {"lora_rank", "beta"}
    reward = model_version_register(name="a-reward-model", base_model=tiny_version.base_model, kind=ModelVersion.Kind.REWARD)
    with pytest.raises(ValidationError, match="policy model"):
        create_run(ranked_project, reward)
    with pytest.raises(ValidationError, match="No pair matches"):
        create_run(ranked_project, tiny_version, pair_filter={"sources": ["import"]})
    Prompt.objects.update(split=Prompt.Split.HELDOUT)
    with pytest.raises(ValidationError, match="held out"):
        create_run(ranked_project, tiny_version)
    assert not TrainingRun.objects.exists()


# --- running ---------------------------------------------------------------------------------------------------


def test_a_dpo_run_registers_a_policy_version_traced_to_its_pairs(ranked_project, tiny_version):
    before = snapshot_pairs()
    run = create_run(ranked_project, tiny_version, settings={"epochs": 1})
    run = services.training_run_execute(run.pk)
    assert run.status == "succeeded", run.error
    assert (run.step, run.total_steps) == (6, 6) and run.training_started_at
    assert run.device == "cpu" and run.load_seconds > 0  # the device the run resolved, recorded on it
    version = run.model_version
    assert version.kind == "policy" and version.parent == tiny_version and version.base_model == tiny_version.base_model
    pairs_used = {"train": 12, "eval": 6, "truncated": 0, "dropped": 0}  # all fit: the trainer used every pair
    assert version.config["dataset_manifest"] == {**run.dataset_manifest, "pairs_used": pairs_used}
    assert version.config["training"]["lora_rank"] == 8 and (run.train_pairs_used, run.eval_pairs_used) == (12, 6)
    assert "rewards/accuracies" in version.metrics["eval"]
    assert Path(version.adapter_path, "adapter_config.json").is_file()
    folder = Path(run.output_dir)
    assert {"pairs.jsonl", "manifest.json", "settings.json", "metrics.json", "adapter"} <= {p.name for p in folder.iterdir()}
    assert len((folder / "pairs.jsonl").read_text().splitlines()) == 18
    names = set(TrainingMetric.objects.filter(run=run, split="eval").values_list("name", flat=True))
    assert {"loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"} <= names
    assert TrainingMetric.objects.filter(run=run, split="train", name="loss").count() == 6
    assert run.summary["quantized_layers"] > 0 and run.summary["examples"] == {
        "train": 12, "eval": 6, "train_selected": 12, "eval_selected": 6, "truncated": 0, "dropped": 0}
    assert snapshot_pairs() == before  # no run touches rankings or pairs


def test_a_round_on_top_of_a_dpo_version_starts_from_the_merged_policy(ranked_project, tiny_model, tiny_adapter):
    earlier = model_version_register(name="round-1", base_model=tiny_model, adapter_path=tiny_adapter)
    run = services.training_run_execute(create_run(ranked_project, earlier, settings={"epochs": 0.5}).pk)
    assert run.status == "succeeded", run.error
    merged = Path(run.output_dir) / "base"
    assert run.model_version.base_model == str(merged) and (merged / "config.json").is_file()
    assert run.model_version.parent == earlier


def test_a_crashing_run_is_failed_with_its_error_and_registers_nothing(ranked_project, tiny_version):
    before = snapshot_pairs()
    run = services.training_run_execute(create_run(ranked_project, tiny_version, settings={"target_modules": "no_such_layer"}).pk)
    assert run.status == "failed" and "no_such_layer" in run.error and run.finished_at
    assert not ModelVersion.objects.filter(training_run=run).exists()
    assert snapshot_pairs() == before


def test_cancel_queued_and_finished(ranked_project, tiny_version):
    run = create_run(ranked_project, tiny_version)
    run = job_cancel(job=run)
    assert run.status == "cancelled"
    assert services.training_run_execute(run.pk).status == "cancelled"  # the queued task finds it cancelled
    with pytest.raises(ValidationError, match="already cancelled"):
        job_cancel(job=run)


def test_a_run_whose_worker_died_is_failed(ranked_project, tiny_version):
    quiet = create_run(ranked_project, tiny_version)
    TrainingRun.objects.filter(pk=quiet.pk).update(status="running", heartbeat_at=timezone.now() - timedelta(minutes=6))
    redelivered = create_run(ranked_project, tiny_version)
    TrainingRun.objects.filter(pk=redelivered.pk).update(status="running", heartbeat_at=timezone.now())
    # Its message delivered again while its worker still beats: not run twice, left to its worker.
    assert services.training_run_execute(redelivered.pk).status == "running"
    quiet.refresh_from_db()  # reaped when the next job of any kind started
    assert quiet.status == "failed" and "stopped" in quiet.error
