"""Launching SFT runs: the browser form (the demonstration filter in place of the pair filter), the API (a
``demonstration_filter`` object), ``manage.py train --kind sft``; the run page; who may do what."""

import pytest
from django.conf import settings
from django.core.management import CommandError
from django.urls import reverse
from django.utils import timezone

from tests.training_tests.conftest import SMALL_RUN, authenticated, demonstrate, train
from training import services
from training.models import TrainingRun

pytestmark = pytest.mark.django_db

SMALL_RUN_FLAGS = ["--lora-rank", "8", "--lora-alpha", "16", "--target-modules", "q_proj,v_proj", "--batch-size", "2", "--max-length", "128"]
DEFAULT_DEMONSTRATION_FILTER = {
    "sources": ["written", "edited", "import", "rejection_sampling"], "statuses": ["accepted"], "rejection_jobs": [],
    "created_from": None, "created_to": None, "eval_fraction": 0.1,
}


def form_data(project, version, **overrides):
    """What the browser sends for an SFT run: every field of the page, the (hidden) pair filter's and DPO's included."""
    data = {
        "kind": "sft", "base_version": version.name, "projects": [project.slug],
        "demo_sources": ["written", "edited", "import", "rejection_sampling"], "demo_statuses": ["accepted"], "demo_rejection_jobs": "",
        "demo_created_from": "", "demo_created_to": "", "demo_eval_fraction": "0.1",
        "sources": ["human", "import", "edit"], "exclude_flagged": "on", "include_evaluation": "on", "eval_fraction": "0.1",
        "lora_rank": "8", "lora_alpha": "16", "lora_dropout": "0.05", "target_modules": "q_proj, v_proj", "load_in_4bit": "on",
        "double_quant": "on", "beta": "0.1", "loss_type": ["sigmoid"], "label_smoothing": "0", "use_margin": "on", "epochs": "1",
        "batch_size": "2", "gradient_accumulation": "1", "max_length": "128", "too_long": "truncate", "seed": "0", "bf16": "auto",
        "gradient_checkpointing": "auto",
    }
    data.update(overrides)
    return data


def api_body(project, version, **overrides):
    return {"kind": "sft", "base_version": version.name, "projects": [project.slug], "settings": SMALL_RUN, **overrides}






# --- the browser form --------------------------------------------------------------------------------------------


def test_the_form_shows_the_demonstration_filter_for_sft(client, admin_user, demonstrated_project):
    client.force_login(admin_user)
    page = client.get(reverse("run_create")).content.decode()
    assert 'value="sft"' in page and "SFT policy" in page
    assert "Which demonstrations" in page and 'data-hide-for="dpo reward grpo rloo" data-demonstration-filter' in page
    assert 'data-hide-for="sft grpo rloo" data-pair-filter' in page
    for name in ("demo_sources", "demo_statuses", "demo_rejection_jobs", "demo_created_from", "demo_created_to", "demo_eval_fraction"):
        assert f'name="{name}"' in page, name
    # DPO's and the reward model's own settings are hidden while another kind is chosen (prefloop.css).
    assert page.count('data-hide-for="reward sft grpo rloo"') == 2 and page.count('data-hide-for="dpo sft grpo rloo"') == 1
    assert page.count('data-hide-for="reward sft"') == 1  # beta: DPO's, GRPO's and RLOO's
    css = (settings.BASE_DIR / "static" / "css" / "prefloop.css").read_text()
    assert ".run-form:has(input[name=kind][value=sft]:checked) [data-hide-for~=sft]" in css


def test_the_form_launches_an_sft_run(client, admin_user, demonstrated_project, tiny_version):
    client.force_login(admin_user)
    today = timezone.localdate().isoformat()
    response = client.post(reverse("run_create"), form_data(
        demonstrated_project, tiny_version, demo_sources=["import", "written"], demo_created_to=today, learning_rate="",
    ))
    run = TrainingRun.objects.get()
    assert response.status_code == 302 and response.url == reverse("run_detail", args=[run.pk])
    assert run.kind == "sft" and run.requested_by == admin_user and run.run_demonstrations.count() == 12
    assert run.pair_filter == {**DEFAULT_DEMONSTRATION_FILTER, "sources": ["import", "written"], "created_to": today}
    # The DPO and reward settings the page sent (hidden) are not the run's; the rest are, SFT's learning rate too.
    assert run.config["lora_rank"] == 8 and run.config["learning_rate"] == 2e-4
    assert not {"beta", "loss_type", "label_smoothing", "use_margin"} & set(run.config)


def test_the_form_checks_demonstrations_and_shows_refusals_beside_their_fields(client, admin_user, demonstrated_project, tiny_version):
    client.force_login(admin_user)
    check = client.post(reverse("run_check"), form_data(demonstrated_project, tiny_version)).content.decode()
    assert "<strong>8</strong> train / <strong>4</strong> eval demonstrations" in check and "8 import" in check
    assert 'data-used>8 / 4<' in check and "data-refusal" not in check
    response = client.post(reverse("run_create"), form_data(demonstrated_project, tiny_version, demo_sources=["written"]))
    assert response.status_code == 422 and "No demonstration matches this selection." in response.content.decode()
    response = client.post(reverse("run_create"), form_data(demonstrated_project, tiny_version, demo_rejection_jobs="3, x"))
    assert response.status_code == 422 and "Give job ids (whole numbers)." in response.content.decode()
    # An SFT run needs its demonstration sources, not the (hidden) pair sources, and the other way round.
    response = client.post(reverse("run_create"), form_data(demonstrated_project, tiny_version, demo_sources=[]))
    assert response.status_code == 422 and "This field is required." in response.content.decode()
    assert client.post(reverse("run_create"), form_data(demonstrated_project, tiny_version, kind="dpo", sources=[])).status_code == 422
    response = client.post(reverse("run_create"), form_data(demonstrated_project, tiny_version, sources=[]))
    assert response.status_code == 302
    assert TrainingRun.objects.count() == 1


# --- the API ---------------------------------------------------------------------------------------------------------


def test_the_api_launches_and_checks_an_sft_run(api_client, admin_user, demonstrated_project, tiny_version):
    api = authenticated(api_client, admin_user)
    body = api_body(demonstrated_project, tiny_version, demonstration_filter={"sources": ["import"], "eval_fraction": 0.2})
    check = api.post(reverse("api_training_run_check"), body, format="json")
    assert check.status_code == 200, check.json()
    assert check.json()["unit"] == "demonstrations" and check.json()["demonstrations"] == {"train": 8, "eval": 4}
    assert check.json()["pairs"] is None and check.json()["sources"] == {"train": {"import": 8}, "eval": {"import": 4}}
    assert check.json()["can_launch"] and check.json()["lengths"]["train"]["used"] == 8
    assert not TrainingRun.objects.exists()
    response = api.post(reverse("api_training_runs"), body, format="json")
    assert response.status_code == 201, response.json()
    run = response.json()
    assert (run["kind"], run["status"], run["pair_filter"], run["pairs_used"], run["demonstrations_used"]) == ("sft", "queued", None, None, None)
    assert run["demonstration_filter"] == {**DEFAULT_DEMONSTRATION_FILTER, "sources": ["import"], "eval_fraction": 0.2}
    assert run["dataset_manifest"]["demonstrations"] == {"train": 8, "eval": 4} and run["config"]["learning_rate"] == 2e-4
    assert api.get(reverse("api_training_run", args=[run["id"]])).json() == run
    assert [r["id"] for r in api.get(reverse("api_training_runs") + "?kind=sft").json()["results"]] == [run["id"]]


@pytest.mark.parametrize(
    ("overrides", "field", "inner"),
    [
        ({"settings": {"beta": 0.1}}, "settings", "beta"),  # a DPO setting on an SFT run
        ({"settings": {"use_margin": True}}, "settings", "use_margin"),
        ({"pair_filter": {"sources": ["human"]}}, "pair_filter", None),  # SFT runs take a demonstration_filter
        ({"demonstration_filter": {"sources": ["human"]}}, "demonstration_filter", "sources"),
        ({"demonstration_filter": {"statuses": ["approved"]}}, "demonstration_filter", "statuses"),
        ({"demonstration_filter": {"rejection_jobs": ["x"]}}, "demonstration_filter", "rejection_jobs"),
        ({"demonstration_filter": {"min_agreement": 0.5}}, "demonstration_filter", "min_agreement"),  # a pair filter's
        ({"demonstration_filter": {"sources": ["written"]}}, "demonstration_filter", None),  # valid, but none matches
        ({"demonstration_filter": "written"}, "demonstration_filter", None),
    ],
)
def test_bad_sft_launches_are_400s_naming_the_field(api_client, admin_user, demonstrated_project, tiny_version, overrides, field, inner):
    api = authenticated(api_client, admin_user)
    response = api.post(reverse("api_training_runs"), api_body(demonstrated_project, tiny_version, **overrides), format="json")
    assert response.status_code == 400, response.json()
    errors = response.json()
    assert field in errors, errors
    if inner:
        assert inner in errors[field], errors
    assert not TrainingRun.objects.exists()


def test_a_dpo_launch_refuses_a_demonstration_filter(api_client, admin_user, ranked_project, tiny_version):
    api = authenticated(api_client, admin_user)
    body = {**api_body(ranked_project, tiny_version, demonstration_filter={"sources": ["import"]}), "kind": "dpo"}
    response = api.post(reverse("api_training_runs"), body, format="json")
    assert response.status_code == 400 and "demonstration_filter" in response.json()


# --- who may do what ---------------------------------------------------------------------------------------------------


@pytest.fixture
def queued_sft(demonstrated_project, tiny_version, admin_user):
    return services.training_run_create(
        kind="sft", base_version=tiny_version, projects=[demonstrated_project], settings=SMALL_RUN, requested_by=admin_user
    )


@pytest.mark.parametrize("role", ["labeler", "researcher"])
def test_labelers_are_refused_and_researchers_only_read(client, api_client, users, role, queued_sft, demonstrated_project, tiny_version):
    read = 200 if role == "researcher" else 403
    api = authenticated(api_client, users[role])
    for url in (reverse("api_training_runs"), reverse("api_training_run", args=[queued_sft.pk]), reverse("api_training_run_metrics", args=[queued_sft.pk])):
        assert api.get(url).status_code == read, url
    assert api.post(reverse("api_training_runs"), api_body(demonstrated_project, tiny_version), format="json").status_code == 403
    assert api.post(reverse("api_training_run_check"), api_body(demonstrated_project, tiny_version), format="json").status_code == 403
    assert api.post(reverse("api_training_run_cancel", args=[queued_sft.pk])).status_code == 403
    client.force_login(users[role])
    assert client.get(reverse("run_detail", args=[queued_sft.pk])).status_code == read
    assert client.get(reverse("run_list")).status_code == read
    assert client.get(reverse("run_create")).status_code == 403
    assert client.post(reverse("run_create"), form_data(demonstrated_project, tiny_version)).status_code == 403
    assert client.post(reverse("run_check"), form_data(demonstrated_project, tiny_version)).status_code == 403
    assert client.post(reverse("run_cancel", args=[queued_sft.pk])).status_code == 403
    assert TrainingRun.objects.get().status == "queued" and TrainingRun.objects.count() == 1


# --- manage.py train --kind sft ----------------------------------------------------------------------------------------


def test_train_queues_an_sft_run_with_the_demonstration_flags(demonstrated_project, tiny_version):
    demonstrate(demonstrated_project, prompts=2, heldout=0, status="pending")
    today = timezone.localdate().isoformat()
    output = train(
        demonstrated_project.slug, "--kind", "sft", "--base", "tiny-policy", *SMALL_RUN_FLAGS, "--demo-source", "import",
        "--status", "accepted", "--status", "pending", "--to", today, "--eval-fraction", "0.2", "--epochs", "2", "--no-wait",
    )
    run = TrainingRun.objects.get()
    assert output == f"Queued training run {run.pk} (10 train demonstrations / 4 eval demonstrations) on the gpu queue.\n"
    assert run.pair_filter == {
        **DEFAULT_DEMONSTRATION_FILTER, "sources": ["import"], "statuses": ["accepted", "pending"], "created_to": today, "eval_fraction": 0.2,
    }
    assert run.config["epochs"] == 2.0 and run.config["learning_rate"] == 2e-4 and "beta" not in run.config
    assert run.run_demonstrations.count() == 14


def test_train_sft_takes_rejection_jobs_and_refuses_the_other_kinds_flags(demonstrated_project, tiny_version):
    with pytest.raises(CommandError, match="demonstration_filter: No demonstration matches this selection."):
        train(demonstrated_project.slug, "--kind", "sft", "--base", "tiny-policy", "--rejection-job", "7", "--demo-source", "rejection_sampling", "--no-wait")
    with pytest.raises(CommandError, match=r"--source, --min-agreement: not for --kind sft \(sft runs train on demonstrations\)"):
        train(demonstrated_project.slug, "--kind", "sft", "--base", "tiny-policy", "--source", "human", "--min-agreement", "0.5", "--no-wait")
    with pytest.raises(CommandError, match=r"--status: not for --kind dpo"):
        train(demonstrated_project.slug, "--kind", "dpo", "--base", "tiny-policy", "--status", "pending", "--no-wait")
    with pytest.raises(CommandError, match="beta: Only for dpo, grpo and rloo runs."):
        train(demonstrated_project.slug, "--kind", "sft", "--base", "tiny-policy", "--beta", "0.2", "--no-wait")
    with pytest.raises(CommandError, match="rejection_jobs: Give job ids"):
        train(demonstrated_project.slug, "--kind", "sft", "--base", "tiny-policy", "--rejection-job", "x", "--no-wait")
    assert not TrainingRun.objects.exists()


def test_train_follows_an_sft_run_to_its_version(demonstrated_project, tiny_version, monkeypatch):
    from training.management.commands import train as command

    monkeypatch.setattr(command, "follow_until_finished", lambda run, line, write, poll: (services.training_run_execute(run.pk), run.refresh_from_db()))
    output = train(demonstrated_project.slug, "--kind", "sft", "--base", "tiny-policy", *SMALL_RUN_FLAGS)
    run = TrainingRun.objects.get()
    assert run.status == "succeeded", run.error
    assert f"registered model version {run.model_version.name}" in output and run.model_version.kind == "policy"


# --- the run page ------------------------------------------------------------------------------------------------------


def test_the_run_page_shows_demonstrations_and_the_sft_charts(client, researcher, demonstrated_project, tiny_version):
    run = services.training_run_execute(services.training_run_create(
        kind="sft", base_version=tiny_version, projects=[demonstrated_project], settings=SMALL_RUN,
    ).pk)
    assert run.status == "succeeded", run.error
    client.force_login(researcher)
    page = client.get(reverse("run_detail", args=[run.pk])).content.decode()
    assert "Training run" in page and "SFT policy" in page
    assert "8 train / 4 eval demonstrations selected" in page and "<h2>Demonstrations</h2>" in page
    assert "Demonstrations used (train / eval)" in page and "Trained on 8 of 8 selected training demonstrations" in page
    assert "By source: train 8 import; eval 4 import." in page
    for metric in ("loss", "mean_token_accuracy"):
        assert f'data-metric="{metric}"' in page
    assert 'data-metric="rewards/accuracies"' not in page and page.count("<polyline") >= 4  # train and eval lines
    listing = client.get(reverse("run_list")).content.decode()
    assert "SFT policy" in listing and "demonstrations" in listing
    compare = client.get(reverse("run_compare") + f"?runs={run.pk}")
    assert compare.status_code == 200 and 'data-metric="mean_token_accuracy"' in compare.content.decode()
