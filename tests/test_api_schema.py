"""The OpenAPI schema (generated from the code by drf-spectacular) is complete and clean, the browsable docs are
served without a CDN, and the API bugs found while fuzzing it (tests/test_api_fuzz.py) stay fixed."""

import re

import pytest
import yaml
from rest_framework.authtoken.models import Token
from django.core.management import call_command
from django.db import connection
from django.urls import URLPattern

from annotation import exports
from annotation.labeling import assignment_next, ranking_submit
from annotation.models import Ranking
from config.urls import api as api_routes
from generation.models import ModelVersion
from tests.factories import as_letters, make_item
from training.models import TrainingMetric, TrainingRun

SELF_DESCRIBING = {"api_schema", "api_docs"}  # the schema and its viewer are not operations of the API


def generated_schema(path, *options: str) -> dict:
    call_command("spectacular", "--file", str(path), *options)
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def schema(tmp_path_factory):
    return generated_schema(tmp_path_factory.mktemp("schema") / "schema.yml")


def openapi_path(route: URLPattern) -> str:
    """``api/projects/<slug:slug>/prompts/<int:pk>/`` → ``/api/projects/{slug}/prompts/{id}/`` (drf-spectacular names
    a ``pk`` ``id``)."""
    path = re.sub(r"<(?:\w+:)?(\w+)>", lambda match: "{" + ("id" if match[1] == "pk" else match[1]) + "}", str(route.pattern))
    return "/" + path


def test_the_schema_is_valid_openapi_generated_without_an_error_or_a_warning(tmp_path):
    schema = generated_schema(tmp_path / "schema.yml", "--validate", "--fail-on-warn")  # raises on either
    assert schema["openapi"].startswith("3.")


def test_every_api_route_is_in_the_schema_and_nothing_else(schema):
    routes = {openapi_path(route) for route in api_routes if route.name not in SELF_DESCRIBING}
    assert routes == set(schema["paths"])


def test_every_operation_documents_its_errors(schema):
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            if path != "/api/auth/token/":
                assert {"401", "403"} <= codes, (method, path)
            if "{" in path:
                assert "404" in codes, (method, path)
            filters = [p for p in operation.get("parameters", []) if p["in"] == "query" and p["name"] != "page"]
            if "requestBody" in operation or filters:  # input the API or the database may refuse
                assert "400" in codes, (method, path)


def test_the_docs_render_for_a_logged_in_user_with_swagger_ui_from_the_sidecar(client, admin_user):
    client.force_login(admin_user)
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    assert any("swagger-ui-dist/swagger-ui-bundle.js" in asset for asset in assets), assets
    assert not re.findall(r"https?://[^\s\"']+", html)  # nothing from a CDN
    for asset in assets:
        if "drf_spectacular_sidecar" in asset:
            assert client.get(asset).status_code == 200, asset


# --- regressions found while fuzzing the API --------------------------------------------------------------------


@pytest.fixture
def admin_api(api_client, admin_user):
    api_client.force_authenticate(admin_user)
    return api_client


@pytest.fixture
def run(project):
    version = ModelVersion.objects.create(name="policy", base_model="org/policy")
    run = TrainingRun.objects.create(kind="dpo", base_version=version)
    TrainingMetric.objects.create(run=run, step=1, split="train", name="loss", value=0.5)
    return run


@pytest.mark.parametrize("after_step", ["²", "-1", "1.5"])
def test_metrics_after_a_step_that_is_not_a_whole_number_are_a_400(admin_api, run, after_step):
    response = admin_api.get(f"/api/training-runs/{run.pk}/metrics/", {"after_step": after_step})
    assert response.status_code == 400 and "after_step" in response.json()


def test_rankings_of_a_labeler_id_that_is_not_a_number_are_none(admin_api, admin_user, project):
    item = make_item(project)
    assignment_next(labeler=admin_user, project=project)
    ranking_submit(labeler=admin_user, item_id=item.pk, tiers=[[c.pk] for c in item.candidates.order_by("id")])
    assert admin_api.get("/api/rankings/", {"labeler": "²"}).json()["count"] == 0
    assert admin_api.get("/api/rankings/", {"labeler": str(admin_user.pk)}).json()["count"] == 1


def test_revising_a_ranking_without_a_rationale_keeps_it(admin_api, admin_user, project):
    item = make_item(project)
    assignment_next(labeler=admin_user, project=project)
    ids = [c.pk for c in item.candidates.order_by("id")]
    ranking = ranking_submit(labeler=admin_user, item_id=item.pk, tiers=[[i] for i in ids], rationale="A is best")
    response = admin_api.patch(f"/api/rankings/{ranking.pk}/", {"tiers": as_letters(admin_user, item, [[i] for i in reversed(ids)])}, format="json")
    assert response.status_code == 200, response.json()
    assert Ranking.objects.get(pk=ranking.pk).rationale == "A is best"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/api/training-runs/{run}/metrics/?name=lo\x00ss", 200),
        ("/api/training-runs/?project=de\x00mo", 200),
        ("/api/projects/demo-project/prompts/?search=a\x00b", 200),
        ("/api/projects/demo-project/pairs/?model_versions=a\x00b", 400),  # no such model version
        ("/api/projects/demo-project/reward-accuracy/?model=a\x00b", 400),  # no such reward model
    ],
)
def test_a_nul_character_in_a_filter_is_no_server_error(admin_api, run, url, expected):
    """PostgreSQL cannot store or compare text holding NUL characters (SQLite can): a 400 there."""
    response = admin_api.get(url.format(run=run.pk))
    assert response.status_code == (400 if connection.vendor == "postgresql" else expected), response.content
    assert response["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    ("url", "body", "expected"),
    [
        ("/api/exports/", {"projects": ["demo\x00"]}, 400),  # no such project
        ("/api/exports/", {"projects": ["demo-project"], "pair_filter": {"model_versions": ["a\x00b"]}}, 400),  # unknown
        ("/api/models/", {"name": "with-config", "base_model": "org/model", "config": {"note": "a\x00b"}}, 201),
    ],
)
def test_a_nul_character_in_a_body_is_no_server_error(admin_api, project, url, body, expected):
    response = admin_api.post(url, body, format="json")
    assert response.status_code == (400 if connection.vendor == "postgresql" else expected), response.content


@pytest.mark.parametrize("sources", [5, [["human"]], [{"a": 1}], "human"])
def test_pair_filter_sources_that_are_not_a_list_of_names_are_a_400(admin_api, project, sources):
    response = admin_api.post("/api/exports/", {"projects": [project.slug], "pair_filter": {"sources": sources}}, format="json")
    assert response.status_code == 400
    assert "sources" in response.json()["pair_filter"]


def test_a_download_is_a_file_whatever_the_client_accepts(admin_api, project):
    export = exports.export_create(projects=[project], export_format="jsonl")
    data = admin_api.get(f"/api/exports/{export.pk}/data/", HTTP_ACCEPT="application/octet-stream")
    assert data.status_code == 200 and data["Content-Type"] == "application/octet-stream"
    card = admin_api.get(f"/api/exports/{export.pk}/card/", HTTP_ACCEPT="text/markdown")
    assert card.status_code == 200 and card["Content-Type"].startswith("text/markdown")
    assert admin_api.get("/api/exports/999999/data/", HTTP_ACCEPT="application/zip").json() == {"detail": "Not found."}


HUGE = "9" * 25  # past 64 bits: no row has such an id, and SQLite cannot compare it


@pytest.mark.parametrize("action", ["ranking", "skip", "flag"])
def test_an_item_id_past_64_bits_is_a_404(admin_api, action):
    response = admin_api.post(f"/api/items/{HUGE}/{action}/", {"tiers": [[1]], "reason": "other"}, format="json")
    assert response.status_code == 404, response.content


@pytest.mark.parametrize("number", [HUGE, "9" * 5000])
def test_huge_numbers_in_filters_find_nothing(admin_api, run, number):
    assert admin_api.get("/api/rankings/", {"labeler": number}).json()["count"] == 0
    assert admin_api.get(f"/api/training-runs/{run.pk}/metrics/", {"after_step": number}).json() == []


def test_a_prompt_id_past_64_bits_is_a_400(admin_api, project):
    ModelVersion.objects.create(name="policy", base_model="org/policy")
    body = {"project": project.slug, "models": [{"model": "policy", "n": 4}], "prompts": {"mode": "ids", "ids": [int(HUGE)]}}
    response = admin_api.post("/api/generation-jobs/", body, format="json")
    assert response.status_code == 400 and "ids" in response.json()["prompts"]


def test_a_sampling_number_too_large_to_be_finite_is_a_400(admin_api, project):
    ModelVersion.objects.create(name="policy", base_model="org/policy")
    body = '{"project": "%s", "models": [{"model": "policy", "n": 4}], "sampling": {"max_new_tokens": 1e999}}' % project.slug
    response = admin_api.post("/api/generation-jobs/", body, content_type="application/json")
    assert response.status_code == 400 and "max_new_tokens" in response.json()["sampling"]


@pytest.mark.parametrize("field", ["base_model", "adapter_path"])
def test_a_model_folder_that_cannot_be_looked_at_is_a_400(admin_api, field):
    body = {"name": "long", "base_model": "org/model", field: "/" + "a" * 300}  # longer than any file name may be
    response = admin_api.post("/api/models/", body, format="json")
    assert response.status_code == 400 and response.json()["detail"].startswith("Cannot read /aaa")
    assert not ModelVersion.objects.filter(name="long").exists()


def test_api_paths_that_match_no_route_get_a_json_404(client):
    response = client.get("/api/exports/-1/")
    assert response.status_code == 404 and response.json() == {"detail": "Not found."}
    assert "<html" in client.get("/no-such-page/").content.decode().lower()


def test_the_schema_and_its_docs_need_a_login_or_a_token(api_client, labeler):
    for url in ("/api/schema/", "/api/docs/"):
        assert api_client.get(url).status_code in (401, 403)
    api_client.force_login(labeler)
    assert api_client.get("/api/docs/").status_code == 200
    api_client.logout()
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=labeler).key}")
    assert api_client.get("/api/schema/", {"format": "json"}).status_code == 200
