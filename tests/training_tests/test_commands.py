"""`python manage.py train` and `python manage.py score`: they queue a run or a job (the GPU worker runs it; here it
runs in-process), refuse bad input naming the field, and follow the row to its end."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from generation.models import ModelVersion
from generation.services import model_version_register
from tests.factories import ProjectFactory
from tests.training_tests.conftest import SMALL_RUN
from training import scoring, services
from training.management.commands.score import Command as ScoreCommand
from training.management.commands.train import Command as TrainCommand
from training.models import ScoringJob, TrainingRun

pytestmark = pytest.mark.django_db

SMALL_RUN_FLAGS = ["--lora-rank", "8", "--lora-alpha", "16", "--target-modules", "q_proj,v_proj", "--batch-size", "2", "--max-length", "128"]


def train(*args) -> str:
    out = StringIO()
    call_command("train", *args, stdout=out)
    return out.getvalue()


def score(*args) -> str:
    out = StringIO()
    call_command("score", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def registered_reward(tiny_version, tiny_adapter):
    """A reward model in the registry, never loaded: enough to queue a job."""
    return model_version_register(
        name="registered-reward", base_model=tiny_version.base_model, adapter_path=tiny_adapter, kind=ModelVersion.Kind.REWARD
    )


# --- train --------------------------------------------------------------------------------------------------------


def test_train_queues_a_run_with_only_the_settings_given(ranked_project, tiny_version):
    output = train(
        ranked_project.slug, "--kind", "dpo", "--base", "tiny-policy", *SMALL_RUN_FLAGS,
        "--load-in-4bit", "false", "--double-quant", "false", "--loss-type", "sigmoid,sft", "--no-wait",
    )
    run = TrainingRun.objects.get()
    assert output == f"Queued training run {run.pk} (12 train pairs / 6 eval pairs) on the gpu queue.\n"
    assert (run.kind, run.status, run.base_version, [p.slug for p in run.projects.all()]) == ("dpo", "queued", tiny_version, [ranked_project.slug])
    given = (run.config["lora_rank"], run.config["target_modules"], run.config["load_in_4bit"], run.config["loss_type"])
    assert given == (8, ["q_proj", "v_proj"], False, ["sigmoid", "sft"])
    # Settings not given take the kind's defaults.
    assert (run.config["epochs"], run.config["learning_rate"], run.config["bf16"], run.config["lora_dropout"]) == (1.0, 5e-5, None, 0.05)
    assert run.pair_filter == {
        "sources": ["human", "import", "edit"], "exclude_flagged": True, "include_evaluation": True, "min_agreement": None,
        "created_from": None, "created_to": None, "model_versions": [], "eval_fraction": 0.1,
    }
    assert run.run_pairs.count() == 18


def test_train_takes_pair_filter_flags_and_several_projects(ranked_project, tiny_version):
    other = ProjectFactory(slug="other-project")
    today = timezone.localdate().isoformat()
    train(
        ranked_project.slug, other.slug, "--kind", "reward", "--base", "tiny-policy", "--use-margin", "false",
        "--source", "human", "--include-flagged", "--exclude-evaluation", "--from", today, "--to", today, "--eval-fraction", "0.3", "--no-wait",
    )
    run = TrainingRun.objects.get()
    assert sorted(p.slug for p in run.projects.all()) == sorted([ranked_project.slug, other.slug])
    assert run.kind == "reward" and run.config["use_margin"] is False and "beta" not in run.config
    assert run.pair_filter == {
        "sources": ["human"], "exclude_flagged": False, "include_evaluation": False, "min_agreement": None, "created_from": today, "created_to": today,
        "model_versions": [], "eval_fraction": 0.3,
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lora-rank", "0"], "lora_rank: LoRA rank must be between 1 and 256."),
        (["--lora-rank", "eight"], "lora_rank: Must be a whole number."),
        (["--load-in-4bit", "maybe"], "load_in_4bit: Use true or false."),
        (["--use-margin", "true"], "use_margin: Only for reward runs."),
        (["--lora-rank", "0", "--epochs", "0"], "lora_rank: .*; epochs: "),
        (["--min-agreement", "2"], "min_agreement: Give a number between 0 and 1."),
        (["--from", "22/11/2026"], "created_from: Give a date as YYYY-MM-DD."),
        (["--source", "import"], "pair_filter: No pair matches this selection."),
    ],
)
def test_train_refuses_bad_input_naming_the_field(ranked_project, tiny_version, args, message):
    with pytest.raises(CommandError, match=message):
        train(ranked_project.slug, "--kind", "dpo", "--base", "tiny-policy", *args, "--no-wait")
    assert not TrainingRun.objects.exists()


def test_train_refuses_unknown_names_and_a_reward_base(ranked_project, tiny_version, registered_reward):
    with pytest.raises(CommandError, match="No model version named 'ghost'"):
        train(ranked_project.slug, "--kind", "dpo", "--base", "ghost", "--no-wait")
    with pytest.raises(CommandError, match="No project with slug 'ghost', 'phantom'"):
        train(ranked_project.slug, "ghost", "phantom", "--kind", "dpo", "--base", "tiny-policy", "--no-wait")
    with pytest.raises(CommandError, match="base_version: Train on a policy model"):
        train(ranked_project.slug, "--kind", "dpo", "--base", registered_reward.name, "--no-wait")
    with pytest.raises(CommandError, match="invalid choice: 'ppo'"):
        train(ranked_project.slug, "--kind", "ppo", "--base", "tiny-policy", "--no-wait")
    assert not TrainingRun.objects.exists()


def test_following_a_run_that_succeeded_prints_its_end(ranked_project, tiny_version):
    train(ranked_project.slug, "--kind", "dpo", "--base", "tiny-policy", *SMALL_RUN_FLAGS, "--no-wait")
    run = services.training_run_execute(TrainingRun.objects.get().pk)  # what the GPU worker does
    assert run.status == "succeeded", run.error
    out = StringIO()
    TrainCommand(stdout=out).follow(run)
    lines = out.getvalue().splitlines()
    last_loss = run.metrics.filter(split="train", name="loss").order_by("-step").first().value
    assert lines[0] == f"Succeeded: step 6/6, train loss {last_loss:.4f}"
    assert lines[1].startswith("Done in ") and lines[1].endswith(f"registered model version {run.model_version.name}.")
    assert len(lines) == 2


@pytest.mark.parametrize(
    ("status", "error", "message"), [("failed", "CUDA out of memory", "failed: CUDA out of memory"), ("cancelled", "", "cancelled: no model")]
)
def test_following_a_run_that_did_not_succeed_is_an_error(ranked_project, tiny_version, status, error, message):
    run = services.training_run_create(kind="dpo", base_version=tiny_version, projects=[ranked_project], settings=SMALL_RUN)
    TrainingRun.objects.filter(pk=run.pk).update(status=status, error=error, finished_at=timezone.now())
    out = StringIO()
    with pytest.raises(CommandError, match=f"Run {run.pk} {message}"):
        TrainCommand(stdout=out).follow(run)
    assert out.getvalue() == f"{status.capitalize()}: step 0/?\n"


# --- score --------------------------------------------------------------------------------------------------------


def test_score_queues_a_job(ranked_project, registered_reward):
    output = score(ranked_project.slug, "--model", registered_reward.name, "--no-wait")
    job = ScoringJob.objects.get()
    assert output == f"Queued scoring job {job.pk} (18 candidates) on the gpu queue.\n"
    assert (job.project, job.reward_version, job.status) == (ranked_project, registered_reward, "queued")


def test_score_refuses_bad_input(ranked_project, tiny_version, registered_reward):
    empty = ProjectFactory(slug="empty-project")
    refusals = [
        (["ghost", "--model", registered_reward.name], "No project with slug 'ghost'"),
        ([ranked_project.slug, "--model", "ghost"], "No model version named 'ghost'"),
        ([ranked_project.slug, "--model", "tiny-policy"], "reward_version: Choose a reward model"),
        ([empty.slug, "--model", registered_reward.name], "no candidates to score"),
    ]
    for args, message in refusals:
        with pytest.raises(CommandError, match=message):
            score(*args, "--no-wait")
    assert not ScoringJob.objects.exists()


def test_following_a_scoring_job_prints_the_reward_models_accuracy(ranked_project, tiny_version):
    run = services.training_run_create(
        kind="reward", base_version=tiny_version, projects=[ranked_project], settings={**SMALL_RUN, "epochs": 6, "learning_rate": 5e-3}
    )
    reward = services.training_run_execute(run.pk).model_version
    score(ranked_project.slug, "--model", reward.name, "--no-wait")
    job = scoring.scoring_job_execute(ScoringJob.objects.get().pk)  # what the GPU worker does
    assert job.status == "succeeded", job.error
    out = StringIO()
    ScoreCommand(stdout=out).follow(job)
    lines = out.getvalue().splitlines()
    assert lines[0] == "Succeeded: 18/18 candidates scored"
    assert lines[1].startswith("Done. Accuracy on human pairs it did not train on: ") and lines[1].endswith("/6).")


def test_following_a_failed_scoring_job_is_an_error(ranked_project, registered_reward):
    job = scoring.scoring_job_create(project=ranked_project, reward_version=registered_reward)
    ScoringJob.objects.filter(pk=job.pk).update(status="failed", error="OSError: no weights", candidates_done=16, finished_at=timezone.now())
    out = StringIO()
    with pytest.raises(CommandError, match=f"Scoring job {job.pk} failed: OSError: no weights"):
        ScoreCommand(stdout=out).follow(job)
    assert out.getvalue() == "Failed: 16/18 candidates scored\n"
