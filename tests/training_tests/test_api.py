"""The training API: launching, following and cancelling runs, their metrics, scoring jobs, the queue order and
reward accuracy; who may do what; bad input as 400s naming the field."""

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token

from generation.models import Candidate, ModelVersion
from generation.services import model_version_register
from tests.factories import ProjectFactory
from tests.training_tests.conftest import SMALL_RUN
from training import scoring, selectors, services
from training.models import ScoringJob, TrainingRun, TrainingRunPair

pytestmark = pytest.mark.django_db


def authenticated(api_client, user):
    token, _ = Token.objects.get_or_create(user=user)
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return api_client


@pytest.fixture
def admin_api(api_client, admin_user):
    return authenticated(api_client, admin_user)


def run_body(project, version, **overrides):
    return {"kind": "dpo", "base_version": version.name, "projects": [project.slug], "settings": SMALL_RUN, **overrides}


@pytest.fixture
def queued_run(ranked_project, tiny_version, admin_user):
    return services.training_run_create(
        kind="dpo", base_version=tiny_version, projects=[ranked_project], settings=SMALL_RUN, requested_by=admin_user
    )


@pytest.fixture
def registered_reward(tiny_version, tiny_adapter):
    """A reward model in the registry, never loaded: enough for everything short of scoring."""
    return model_version_register(
        name="registered-reward", base_model=tiny_version.base_model, adapter_path=tiny_adapter, kind=ModelVersion.Kind.REWARD
    )


@pytest.fixture
def trained_reward(ranked_project, tiny_version):
    """A real reward model, trained in-process on the ranked project."""
    run = services.training_run_create(
        kind="reward", base_version=tiny_version, projects=[ranked_project], settings={**SMALL_RUN, "epochs": 6, "learning_rate": 5e-3}
    )
    run = services.training_run_execute(run.pk)
    assert run.status == "succeeded", run.error
    return run.model_version


# --- launching a run --------------------------------------------------------------------------------------------


def test_an_admin_launches_a_run(admin_api, admin_user, ranked_project, tiny_version):
    body = run_body(ranked_project, tiny_version, pair_filter={"sources": ["human"], "created_to": timezone.localdate().isoformat()})
    response = admin_api.post(reverse("api_training_runs"), body, format="json")
    assert response.status_code == 201, response.json()
    run = response.json()
    assert (run["kind"], run["status"], run["base_version"], run["projects"]) == ("dpo", "queued", "tiny-policy", [ranked_project.slug])
    assert run["config"]["lora_rank"] == 8 and run["config"]["target_modules"] == ["q_proj", "v_proj"]
    assert run["config"]["learning_rate"] == 5e-5 and "use_margin" not in run["config"]  # defaults for the kind
    assert run["pair_filter"]["sources"] == ["human"] and run["pair_filter"]["created_to"] == timezone.localdate().isoformat()
    assert run["dataset_manifest"]["pairs"] == {"train": 12, "eval": 6}
    assert (run["step"], run["total_steps"], run["model_version"], run["cancel_requested"], run["error"]) == (0, 0, None, False, "")
    assert run["progress"] == {
        "done": 0, "total": 0, "percent": 0, "elapsed_seconds": 0.0, "per_second": None, "eta_seconds": None, "seconds_per_step": None,
    }
    assert run["queue"]["position"] == 1 and run["queue"]["queue"] == "gpu"
    assert run["requested_by"] == admin_user.username and run["created_at"] and run["finished_at"] is None
    pairs = TrainingRunPair.objects.filter(run_id=run["id"])
    assert (pairs.filter(split="train").count(), pairs.filter(split="eval").count()) == (12, 6)
    assert admin_api.get(reverse("api_training_run", args=[run["id"]])).json() == run


def test_a_project_named_twice_counts_once(admin_api, ranked_project, tiny_version):
    body = run_body(ranked_project, tiny_version, projects=[ranked_project.slug, ranked_project.slug])
    response = admin_api.post(reverse("api_training_runs"), body, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["projects"] == [ranked_project.slug]
    assert response.json()["dataset_manifest"]["projects"] == [ranked_project.slug]


def test_runs_are_listed_paginated_and_filtered(admin_api, queued_run, ranked_project, tiny_version):
    reward = services.training_run_create(kind="reward", base_version=tiny_version, projects=[ranked_project], settings=SMALL_RUN)
    listing = admin_api.get(reverse("api_training_runs")).json()
    assert listing["count"] == 2 and [run["id"] for run in listing["results"]] == [reward.pk, queued_run.pk]
    assert [run["id"] for run in admin_api.get(reverse("api_training_runs") + "?kind=reward").json()["results"]] == [reward.pk]
    assert admin_api.get(reverse("api_training_runs") + "?status=running").json()["count"] == 0
    assert admin_api.get(reverse("api_training_runs") + f"?project={ranked_project.slug}").json()["count"] == 2
    assert admin_api.get(reverse("api_training_runs") + "?project=elsewhere").json()["count"] == 0


@pytest.mark.parametrize(
    ("overrides", "field", "inner"),
    [
        ({"kind": "ppo"}, "kind", None),
        ({"base_version": "ghost"}, "base_version", None),
        ({"projects": ["ghost"]}, "projects", None),
        ({"projects": []}, "projects", None),
        ({"settings": "fast"}, "settings", None),
        ({"settings": {"lora_rank": 0}}, "settings", "lora_rank"),
        ({"settings": {"lora_rnak": 8}}, "settings", "lora_rnak"),
        ({"settings": {"use_margin": True}}, "settings", "use_margin"),  # a reward-model setting on a DPO run
        ({"settings": {"load_in_4bit": "maybe"}}, "settings", "load_in_4bit"),
        ({"pair_filter": {"min_agreement": 2}}, "pair_filter", "min_agreement"),
        ({"pair_filter": {"created_from": "22/11/2026"}}, "pair_filter", "created_from"),
        ({"pair_filter": {"source": ["import"]}}, "pair_filter", "source"),  # misspelt: refused, not ignored
        ({"pair_filter": {"sources": ["import"]}}, "pair_filter", None),  # valid, but no pair matches
    ],
)
def test_bad_launches_are_400s_naming_the_field(admin_api, ranked_project, tiny_version, overrides, field, inner):
    response = admin_api.post(reverse("api_training_runs"), run_body(ranked_project, tiny_version, **overrides), format="json")
    assert response.status_code == 400, response.json()
    errors = response.json()
    assert field in errors, errors
    if inner:
        assert inner in errors[field], errors
    assert not TrainingRun.objects.exists()


def test_a_reward_model_is_no_base_for_a_run(admin_api, ranked_project, registered_reward):
    response = admin_api.post(reverse("api_training_runs"), run_body(ranked_project, registered_reward), format="json")
    assert response.status_code == 400
    assert "policy model" in response.json()["base_version"][0]
    assert not TrainingRun.objects.exists()


def test_a_body_that_is_not_json_is_a_400(admin_api):
    response = admin_api.post(reverse("api_training_runs"), "{not json", content_type="application/json")
    assert response.status_code == 400


# --- who may do what --------------------------------------------------------------------------------------------


def read_urls(run, job, project, reward):
    return [
        reverse("api_training_runs"),
        reverse("api_training_run", args=[run.pk]),
        reverse("api_training_run_metrics", args=[run.pk]),
        reverse("api_scoring_jobs"),
        reverse("api_scoring_job", args=[job.pk]),
        reverse("api_queue_order", args=[project.slug]),
        reverse("api_reward_accuracy", args=[project.slug]) + f"?model={reward.name}",
    ]


def write_requests(run, job, project, tiny_version, reward):
    return [
        (reverse("api_training_runs"), run_body(project, tiny_version)),
        (reverse("api_training_run_cancel", args=[run.pk]), {}),
        (reverse("api_scoring_jobs"), {"project": project.slug, "reward_version": reward.name}),
        (reverse("api_scoring_job_cancel", args=[job.pk]), {}),
        (reverse("api_queue_order", args=[project.slug]), {"order": "fewest_rankings"}),
    ]


@pytest.mark.parametrize("role", ["anonymous", "labeler", "researcher"])
def test_every_endpoint_checks_the_role(api_client, users, role, queued_run, ranked_project, tiny_version, registered_reward):
    job = scoring.scoring_job_create(project=ranked_project, reward_version=registered_reward)
    client = api_client if role == "anonymous" else authenticated(api_client, users[role])
    denied = 401 if role == "anonymous" else 403
    for url in read_urls(queued_run, job, ranked_project, registered_reward):
        assert client.get(url).status_code == (200 if role == "researcher" else denied), url
    for url, body in write_requests(queued_run, job, ranked_project, tiny_version, registered_reward):
        assert client.post(url, body, format="json").status_code == denied, url
    assert TrainingRun.objects.get().status == "queued" and TrainingRun.objects.count() == 1
    assert ScoringJob.objects.get().status == "queued" and ScoringJob.objects.count() == 1


def test_admins_may_read_everything(admin_api, queued_run, ranked_project, registered_reward):
    job = scoring.scoring_job_create(project=ranked_project, reward_version=registered_reward)
    for url in read_urls(queued_run, job, ranked_project, registered_reward):
        assert admin_api.get(url).status_code == 200, url


# --- cancelling, following and metrics ----------------------------------------------------------------------------


def test_an_admin_cancels_a_queued_run(admin_api, queued_run):
    response = admin_api.post(reverse("api_training_run_cancel", args=[queued_run.pk]))
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled" and response.json()["finished_at"]
    again = admin_api.post(reverse("api_training_run_cancel", args=[queued_run.pk]))
    assert again.status_code == 400 and "already cancelled" in again.json()["detail"]
    assert admin_api.post(reverse("api_training_run_cancel", args=[queued_run.pk + 1])).status_code == 404


def test_a_running_run_is_asked_to_stop(admin_api, queued_run):
    TrainingRun.objects.filter(pk=queued_run.pk).update(status="running", started_at=timezone.now())
    response = admin_api.post(reverse("api_training_run_cancel", args=[queued_run.pk]))
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["cancel_requested"]) == ("running", True)


def test_a_finished_run_shows_its_model_and_metrics(admin_api, queued_run):
    run = services.training_run_execute(queued_run.pk)
    assert run.status == "succeeded", run.error
    detail = admin_api.get(reverse("api_training_run", args=[run.pk])).json()
    assert detail["status"] == "succeeded" and detail["model_version"] == run.model_version.name
    assert (detail["step"], detail["total_steps"], detail["progress"]["percent"]) == (6, 6, 100)
    assert detail["progress"]["eta_seconds"] is None and detail["progress"]["seconds_per_step"] > 0
    assert detail["summary"]["examples"]["train"] == 12 and detail["summary"]["examples"]["eval"] == 6
    assert detail["pairs_used"] == {"train": 12, "eval": 6, "truncated": 0, "dropped": 0}

    url = reverse("api_training_run_metrics", args=[run.pk])
    rows = admin_api.get(url).json()
    assert rows and set(rows[0]) == {"step", "split", "name", "value"}
    assert [row["step"] for row in rows] == sorted(row["step"] for row in rows)
    losses = admin_api.get(url + "?split=train&name=loss").json()
    assert [row["step"] for row in losses] == [1, 2, 3, 4, 5, 6]
    assert {row["split"] for row in admin_api.get(url + "?split=eval").json()} == {"eval"}
    later = admin_api.get(url + "?after_step=4").json()
    assert later and all(row["step"] > 4 for row in later)
    assert len(later) < len(rows)
    assert admin_api.get(url + "?after_step=6").json() == []


@pytest.mark.parametrize(("query", "field"), [("?after_step=soon", "after_step"), ("?after_step=-1", "after_step"), ("?split=test", "split")])
def test_bad_metric_filters_are_400s(admin_api, queued_run, query, field):
    response = admin_api.get(reverse("api_training_run_metrics", args=[queued_run.pk]) + query)
    assert response.status_code == 400 and field in response.json()


def test_metrics_of_a_missing_run_are_a_404(admin_api, queued_run):
    assert admin_api.get(reverse("api_training_run_metrics", args=[queued_run.pk + 1])).status_code == 404
    assert admin_api.get(reverse("api_training_run", args=[queued_run.pk + 1])).status_code == 404


# --- scoring jobs -----------------------------------------------------------------------------------------------


def test_an_admin_starts_follows_and_cancels_a_scoring_job(admin_api, ranked_project, registered_reward):
    body = {"project": ranked_project.slug, "reward_version": registered_reward.name}
    created = admin_api.post(reverse("api_scoring_jobs"), body, format="json")
    assert created.status_code == 201, created.json()
    job = created.json()
    assert (job["project"], job["reward_version"], job["status"]) == (ranked_project.slug, "registered-reward", "queued")
    assert (job["candidates_total"], job["candidates_done"]) == (Candidate.objects.count(), 0) == (18, 0)
    assert job["progress"] == {"done": 0, "total": job["candidates_total"], "percent": 0, "elapsed_seconds": 0.0, "per_second": None, "eta_seconds": None}
    assert job["accuracy"] == {"pairs": 0, "correct": 0, "accuracy": None}  # nothing scored yet
    assert admin_api.get(reverse("api_scoring_job", args=[job["id"]])).json() == job
    listing = admin_api.get(reverse("api_scoring_jobs")).json()
    assert listing["count"] == 1 and listing["results"][0]["id"] == job["id"] and "accuracy" not in listing["results"][0]
    assert admin_api.get(reverse("api_scoring_jobs") + "?project=elsewhere").json()["count"] == 0

    cancelled = admin_api.post(reverse("api_scoring_job_cancel", args=[job["id"]]))
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = admin_api.post(reverse("api_scoring_job_cancel", args=[job["id"]]))
    assert again.status_code == 400 and "already cancelled" in again.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"project": "ghost", "reward_version": "registered-reward"}, "project"),
        ({"reward_version": "registered-reward"}, "project"),
        ({"project": "demo-project", "reward_version": "ghost"}, "reward_version"),
        ({"project": "demo-project", "reward_version": "tiny-policy"}, "reward_version"),  # a policy, not a reward model
    ],
)
def test_bad_scoring_jobs_are_400s_naming_the_field(admin_api, ranked_project, registered_reward, body, field):
    response = admin_api.post(reverse("api_scoring_jobs"), body, format="json")
    assert response.status_code == 400 and field in response.json(), response.json()
    assert not ScoringJob.objects.exists()


def test_a_project_without_candidates_is_not_scored(admin_api, registered_reward):
    empty = ProjectFactory(slug="empty-project")
    response = admin_api.post(reverse("api_scoring_jobs"), {"project": empty.slug, "reward_version": registered_reward.name}, format="json")
    assert response.status_code == 400 and "no candidates" in str(response.json())
    assert not ScoringJob.objects.exists()


# --- the queue order and reward accuracy ------------------------------------------------------------------------


def test_queue_order_refusals(admin_api, ranked_project, registered_reward):
    url = reverse("api_queue_order", args=[ranked_project.slug])
    assert admin_api.get(url).json() == {"order": "fewest_rankings", "reward_version": None}
    refusals = [
        ({"order": "random"}, "order"),
        ({}, "order"),
        ({"order": "reward_spread"}, "reward_version"),
        ({"order": "reward_spread", "reward_version": None}, "reward_version"),
        ({"order": "reward_spread", "reward_version": "ghost"}, "reward_version"),
        ({"order": "reward_spread", "reward_version": "tiny-policy"}, "reward_version"),
        ({"order": "reward_spread", "reward_version": registered_reward.name}, "reward_version"),  # has scored nothing
    ]
    for body, field in refusals:
        response = admin_api.post(url, body, format="json")
        assert response.status_code == 400 and field in response.json(), (body, response.json())
    assert admin_api.get(url).json() == {"order": "fewest_rankings", "reward_version": None}
    assert admin_api.get(reverse("api_queue_order", args=["ghost"])).status_code == 404


def test_reward_accuracy_needs_a_reward_model(admin_api, ranked_project):
    url = reverse("api_reward_accuracy", args=[ranked_project.slug])
    for query in ("", "?model=ghost", "?model=tiny-policy"):
        response = admin_api.get(url + query)
        assert response.status_code == 400 and "model" in response.json(), query


def test_a_trained_reward_model_scores_orders_the_queue_and_is_measured(admin_api, ranked_project, trained_reward):
    created = admin_api.post(reverse("api_scoring_jobs"), {"project": ranked_project.slug, "reward_version": trained_reward.name}, format="json")
    assert created.status_code == 201, created.json()
    job = scoring.scoring_job_execute(created.json()["id"])
    assert job.status == "succeeded", job.error

    detail = admin_api.get(reverse("api_scoring_job", args=[job.pk])).json()
    assert detail["status"] == "succeeded" and detail["candidates_done"] == detail["candidates_total"] == 18
    assert detail["progress"]["percent"] == 100
    expected = selectors.reward_accuracy(trained_reward, ranked_project)
    assert detail["accuracy"] == expected and expected["pairs"] == 6  # the held-out prompts' pairs only

    accuracy = admin_api.get(reverse("api_reward_accuracy", args=[ranked_project.slug]) + f"?model={trained_reward.name}")
    assert accuracy.json() == {"project": ranked_project.slug, "reward_version": trained_reward.name, **expected}

    url = reverse("api_queue_order", args=[ranked_project.slug])
    hardest_first = {"order": "reward_spread", "reward_version": trained_reward.name}
    assert admin_api.post(url, hardest_first, format="json").json() == hardest_first
    assert admin_api.get(url).json() == hardest_first
    assert ranked_project.items.filter(reward_spread__isnull=False).count() == ranked_project.items.count() > 0
    back = admin_api.post(url, {"order": "fewest_rankings", "reward_version": trained_reward.name}, format="json")
    assert back.json() == {"order": "fewest_rankings", "reward_version": None}
