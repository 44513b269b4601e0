"""Reward models at work, in-process: scoring jobs, accuracy on held-out human pairs, hardest-first queue."""

import shutil
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from annotation.labeling import assignment_next
from annotation.models import Project, RankingItem
from generation.models import Candidate
from tests.factories import make_item, user_with_role
from tests.tiny_models import build_reward_adapter
from tests.training_tests.conftest import SMALL_RUN
from training import scoring, selectors, services
from training.models import CandidateScore, ScoringJob


@pytest.fixture
def reward_version(ranked_project, tiny_version):
    run = services.training_run_create(
        kind="reward", base_version=tiny_version, projects=[ranked_project],
        settings={**SMALL_RUN, "epochs": 6, "learning_rate": 5e-3},
    )
    run = services.training_run_execute(run.pk)
    assert run.status == "succeeded", run.error
    return run.model_version


def test_a_scoring_job_scores_every_candidate_and_measures_held_out_accuracy(ranked_project, reward_version):
    assert reward_version.kind == "reward" and {"accuracy", "margin"} <= set(reward_version.metrics["eval"])
    job = scoring.scoring_job_execute(scoring.scoring_job_create(project=ranked_project, reward_version=reward_version).pk)
    assert job.status == "succeeded", job.error
    assert job.device == "cpu"  # the device the scorer resolved, recorded on the job
    assert job.candidates_done == job.candidates_total == Candidate.objects.count() == CandidateScore.objects.count()
    accuracy = selectors.reward_accuracy(reward_version, ranked_project)
    assert accuracy["pairs"] == 6  # the held-out prompts' pairs: the run trained on the other 12
    assert accuracy["accuracy"] == 1.0
    # Scoring again replaces the scores instead of adding rows.
    scoring.scoring_job_execute(scoring.scoring_job_create(project=ranked_project, reward_version=reward_version).pk)
    assert CandidateScore.objects.count() == Candidate.objects.count()


def test_the_queue_can_put_the_items_hardest_for_the_reward_model_first(ranked_project, reward_version):
    items = [make_item(ranked_project, texts=texts) for texts in (
        ["You are wonderful, my friend!", "Go away.", "You are fine."],  # easy to separate
        ["You are fine, number 1.", "You are fine, number 2.", "You are fine, number 3."],  # hard
    )]
    with pytest.raises(ValidationError, match="not scored"):
        scoring.project_queue_order_set(project=ranked_project, order="reward_spread", reward_version=reward_version)
    scoring.scoring_job_execute(scoring.scoring_job_create(project=ranked_project, reward_version=reward_version).pk)
    scoring.project_queue_order_set(project=ranked_project, order="reward_spread", reward_version=reward_version)
    easy, hard = (RankingItem.objects.get(pk=item.pk) for item in items)
    assert hard.reward_spread < easy.reward_spread
    labeler = user_with_role("labeler", "queue-labeler")
    assert assignment_next(labeler=labeler, project=ranked_project).item_id == hard.pk
    scoring.project_queue_order_set(project=ranked_project, order="fewest_rankings")
    assert Project.objects.get(pk=ranked_project.pk).queue_reward_version is None
    assert not RankingItem.objects.filter(reward_spread__isnull=False).exists()


def test_scoring_needs_a_reward_model_and_candidates(ranked_project, tiny_version, project):
    with pytest.raises(ValidationError, match="reward model"):
        scoring.scoring_job_create(project=ranked_project, reward_version=tiny_version)
    with pytest.raises(ValidationError, match="reward model"):
        scoring.project_queue_order_set(project=ranked_project, order="reward_spread", reward_version=tiny_version)
    with pytest.raises(ValidationError):
        scoring.project_queue_order_set(project=ranked_project, order="random")
    assert not ScoringJob.objects.exists()


# --- the scorer on its own (no Django): its device -------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_reward_adapter(tiny_model, tmp_path_factory):
    return str(build_reward_adapter(tiny_model, tmp_path_factory.mktemp("tiny-reward-adapter")))


@pytest.mark.slow
@pytest.mark.parametrize("load_in_4bit", [False, True])
def test_the_scorer_reports_and_uses_the_resolved_device(tiny_model, tiny_reward_adapter, load_in_4bit):
    import bitsandbytes
    import torch

    from training.trainers.scoring import RewardScorer

    scorer = RewardScorer(base_model=tiny_model, adapter_path=tiny_reward_adapter, load_in_4bit=load_in_4bit, device="cpu")
    assert scorer.device == "cpu"
    assert {parameter.device for parameter in scorer.model.parameters()} == {torch.device("cpu")}
    assert any(isinstance(m, bitsandbytes.nn.Linear4bit) for m in scorer.model.modules()) is load_in_4bit
    seen = []
    scorer.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.extend(kwargs[name].device for name in ("input_ids", "attention_mask")), with_kwargs=True
    )
    conversations = [([{"role": "user", "content": f"Say something, number {i}."}], "Hello.") for i in range(3)]
    scores = [score for batch in scorer.score(conversations, batch_size=2) for score in batch]
    assert len(scores) == 3 and all(score == score for score in scores)  # finite numbers, not NaN
    assert len(seen) == 4 and set(seen) == {torch.device("cpu")}
    auto = RewardScorer(base_model=tiny_model, adapter_path=tiny_reward_adapter, load_in_4bit=load_in_4bit)
    assert auto.device == ("cuda" if torch.cuda.is_available() else "cpu")


def test_the_scorer_refuses_a_gpu_it_does_not_have():
    import torch

    from training.trainers.scoring import RewardScorer

    if torch.cuda.is_available():
        pytest.skip("checks the refusal on a machine without a GPU")
    with pytest.raises(ValueError, match="Device 'cuda' was asked for, but no CUDA GPU is available here"):
        RewardScorer(base_model="unused", adapter_path="unused", device="cuda")


def test_the_scorer_refuses_an_adapter_without_a_score_head(tmp_path, tiny_model, tiny_reward_adapter):
    """A policy (DPO) adapter has no score head: scoring with it would use the base's random head."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from training.trainers.scoring import RewardScorer, require_score_head

    require_score_head(tiny_reward_adapter)  # the reward adapter carries its head
    with safe_open(str(Path(tiny_reward_adapter, "adapter_model.safetensors")), framework="pt") as tensors:
        lora_only = {key: tensors.get_tensor(key) for key in tensors.keys() if ".score." not in key}
    assert lora_only and all(isinstance(value, torch.Tensor) for value in lora_only.values())
    policy_like = tmp_path / "policy-adapter"
    shutil.copytree(tiny_reward_adapter, policy_like)
    save_file(lora_only, str(policy_like / "adapter_model.safetensors"))
    with pytest.raises(ValueError, match="has no score head: it is not a reward model adapter"):
        RewardScorer(base_model=tiny_model, adapter_path=str(policy_like), device="cpu")


def test_the_run_page_and_list_show_held_out_accuracy_with_its_interval_and_pairs(client, reward_version):
    from django.urls import reverse

    from tests.factories import user_with_role

    run = reward_version.training_run
    estimate = selectors.heldout_accuracy(reward_version)
    assert estimate.count == run.eval_pairs_used > 0 and estimate.value == reward_version.metrics["eval"]["accuracy"]
    shown = f"{estimate.value:.3f} [{estimate.low:.3f}, {estimate.high:.3f}] ({estimate.count})"
    client.force_login(user_with_role("researcher"))
    assert shown in client.get(reverse("run_detail", args=[run.pk])).content.decode()
    assert shown in client.get(reverse("run_list")).content.decode()
