"""SFT runs in-process: demonstrations selected and split by prompt, fixed at launch, refusals, running, registering
a policy version with its manifest (back to the rejection-sampling jobs behind its data), cancelling, and a DPO round
on top of the SFT version."""

import json
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from annotation.models import Demonstration, Prompt
from config.jobs import job_cancel
from generation.models import ModelVersion
from generation.services import model_version_register
from tests.factories import DemonstrationFactory, ProjectFactory, PromptFactory, user_with_role
from tests.training_tests.conftest import SMALL_RUN, demonstrate
from training import selectors, services
from training.models import RejectionSample, RejectionSamplingJob, TrainingMetric, TrainingRun, TrainingRunDemonstration

pytestmark = pytest.mark.django_db


def create_sft(project, version, demonstration_filter=None, settings=None, **kwargs):
    return services.training_run_create(
        kind="sft", base_version=version, projects=[project], pair_filter=demonstration_filter,
        settings={**SMALL_RUN, **(settings or {})}, **kwargs,
    )


def rejection_sampling_job(project, policy, judge, prompts: int = 12, heldout: int = 4, **fields):
    """A finished rejection-sampling job made by hand: two responses per prompt, the better one selected and made a
    demonstration (source rejection_sampling), as the job leaves them."""
    from annotation.importing import content_hash

    job = RejectionSamplingJob.objects.create(
        project=project, policy=policy, judge=judge, n=2, status="succeeded",
        sampling={"temperature": 0.8, "top_p": 0.95, "max_new_tokens": 64, "seed": 7}, **fields,
    )
    for index in range(prompts):
        split = Prompt.Split.HELDOUT if index >= prompts - heldout else Prompt.Split.TRAIN
        prompt = PromptFactory(project=project, split=split, messages=[{"role": "user", "content": f"Job {job.pk}: say hello, number {index}."}])
        for sample, (text, score) in enumerate([(f"Hello there, friend {index}!", 1.5), ("Hello.", -0.5)]):
            demonstration = None
            if sample == 0:
                demonstration = Demonstration.objects.create(
                    project=project, prompt=prompt, text=text, text_hash=content_hash(text), source="rejection_sampling",
                    status="accepted", metadata={"job": job.pk, "score": score},
                )
            RejectionSample.objects.create(
                job=job, prompt=prompt, sample=sample, text=text, score=score, selected=sample == 0, demonstration=demonstration
            )
    return job


# --- selection, split and the manifest -------------------------------------------------------------------------------


def test_the_run_fixes_its_demonstrations_split_by_prompt(demonstrated_project, tiny_version, admin_user):
    # Labelers' pending demonstrations stay out unless the filter asks for them.
    labeler = user_with_role("labeler", "sft-labeler")
    demonstrate(demonstrated_project, prompts=3, heldout=0, source="written", status="pending", labeler=labeler)
    run = create_sft(demonstrated_project, tiny_version, requested_by=admin_user)
    assert (run.kind, run.status, run.trains_on) == ("sft", "queued", "demonstrations")
    manifest = run.dataset_manifest
    assert manifest["demonstrations"] == run.selected_examples == {"train": 8, "eval": 4}
    assert manifest["sources"] == {"train": {"import": 8}, "eval": {"import": 4}} and manifest["statuses"] == ["accepted"]
    assert manifest["prompts"] == {"train": 8, "eval": 4} and manifest["eval_rule"] == "prompts marked held-out"
    assert manifest["projects"] == [demonstrated_project.slug] and manifest["rejection_sampling"] == [] and len(manifest["sha256"]) == 64
    assert manifest["lengths"]["train"] == {"selected": 8, "fit": 8, "used": 8, "truncated": 0, "dropped": 0}
    assert run.pair_filter == {
        "sources": ["written", "edited", "import", "rejection_sampling"], "statuses": ["accepted"], "rejection_jobs": [],
        "created_from": None, "created_to": None, "eval_fraction": 0.1,
    }
    assert run.config["learning_rate"] == 2e-4 and "beta" not in run.config and "use_margin" not in run.config
    rows = TrainingRunDemonstration.objects.filter(run=run)
    eval_prompts = set(rows.filter(split="eval").values_list("demonstration__prompt_id", flat=True))
    assert eval_prompts == set(Prompt.objects.filter(project=demonstrated_project, split="heldout").values_list("id", flat=True))
    assert not eval_prompts & set(rows.filter(split="train").values_list("demonstration__prompt_id", flat=True))
    assert not run.run_pairs.exists()
    # Demonstrations made after the launch do not join the run; asking for pending ones takes them.
    demonstrate(demonstrated_project, prompts=2, heldout=0)
    assert rows.count() == 12
    pending = create_sft(demonstrated_project, tiny_version, {"statuses": ["accepted", "pending"]})
    assert pending.dataset_manifest["sources"]["train"] == {"import": 10, "written": 3}


def test_the_split_holds_out_a_fixed_share_of_prompts_without_marked_ones(demonstrated_project):
    from annotation.demonstrations import demonstration_filter_from, selected_demonstrations

    Prompt.objects.update(split=Prompt.Split.TRAIN)
    demonstrations = selected_demonstrations([demonstrated_project], demonstration_filter_from({"eval_fraction": 0.5}))
    first, again = (selectors.split_demonstrations(demonstrations, 0.5) for _ in range(2))
    assert [e.demonstration_id for e in first.eval] == [e.demonstration_id for e in again.eval] and first.eval_rule.startswith("50%")
    assert first.eval and first.train and first.prompts["train"] + first.prompts["eval"] == 12
    assert not selectors.split_demonstrations(demonstrations, 0.0).eval


def test_a_run_on_one_rejection_sampling_job_traces_back_to_it(project, tiny_version, tiny_adapter, admin_user):
    """The call the rejection-sampling page makes for its one-step SFT launch."""
    judge = model_version_register(name="a-judge", base_model=tiny_version.base_model, adapter_path=tiny_adapter, kind=ModelVersion.Kind.REWARD)
    job = rejection_sampling_job(project, tiny_version, judge, selection="best-of-n", k=1)
    other = rejection_sampling_job(project, tiny_version, judge)  # another job's selection stays out
    demonstrate(project, prompts=4, heldout=0)  # so do other sources
    run = services.training_run_create(
        kind="sft", base_version=job.policy, projects=[job.project],
        pair_filter={"sources": ["rejection_sampling"], "rejection_jobs": [job.pk]}, settings=SMALL_RUN, requested_by=admin_user,
    )
    manifest = run.dataset_manifest
    assert manifest["demonstrations"] == {"train": 8, "eval": 4} and manifest["sources"] == {"train": {"rejection_sampling": 8}, "eval": {"rejection_sampling": 4}}
    assert manifest["rejection_sampling"] == [{
        "job": job.pk, "project": project.slug, "policy": "tiny-policy", "judge": "a-judge", "n": 2, "selection": "best-of-n", "k": 1,
        "sampling": {"temperature": 0.8, "top_p": 0.95, "max_new_tokens": 64, "seed": 7}, "finished_at": None, "demonstrations": 12,
    }]
    used = set(run.run_demonstrations.values_list("demonstration_id", flat=True))
    assert used == set(RejectionSample.objects.filter(job=job, selected=True).values_list("demonstration_id", flat=True))
    assert run.pair_filter["rejection_jobs"] == [job.pk] and run.pair_filter["sources"] == ["rejection_sampling"]
    assert other.pk not in {entry["job"] for entry in manifest["rejection_sampling"]}


# --- refusals ----------------------------------------------------------------------------------------------------------


def test_launch_refusals(demonstrated_project, tiny_version):
    with pytest.raises(ValidationError) as caught:
        create_sft(demonstrated_project, tiny_version, settings={"beta": 0.2, "loss_type": "sigmoid", "use_margin": True})
    assert caught.value.message_dict == {
        "beta": ["Only for dpo, grpo and rloo runs."], "loss_type": ["Only for dpo runs."], "use_margin": ["Only for reward runs."],
    }
    reward = model_version_register(name="a-reward", base_model=tiny_version.base_model, kind=ModelVersion.Kind.REWARD)
    with pytest.raises(ValidationError, match="policy model"):
        create_sft(demonstrated_project, reward)
    with pytest.raises(ValidationError) as caught:
        create_sft(demonstrated_project, tiny_version, {"sources": ["written", "edited"]})
    assert caught.value.message_dict == {"demonstration_filter": ["No demonstration matches this selection."]}
    with pytest.raises(ValidationError) as caught:  # a project without demonstrations
        create_sft(ProjectFactory(), tiny_version)
    assert caught.value.message_dict == {"demonstration_filter": ["No demonstration matches this selection."]}
    with pytest.raises(ValidationError) as caught:
        create_sft(demonstrated_project, tiny_version, {"sources": ["import", "web"], "statuses": "maybe", "rejection_jobs": ["x"], "min_agreement": 0.5})
    assert set(caught.value.message_dict) == {"sources", "statuses", "rejection_jobs", "min_agreement"}
    Prompt.objects.filter(project=demonstrated_project).update(split=Prompt.Split.HELDOUT)
    with pytest.raises(ValidationError, match="Every selected demonstration is held out"):
        create_sft(demonstrated_project, tiny_version)
    assert not TrainingRun.objects.exists()


def test_too_few_demonstrations_that_fit_are_refused_with_the_reason(project, tiny_version):
    demonstrate(project, prompts=6, heldout=0)
    nothing_held_out = {"eval_fraction": 0}
    with pytest.raises(ValidationError) as caught:
        create_sft(project, tiny_version, nothing_held_out)
    assert caught.value.message_dict == {
        "demonstration_filter": ["Only 6 of 6 training demonstrations would be used; a run needs at least 8. Select more demonstrations."]
    }
    for index in range(6):
        DemonstrationFactory(prompt=PromptFactory(project=project), text="You are wonderful, truly. " * 60)
    check = services.training_run_check(
        kind="sft", base_version=tiny_version, projects=[project], pair_filter=nothing_held_out, settings={**SMALL_RUN, "too_long": "drop"}
    )
    assert check.as_dict()["demonstrations"] == {"train": 12, "eval": 0} and check.as_dict()["pairs"] is None
    assert check.lengths.train.dropped == 6 and set(check.refusal) == {"max_length"}
    assert "Only 6 of 12 training demonstrations would be used" in check.refusal["max_length"] and "truncate longer demonstrations" in check.refusal["max_length"]
    # Truncated instead, all twelve are used.
    check = services.training_run_check(kind="sft", base_version=tiny_version, projects=[project], pair_filter=nothing_held_out, settings=SMALL_RUN)
    assert check.refusal is None and check.lengths.train.truncated == 6
    assert not TrainingRun.objects.exists()


# --- running ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def sft_run(demonstrated_project, tiny_version, admin_user):
    run = create_sft(demonstrated_project, tiny_version, settings={"epochs": 2}, requested_by=admin_user)
    run = services.training_run_execute(run.pk)
    assert run.status == "succeeded", run.error
    return run


def test_an_sft_run_registers_a_policy_version_with_its_manifest(sft_run, tiny_version, demonstrated_project):
    run = sft_run
    assert (run.step, run.total_steps) == (8, 8) and run.device == "cpu" and run.summary["quantized_layers"] > 0
    version = run.model_version
    assert version.kind == "policy" and version.parent == tiny_version and version.base_model == tiny_version.base_model
    assert version.name == f"tiny-policy-sft-run{run.pk}" and "on 8 demonstrations (4 held out" in version.notes
    used = {"train": 8, "eval": 4, "truncated": 0, "dropped": 0}
    assert version.config["dataset_manifest"] == {**run.dataset_manifest, "demonstrations_used": used}
    assert version.config["training"]["learning_rate"] == 2e-4 and "beta" not in version.config["training"]
    assert {"loss", "mean_token_accuracy"} <= set(version.metrics["eval"]) and version.created_by == run.requested_by
    assert (run.train_pairs_used, run.eval_pairs_used) == (8, 4) and services.pairs_used(run) == used
    assert Path(version.adapter_path, "adapter_config.json").is_file()
    folder = Path(run.output_dir)
    assert {"demonstrations.jsonl", "manifest.json", "settings.json", "metrics.json", "adapter"} <= {p.name for p in folder.iterdir()}
    assert not (folder / "pairs.jsonl").exists()
    rows = [json.loads(line) for line in (folder / "demonstrations.jsonl").read_text().splitlines()]
    assert [row["split"] for row in rows] == ["train"] * 8 + ["eval"] * 4
    first = Demonstration.objects.get(pk=rows[0]["demonstration_id"])
    assert rows[0] == {"split": "train", "demonstration_id": first.pk, "prompt": first.prompt.messages, "completion": first.text}
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["demonstrations_used"] == used and manifest["kind"] == "sft" and manifest["demonstration_filter"] == run.pair_filter
    assert manifest["sha256"] == run.dataset_manifest["sha256"]
    names = set(TrainingMetric.objects.filter(run=run, split="eval").values_list("name", flat=True))
    assert {"loss", "mean_token_accuracy", "entropy", "num_tokens"} <= names
    assert TrainingMetric.objects.filter(run=run, split="train", name="mean_token_accuracy").count() == 8
    headline = selectors.run_headline(run)
    assert (headline["unit"], headline["train_pairs"], headline["train_pairs_used"], headline["eval_accuracy"]) == ("demonstrations", 8, 8, None)
    assert selectors.lineage(version)[0]["made_by"] == f"SFT policy run {run.pk}"

    # The version generates (the next round's candidates).
    from generation.backends.base import ModelSpec, PromptRequest, Sampling, open_backend

    backend = open_backend("transformers", ModelSpec(version.base_model, version.adapter_path))
    try:
        batches = list(backend.generate(
            [PromptRequest(key=1, messages=[{"role": "user", "content": "Say something kind."}], n=2)],
            Sampling(temperature=1.0, max_new_tokens=8, seed=1),
        ))
    finally:
        backend.close()
    assert sum(len(batch) for batch in batches) == 2


def test_a_dpo_round_on_top_of_the_sft_version_starts_from_the_merged_policy(sft_run, ranked_project):
    """The pipeline: SFT first, then preferences. The DPO run trains on the SFT weights (its adapter merged in), and
    DPO's reference is that SFT policy."""
    sft_version = sft_run.model_version
    dpo = services.training_run_create(
        kind="dpo", base_version=sft_version, projects=[ranked_project], settings={**SMALL_RUN, "epochs": 0.5}
    )
    dpo = services.training_run_execute(dpo.pk)
    assert dpo.status == "succeeded", dpo.error
    merged = Path(dpo.output_dir) / "base"
    assert (merged / "config.json").is_file() and (merged / "tokenizer_config.json").is_file()
    version = dpo.model_version
    assert version.kind == "policy" and version.parent == sft_version and version.base_model == str(merged)
    assert [row["made_by"] for row in selectors.lineage(version)] == [f"DPO policy run {dpo.pk}", f"SFT policy run {sft_run.pk}", "base model"]
    # A reward model can start from the SFT policy too.
    reward = services.training_run_create(kind="reward", base_version=sft_version, projects=[ranked_project], settings=SMALL_RUN)
    assert reward.base_version == sft_version


def test_a_crashing_sft_run_is_failed_and_registers_nothing(demonstrated_project, tiny_version):
    run = services.training_run_execute(create_sft(demonstrated_project, tiny_version, settings={"target_modules": "no_such_layer"}).pk)
    assert run.status == "failed" and "no_such_layer" in run.error
    assert not ModelVersion.objects.filter(training_run=run).exists()


def test_cancel_a_queued_sft_run(demonstrated_project, tiny_version):
    run = job_cancel(job=create_sft(demonstrated_project, tiny_version))
    assert run.status == "cancelled"
    assert services.training_run_execute(run.pk).status == "cancelled"  # the queued task finds it cancelled
    assert not ModelVersion.objects.filter(training_run=run).exists()


def test_cancel_a_running_sft_run_at_a_step_end(demonstrated_project, tiny_version, monkeypatch):
    """The reporter asks the trainer to stop once the run's cancel is requested (here: while its second step's metrics
    are written, after that step's end: it stops at the end of the third)."""
    run = create_sft(demonstrated_project, tiny_version, settings={"epochs": 10})
    logged = services._RunReporter.logged

    def cancel_after_two_steps(self, step, split, metrics):
        logged(self, step, split, metrics)
        if step == 2 and split == "train":
            TrainingRun.objects.filter(pk=self.run_id).update(cancel_requested=True)

    monkeypatch.setattr(services._RunReporter, "logged", cancel_after_two_steps)
    run = services.training_run_execute(run.pk)
    assert run.status == "cancelled" and run.step == 3 and run.total_steps == 40
    assert not ModelVersion.objects.filter(training_run=run).exists()
    assert Path(run.summary["adapter_dir"], "adapter_model.safetensors").is_file()  # what it reached is kept
