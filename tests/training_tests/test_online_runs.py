"""Launching GRPO and RLOO runs: the service's checks (a reward model, prompts that fit, a reward tokenizer that can
render a conversation), the browser form, the API and ``manage.py train --kind grpo|rloo --judge``; the run page with
its charts, sample completions and reward-hacking signs; who may do what."""

import json
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError
from django.urls import reverse

from generation.models import ModelVersion
from generation.services import model_version_register
from tests.training_tests.conftest import ONLINE_RUN, authenticated, launch, train
from training import selectors, services
from training.models import TrainingMetric, TrainingRun, TrainingSample

pytestmark = pytest.mark.django_db

ONLINE_FLAGS = [
    "--lora-rank", "8", "--lora-alpha", "16", "--target-modules", "q_proj,v_proj", "--batch-size", "4", "--max-length", "128",
    "--max-completion-length", "12", "--max-steps", "2",
]






# --- the service -------------------------------------------------------------------------------------------------------


def test_a_launch_fixes_the_train_prompts_and_the_reward_model(prompted_project, tiny_version, reward_version):
    run = launch(prompted_project, tiny_version, reward_version)
    train_prompts = list(prompted_project.prompts.filter(split="train").order_by("pk").values_list("pk", flat=True))
    assert list(run.run_prompts.order_by("prompt_id").values_list("prompt_id", flat=True)) == train_prompts
    assert run.reward_version == reward_version and run.trains_on == "prompts" and run.pair_filter == {"mode": "train"}
    manifest = run.dataset_manifest
    assert manifest["prompts"] == {"train": 8, "eval": 0} and manifest["reward_model"]["name"] == "tiny-reward"
    assert manifest["lengths"]["train"]["used"] == 8 and manifest["lengths"]["max_length"] == 128
    assert run.config["beta"] == 0.04 and run.config["num_generations"] == 4 and "too_long" not in run.config

    listed = launch(prompted_project, tiny_version, reward_version, kind="rloo", pair_filter={"mode": "ids", "ids": train_prompts[:8]})
    assert listed.run_prompts.count() == 8 and listed.config["beta"] == 0.05


def test_launch_refusals(prompted_project, tiny_version, reward_version, tmp_path):
    def refusal(**kwargs):
        arguments = {"project": prompted_project, "base": tiny_version, "reward": reward_version, **kwargs}
        with pytest.raises(ValidationError) as caught:
            launch(**arguments)
        return caught.value.message_dict

    assert refusal(reward=None) == {"reward_version": ["Choose the reward model the grpo run trains the policy against."]}
    assert refusal(reward=tiny_version) == {"reward_version": ["tiny-policy is not a reward model trained or registered here."]}
    with pytest.raises(ValidationError, match="Only GRPO and RLOO runs train against a reward model"):
        services.training_run_create(kind="dpo", base_version=tiny_version, projects=[prompted_project], reward_version=reward_version)
    assert refusal(base=reward_version)["base_version"][0].startswith("Train on a policy model")
    assert "prompt_selection" in refusal(pair_filter={"mode": "heldout"})
    assert "prompt_selection" in refusal(pair_filter={"mode": "ids", "ids": ["1"]})
    few = refusal(pair_filter={"mode": "ids", "ids": list(prompted_project.prompts.values_list("pk", flat=True)[:3])})
    assert few == {"prompt_selection": ["Only 3 of 3 training prompts would be used; a run needs at least 8. Select more prompts."]}
    tight = refusal(settings={**ONLINE_RUN, "max_length": 24, "max_completion_length": 12})
    assert "Only 0 of 8 training prompts" in tight["max_length"][0] and "the longest prompt + the max completion length" in tight["max_length"][0]
    assert refusal(settings={**ONLINE_RUN, "batch_size": 3})["batch_size"][0].startswith("Batch size x gradient accumulation (3 completions)")

    # A reward model whose tokenizer cannot render a conversation would mis-score every completion: refused.
    no_template = Path(reward_version.adapter_path)
    copy = tmp_path / "no-template"
    copy.mkdir()
    for file in no_template.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    config = json.loads((copy / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (copy / "tokenizer_config.json").write_text(json.dumps(config))
    (copy / "chat_template.jinja").unlink(missing_ok=True)
    bare = model_version_register(name="bare-reward", base_model=reward_version.base_model, adapter_path=str(copy), kind="reward")
    assert "has no chat template" in refusal(reward=bare)["reward_version"][0]
    assert not TrainingRun.objects.exists()


def test_the_check_says_whether_the_reward_model_re_tokenizes(prompted_project, tiny_version, reward_version, other_reward_model):
    same = services.training_run_check(
        kind="grpo", base_version=tiny_version, projects=[prompted_project], settings=ONLINE_RUN, reward_version=reward_version
    ).as_dict()
    assert same["unit"] == "prompts" and same["prompts"] == {"train": 8, "eval": 0} and same["pairs"] is None
    assert same["reward_tokenizer"] == "same" and same["can_launch"]
    other = model_version_register(name="other-reward", base_model=other_reward_model[0], adapter_path=other_reward_model[1], kind="reward")
    check = services.training_run_check(
        kind="rloo", base_version=tiny_version, projects=[prompted_project], settings=ONLINE_RUN, reward_version=other
    ).as_dict()
    assert check["reward_tokenizer"] == "re-tokenized" and check["can_launch"]


@pytest.mark.slow
def test_an_online_run_in_process_registers_a_policy_with_its_reward_model(prompted_project, tiny_version, reward_version):
    run = services.training_run_execute(launch(prompted_project, tiny_version, reward_version).pk)
    assert run.status == "succeeded", run.error
    version = run.model_version
    assert version.kind == "policy" and version.parent == tiny_version and "against reward model tiny-reward" in version.notes
    assert version.config["dataset_manifest"]["reward_model"]["name"] == "tiny-reward"
    assert version.config["dataset_manifest"]["prompts_used"]["train"] == 8
    assert (run.train_pairs_used, run.eval_pairs_used) == (8, 0)
    assert set(TrainingMetric.objects.filter(run=run).values_list("name", flat=True)) >= {"reward", "reward_std", "kl", "completions/mean_length"}
    assert TrainingSample.objects.filter(run=run).count() == 8  # 4 per logged step
    assert Path(run.output_dir, "prompts.jsonl").read_text().count("\n") == 8
    assert selectors.lineage(version)[0]["made_by"] == f"GRPO policy run {run.pk} against tiny-reward"


# --- the form and the run page --------------------------------------------------------------------------------------------


def form_data(project, version, reward, **overrides):
    """What the browser sends for a GRPO run: every field of the page, the other kinds' hidden ones included."""
    data = {
        "kind": "grpo", "base_version": version.name, "projects": [project.slug], "reward_version": reward.name,
        "prompts": "train", "prompt_ids": "",
        "sources": ["human", "import", "edit"], "exclude_flagged": "on", "include_evaluation": "on", "eval_fraction": "0.1",
        "demo_sources": ["written"], "demo_statuses": ["accepted"], "demo_eval_fraction": "0.1",
        "lora_rank": "8", "lora_alpha": "16", "lora_dropout": "0.05", "target_modules": "q_proj, v_proj", "load_in_4bit": "on",
        "double_quant": "on", "beta": "", "loss_type": ["sigmoid"], "label_smoothing": "0", "use_margin": "on", "epochs": "1",
        "batch_size": "4", "gradient_accumulation": "1", "max_length": "128", "too_long": "truncate", "seed": "0", "bf16": "auto",
        "gradient_checkpointing": "auto", "num_generations": "4", "max_completion_length": "12", "temperature": "0.9",
        "max_steps": "2", "reward_weight": "1", "length_penalty": "0.5", "length_target": "6", "use_vllm": "auto",
    }
    data.update(overrides)
    return data


def test_the_form_launches_a_grpo_run(client, admin_user, prompted_project, tiny_version, reward_version):
    client.force_login(admin_user)
    page = client.get(reverse("run_create")).content.decode()
    assert 'data-hide-for="dpo reward sft" data-prompt-selection' in page and 'name="reward_version"' in page
    response = client.post(reverse("run_create"), form_data(prompted_project, tiny_version, reward_version))
    run = TrainingRun.objects.get()
    assert response.status_code == 302 and response.url == reverse("run_detail", args=[run.pk])
    assert run.kind == "grpo" and run.reward_version == reward_version and run.requested_by == admin_user
    assert run.config["temperature"] == 0.9 and run.config["length_penalty"] == 0.5 and run.config["beta"] == 0.04
    assert "loss_type" not in run.config and "use_margin" not in run.config

    missing = client.post(reverse("run_create"), form_data(prompted_project, tiny_version, reward_version, reward_version=""))
    assert missing.status_code == 422 and "Choose the reward model the grpo run trains the policy against." in missing.content.decode()
    listed = client.post(reverse("run_create"), form_data(prompted_project, tiny_version, reward_version, prompts="ids", prompt_ids="999999"))
    assert listed.status_code == 422 and "No prompt matches this selection." in listed.content.decode()
    checked = client.post(reverse("run_check"), form_data(prompted_project, tiny_version, reward_version), HTTP_HX_REQUEST="true")
    assert "Selected: <strong>8</strong> prompts, none held out." in checked.content.decode()


def test_the_run_page_shows_samples_to_admins_and_warns_of_reward_hacking(client, admin_user, researcher, prompted_project, tiny_version, reward_version):
    run = launch(prompted_project, tiny_version, reward_version)
    for step in range(1, 10):  # the reward rises while the completions grow: the page warns
        for name, value in (("reward", 0.1 * step), ("completions/mean_length", 10 + 10 * step), ("completions/clipped_ratio", 0.0)):
            TrainingMetric.objects.create(run=run, step=step, split="train", name=name, value=value)
    messages = [{"role": "user", "content": "Say something kind, number 3."}]
    for reward, text in ((0.9, "You are <b>lovely</b>."), (-0.4, "Go away.")):
        TrainingSample.objects.create(run=run, step=9, messages=messages, completion=text, tokens=6, reward=reward, rewards={"reward_model": reward})
    TrainingSample.objects.create(run=run, step=8, messages=messages, completion="An older batch.", tokens=3, reward=0.0, rewards={"reward_model": 0.0})

    client.force_login(admin_user)
    page = client.get(reverse("run_detail", args=[run.pk])).content.decode()
    assert "Completions at step 9" in page and "You are &lt;b&gt;lovely&lt;/b&gt;." in page and "An older batch." not in page
    assert page.index("You are &lt;b&gt;lovely") < page.index("Go away.")
    assert "grew from 30 to 90 tokens" in page and "against reward model <strong data-reward-model>tiny-reward</strong>" in page
    for metric in ("reward", "kl", "completions/mean_length"):
        assert f'data-metric="{metric}"' in page or metric == "kl"  # kl has no rows here
    client.force_login(researcher)
    page = client.get(reverse("run_detail", args=[run.pk])).content.decode()
    assert "Completions at step" not in page and "Go away." not in page and "grew from 30 to 90 tokens" in page


# --- the API ---------------------------------------------------------------------------------------------------------------


def test_the_api_launches_online_runs_and_shows_samples_to_admins_only(api_client, users, prompted_project, tiny_version, reward_version):
    body = {
        "kind": "rloo", "base_version": "tiny-policy", "projects": [prompted_project.slug], "reward_version": "tiny-reward",
        "prompt_selection": {"mode": "train"}, "settings": ONLINE_RUN,
    }
    for role in ("labeler", "researcher"):
        assert authenticated(api_client, users[role]).post("/api/training-runs/", body, format="json").status_code == 403
    admin = authenticated(api_client, users["admin"])
    response = admin.post("/api/training-runs/", body, format="json")
    assert response.status_code == 201, response.json()
    data = response.json()
    assert data["kind"] == "rloo" and data["reward_version"] == "tiny-reward" and data["prompt_selection"] == {"mode": "train"}
    assert data["pair_filter"] is None and data["demonstration_filter"] is None and data["prompts_used"] is None
    assert data["dataset_manifest"]["prompts"] == {"train": 8, "eval": 0}

    wrong = admin.post("/api/training-runs/", {**body, "pair_filter": {"sources": ["human"]}}, format="json")
    assert wrong.status_code == 400 and wrong.json()["pair_filter"] == ["Not used by a rloo run: give prompt_selection."]
    bad = admin.post("/api/training-runs/", {**body, "prompt_selection": {"mode": "ids", "ids": []}}, format="json")
    assert bad.status_code == 400 and "prompt_selection" in bad.json()
    no_reward = admin.post("/api/training-runs/", {**body, "reward_version": None}, format="json")
    assert no_reward.status_code == 400 and "reward_version" in no_reward.json()
    check = admin.post("/api/training-runs/check/", body, format="json").json()
    assert check["unit"] == "prompts" and check["prompts"] == {"train": 8, "eval": 0} and check["reward_tokenizer"] == "same"

    run = TrainingRun.objects.get()
    for step in (1, 2):
        TrainingSample.objects.create(run=run, step=step, messages=[], completion=f"at {step}", tokens=2, reward=step, rewards={"reward_model": step})
    samples = admin.get(f"/api/training-runs/{run.pk}/samples/?after_step=1").json()
    assert [row["completion"] for row in samples["results"]] == ["at 2"] and samples["results"][0]["rewards"] == {"reward_model": 2.0}
    for role in ("labeler", "researcher"):
        assert authenticated(api_client, users[role]).get(f"/api/training-runs/{run.pk}/samples/").status_code == 403
    assert authenticated(api_client, users["researcher"]).get(f"/api/training-runs/{run.pk}/").json()["reward_version"] == "tiny-reward"


# --- the command ------------------------------------------------------------------------------------------------------------


def test_train_grpo_with_a_judge_and_its_refusals(prompted_project, tiny_version, reward_version):
    output = train(prompted_project.slug, "--kind", "grpo", "--base", "tiny-policy", "--judge", "tiny-reward", *ONLINE_FLAGS, "--no-wait")
    run = TrainingRun.objects.get()
    assert output == f"Queued training run {run.pk} (8 train prompts / 0 eval prompts) on the gpu queue.\n"
    assert run.reward_version == reward_version and run.config["max_steps"] == 2
    ids = ",".join(str(pk) for pk in prompted_project.prompts.order_by("pk").values_list("pk", flat=True)[:9])
    train(prompted_project.slug, "--kind", "rloo", "--base", "tiny-policy", "--judge", "tiny-reward", "--prompts", ids, *ONLINE_FLAGS, "--no-wait")
    assert TrainingRun.objects.get(kind="rloo").run_prompts.count() == 9  # listed prompts may include held-out ones

    with pytest.raises(CommandError, match="reward_version: Choose the reward model"):
        train(prompted_project.slug, "--kind", "grpo", "--base", "tiny-policy", *ONLINE_FLAGS, "--no-wait")
    with pytest.raises(CommandError, match=r"--source: not for --kind grpo \(grpo and rloo runs train on prompts"):
        train(prompted_project.slug, "--kind", "grpo", "--base", "tiny-policy", "--judge", "tiny-reward", "--source", "human", "--no-wait")
    with pytest.raises(CommandError, match=r"--judge: not for --kind dpo"):
        train(prompted_project.slug, "--kind", "dpo", "--base", "tiny-policy", "--judge", "tiny-reward", "--no-wait")
    with pytest.raises(CommandError, match="num_generations: Only for grpo and rloo runs."):
        train(prompted_project.slug, "--kind", "dpo", "--base", "tiny-policy", "--num-generations", "4", "--no-wait")
    with pytest.raises(CommandError, match="No model version named 'nope'"):
        train(prompted_project.slug, "--kind", "grpo", "--base", "tiny-policy", "--judge", "nope", "--no-wait")
    assert TrainingRun.objects.count() == 2
    assert ModelVersion.objects.filter(kind="policy").count() == 1


def test_a_judge_preferring_the_base_on_held_out_prompts_is_a_sign(prompted_project, tiny_version, reward_version):
    from training.models import Evaluation, EvaluationModel
    from training.selectors import judge_win_rate_over_base, reward_hacking_signs, run_series

    run = launch(prompted_project, tiny_version, reward_version)
    policy = ModelVersion.objects.create(name="tiny-grpo", base_model=tiny_version.base_model, parent=tiny_version, training_run=run)
    for step in range(1, 7):
        TrainingMetric.objects.create(run=run, step=step, split="train", name="reward", value=step)
    assert judge_win_rate_over_base(run) is None and reward_hacking_signs(run, run_series([run])) == []
    # The evaluation's columns are base first: its win rate is the base's, turned round for the policy.
    evaluation = Evaluation.objects.create(
        project=prompted_project, judge=reward_version, status="succeeded",
        results={"pairs": [{"a": "tiny-policy", "b": "tiny-grpo", "win_rate": {"value": 0.8, "low": 0.65, "high": 0.9, "count": 30}}]},
    )
    for position, version in enumerate((tiny_version, policy)):
        EvaluationModel.objects.create(evaluation=evaluation, model_version=version, position=position)
    rate = judge_win_rate_over_base(TrainingRun.objects.get(pk=run.pk))
    assert (rate.value, rate.low, rate.high, rate.count) == pytest.approx((0.2, 0.1, 0.35, 30))
    (sign,) = reward_hacking_signs(TrainingRun.objects.get(pk=run.pk), run_series([run]))
    assert "the judge prefers the base: win rate 0.20 [0.10, 0.35] over 30 prompts" in sign
