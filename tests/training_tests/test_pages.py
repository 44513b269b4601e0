"""Training pages: who may see and do what, the launch form, live progress with charts, comparison, reward models."""

import re

import pytest
from django.urls import reverse

from annotation.models import Project
from tests.training_tests.conftest import SMALL_RUN
from training import charts, scoring, services
from training.models import ScoringJob, TrainingRun


def login(client, user):
    client.force_login(user)
    return client


def form_data(project, version, **overrides):
    data = {
        "kind": "dpo", "base_version": version.name, "projects": [project.slug], "sources": ["human", "import"],
        "exclude_flagged": "on", "eval_fraction": "0.1", "lora_rank": "8", "lora_alpha": "16", "lora_dropout": "0.05",
        "target_modules": "q_proj, v_proj", "load_in_4bit": "on", "double_quant": "on", "beta": "0.1", "loss_type": ["sigmoid"],
        "label_smoothing": "0", "use_margin": "on", "epochs": "1", "batch_size": "2", "gradient_accumulation": "1",
        "max_length": "128", "seed": "0", "bf16": "auto", "gradient_checkpointing": "auto",
    }
    data.update(overrides)
    return data


@pytest.fixture
def finished_run(ranked_project, tiny_version):
    run = services.training_run_create(kind="dpo", base_version=tiny_version, projects=[ranked_project], settings=SMALL_RUN)
    return services.training_run_execute(run.pk)


def test_roles(client, users, ranked_project, finished_run):
    pages = {
        reverse("run_list"): {"admin": 200, "researcher": 200, "labeler": 403},
        reverse("run_detail", args=[finished_run.pk]): {"admin": 200, "researcher": 200, "labeler": 403},
        reverse("run_compare") + f"?runs={finished_run.pk}": {"admin": 200, "researcher": 200, "labeler": 403},
        reverse("run_create"): {"admin": 200, "researcher": 403, "labeler": 403},
        reverse("reward_overview", args=[ranked_project.slug]): {"admin": 200, "researcher": 403, "labeler": 403},
    }
    for url, expected in pages.items():
        for role, status in expected.items():
            assert login(client, users[role]).get(url).status_code == status, (url, role)
    client.logout()
    assert client.get(reverse("run_list")).status_code == 302
    for role in ("researcher", "labeler"):
        login(client, users[role])
        assert client.post(reverse("run_create"), form_data(ranked_project, finished_run.base_version)).status_code == 403
        assert client.post(reverse("run_cancel", args=[finished_run.pk])).status_code == 403
    assert TrainingRun.objects.count() == 1


def test_the_form_launches_a_run_with_the_chosen_settings(client, admin_user, ranked_project, tiny_version):
    login(client, admin_user)
    page = client.get(reverse("run_create") + f"?project={ranked_project.slug}")
    assert b"Launch training" in page.content and b"all-linear" in page.content
    response = client.post(reverse("run_create"), form_data(ranked_project, tiny_version, min_agreement=""))
    run = TrainingRun.objects.get()
    assert response.status_code == 302 and response.url == reverse("run_detail", args=[run.pk])
    assert run.config["lora_rank"] == 8 and run.config["target_modules"] == ["q_proj", "v_proj"] and run.config["bf16"] is None
    assert run.pair_filter["sources"] == ["human", "import"] and run.requested_by == admin_user
    # A reward run gets the reward settings only.
    client.post(reverse("run_create"), form_data(ranked_project, tiny_version, kind="reward"))
    reward = TrainingRun.objects.filter(kind="reward").get()
    assert "use_margin" in reward.config and "beta" not in reward.config


def test_the_form_shows_errors_beside_their_fields(client, admin_user, ranked_project, tiny_version):
    login(client, admin_user)
    response = client.post(reverse("run_create"), form_data(ranked_project, tiny_version, loss_type=["exo_pair"], target_modules="q_proj;"))
    assert response.status_code == 422
    assert "exo_pair loss needs label smoothing" in response.content.decode()
    assert "Name one or more modules" in response.content.decode()
    response = client.post(reverse("run_create"), form_data(ranked_project, tiny_version, sources=["import"]))
    assert response.status_code == 422 and "No pair matches" in response.content.decode()
    assert not TrainingRun.objects.exists()


def test_the_run_page_shows_progress_and_charts(client, admin_user, finished_run):
    login(client, admin_user)
    page = client.get(reverse("run_detail", args=[finished_run.pk])).content.decode()
    for metric in ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        assert f'data-metric="{metric}"' in page
    assert page.count("<polyline") >= 9  # train and eval lines (eval loss included)
    assert finished_run.model_version.name in page and "6 / 6" in page
    fragment = client.get(reverse("run_detail", args=[finished_run.pk]), HTTP_HX_REQUEST="true").content.decode()
    assert fragment.startswith('<section id="run-progress"') and "hx-trigger" not in fragment  # finished: no more polling


def test_a_running_run_polls_and_can_be_cancelled(client, admin_user, ranked_project, tiny_version):
    run = services.training_run_create(kind="dpo", base_version=tiny_version, projects=[ranked_project], settings=SMALL_RUN)
    TrainingRun.objects.filter(pk=run.pk).update(status="running")
    login(client, admin_user)
    assert 'hx-trigger="every 2s"' in client.get(reverse("run_detail", args=[run.pk])).content.decode()
    client.post(reverse("run_cancel", args=[run.pk]))
    assert TrainingRun.objects.get(pk=run.pk).cancel_requested
    assert "stopping at the end of this step" in client.get(reverse("run_detail", args=[run.pk])).content.decode()


def test_compare_overlays_runs_and_highlights_differing_settings(client, researcher, ranked_project, tiny_version, finished_run):
    other = services.training_run_execute(
        services.training_run_create(kind="dpo", base_version=tiny_version, projects=[ranked_project], settings={**SMALL_RUN, "beta": 0.5}).pk
    )
    login(client, researcher)
    page = client.get(reverse("run_compare") + f"?runs={finished_run.pk}&runs={other.pk}").content.decode()
    assert f"run {finished_run.pk} train" in page and f"run {other.pk} eval" in page
    assert '<tr class="differs"><td>beta</td>' in page


def test_chart_geometry():
    chart = charts.build_chart("loss", {("", "train"): [(1, 1.0), (2, 0.5)], ("", "eval"): [(2, 0.75)]}, {"": "#000"})
    train = next(line for line in chart.lines if line.label == "train")
    assert train.points == "178.0,10.0 312.0,138.0" and not train.dashed
    assert next(line for line in chart.lines if line.label == "eval").dashed
    assert charts.build_chart("loss", {}, {}) is None
    flat = charts.build_chart("x", {("", "train"): [(1, 2.0)]}, {"": "#000"})
    assert (flat.y_min, flat.y_max) == (1.5, 2.5)


def test_reward_models_page_scores_and_orders_the_queue(client, admin_user, researcher, ranked_project, tiny_version):
    run = services.training_run_execute(
        services.training_run_create(kind="reward", base_version=tiny_version, projects=[ranked_project], settings=SMALL_RUN).pk
    )
    version = run.model_version
    login(client, admin_user)
    response = client.post(reverse("queue_order_set", args=[ranked_project.slug]), {"queue_order": "reward_spread", "reward_version": version.name})
    assert response.status_code == 422 and "run a scoring job first" in response.content.decode()
    response = client.post(reverse("scoring_create", args=[ranked_project.slug]), {"reward_version": version.name})
    job = ScoringJob.objects.get()
    assert response.url == reverse("scoring_detail", args=[job.pk])
    scoring.scoring_job_execute(job.pk)
    assert "Accuracy on held-out human pairs" in client.get(reverse("scoring_detail", args=[job.pk])).content.decode()
    response = client.post(reverse("queue_order_set", args=[ranked_project.slug]), {"queue_order": "reward_spread", "reward_version": version.name})
    assert response.status_code == 302 and Project.objects.get(pk=ranked_project.pk).queue_reward_version == version
    overview = client.get(reverse("reward_overview", args=[ranked_project.slug])).content.decode()
    assert version.name in overview and re.search(r"\(\d / 6\)", overview)  # correct / held-out human pairs
    # Researchers see the scores beside each candidate; labelers never reach that page.
    prompt = ranked_project.prompts.first()
    login(client, researcher)
    assert f"by {version.name}" in client.get(reverse("prompt_detail", args=[ranked_project.slug, prompt.pk])).content.decode()
