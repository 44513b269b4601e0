"""The REST API: token auth, role checks on every endpoint, projects, prompts, imports and the registry."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from rest_framework.authtoken.models import Token

from annotation.models import Project
from generation.models import ModelVersion
from tests.factories import PromptFactory

pytestmark = pytest.mark.django_db

ROLES = ["anonymous", "labeler", "researcher", "admin"]


def authenticated(api_client, users, role):
    if role != "anonymous":
        token, _ = Token.objects.get_or_create(user=users[role])
        api_client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return api_client


def read_endpoints(project, prompt, version):
    return [
        (reverse("api_projects"), {"labeler", "researcher", "admin"}),
        (reverse("api_project", args=[project.slug]), {"labeler", "researcher", "admin"}),
        (reverse("api_prompts", args=[project.slug]), {"researcher", "admin"}),
        (reverse("api_prompt", args=[project.slug, prompt.pk]), {"researcher", "admin"}),
        (reverse("api_models"), {"researcher", "admin"}),
        (reverse("api_model", args=[version.name]), {"researcher", "admin"}),
    ]


def write_endpoints(project):
    return [
        (reverse("api_projects"), {"name": "New", "slug": "new-project"}),
        (reverse("api_prompts_import", args=[project.slug]), {"rows": [{"prompt": "hi"}]}),
        (reverse("api_models"), {"name": "hf-model", "base_model": "org/model"}),
    ]


@pytest.mark.parametrize("role", ROLES)
def test_every_endpoint_checks_the_role(api_client, users, project, role):
    prompt = PromptFactory(project=project)
    version = ModelVersion.objects.create(name="base", base_model="org/base")
    client = authenticated(api_client, users, role)
    for url, allowed in read_endpoints(project, prompt, version):
        expected = 401 if role == "anonymous" else 200 if role in allowed else 403
        assert client.get(url).status_code == expected, url
    for url, body in write_endpoints(project):
        expected = 401 if role == "anonymous" else 201 if role == "admin" else 403
        assert client.post(url, body, format="json").status_code == expected, url


def test_token_is_obtained_with_username_and_password(api_client, labeler):
    response = api_client.post(reverse("api_token"), {"username": labeler.username, "password": "pw-" + labeler.username})
    assert response.status_code == 200
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {response.json()['token']}")
    assert api_client.get(reverse("api_projects")).status_code == 200


def test_admin_creates_a_project(api_client, users):
    client = authenticated(api_client, users, "admin")
    response = client.post(
        reverse("api_projects"),
        {"name": "Chat", "slug": "chat", "guidelines": "Be *kind*", "responses_per_item": 6, "rankings_per_item": 2},
        format="json",
    )
    assert response.status_code == 201
    assert response.json()["responses_per_item"] == 6
    assert Project.objects.get(slug="chat").created_by == users["admin"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "X", "slug": "x", "responses_per_item": 9}, "responses_per_item"),
        ({"name": "X", "slug": "x", "rankings_per_item": 0}, "rankings_per_item"),
        ({"name": "X", "slug": "not a slug"}, "slug"),
        ({"slug": "x"}, "name"),
    ],
)
def test_bad_projects_are_refused_with_the_field(api_client, users, body, field):
    response = authenticated(api_client, users, "admin").post(reverse("api_projects"), body, format="json")
    assert response.status_code == 400
    assert field in response.json()


def test_duplicate_slug_is_a_400(api_client, users, project):
    response = authenticated(api_client, users, "admin").post(reverse("api_projects"), {"name": "X", "slug": project.slug}, format="json")
    assert response.status_code == 400 and "slug" in response.json()


def test_import_a_file_through_the_api(api_client, users, project):
    client = authenticated(api_client, users, "admin")
    upload = SimpleUploadedFile("pairs.jsonl", b'{"prompt": "q", "chosen": "good", "rejected": "bad"}\n{"prompt": "r"}\n')
    response = client.post(reverse("api_prompts_import", args=[project.slug]), {"file": upload, "heldout_fraction": "0"}, format="multipart")
    assert response.status_code == 201
    assert response.json() == {"rows": 2, "prompts_created": 2, "pairs_created": 1, "duplicates_skipped": 0, "identical_pairs_skipped": 0, "demonstrations_created": 0}


def test_import_rows_as_json_through_the_api(api_client, users, project):
    client = authenticated(api_client, users, "admin")
    rows = [{"messages": [{"role": "user", "content": "Hi"}], "id": "a"}, {"prompt": "Hi again"}]
    response = client.post(reverse("api_prompts_import", args=[project.slug]), {"rows": rows, "source": "script"}, format="json")
    assert response.status_code == 201 and response.json()["prompts_created"] == 2
    assert set(project.prompts.values_list("source", flat=True)) == {"script"}


def test_broken_import_is_a_400_with_the_line_and_nothing_is_written(api_client, users, project):
    client = authenticated(api_client, users, "admin")
    upload = SimpleUploadedFile("bad.jsonl", b'{"prompt": "fine"}\n{"messages": [{"role": "user"}]}\n')
    response = client.post(reverse("api_prompts_import", args=[project.slug]), {"file": upload}, format="multipart")
    assert response.status_code == 400
    assert response.json()["line"] == 2
    assert "line 2:" in response.json()["detail"]
    rows = client.post(reverse("api_prompts_import", args=[project.slug]), {"rows": [{"prompt": "ok"}, {"nope": 1}]}, format="json")
    assert rows.status_code == 400 and rows.json()["line"] == 2
    assert not project.prompts.exists()


def test_import_needs_exactly_one_of_file_or_rows(api_client, users, project):
    client = authenticated(api_client, users, "admin")
    assert client.post(reverse("api_prompts_import", args=[project.slug]), {}, format="json").status_code == 400
    assert client.post(reverse("api_prompts_import", args=["no-such-project"]), {"rows": [{"prompt": "x"}]}, format="json").status_code == 404


def test_prompts_are_paginated_and_filtered(api_client, users, project):
    for n in range(55):
        PromptFactory(project=project, split="heldout" if n < 5 else "train")
    client = authenticated(api_client, users, "researcher")
    page = client.get(reverse("api_prompts", args=[project.slug])).json()
    assert page["count"] == 55 and len(page["results"]) == 50 and page["next"]
    heldout = client.get(reverse("api_prompts", args=[project.slug]), {"split": "heldout"}).json()
    assert heldout["count"] == 5
    assert set(heldout["results"][0]) >= {"id", "messages", "content_hash", "split", "candidate_count"}


def test_register_models_through_the_api(api_client, users, tmp_path):
    client = authenticated(api_client, users, "admin")
    base = client.post(reverse("api_models"), {"name": "llama", "base_model": "meta-llama/Llama-3.2-1B-Instruct"}, format="json")
    assert base.status_code == 201
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 8}))
    child = client.post(
        reverse("api_models"),
        {"name": "llama-r1", "base_model": "meta-llama/Llama-3.2-1B-Instruct", "adapter_path": str(adapter), "parent": "llama"},
        format="json",
    )
    assert child.status_code == 201 and child.json()["parent"] == "llama"
    bad = client.post(reverse("api_models"), {"name": "x", "base_model": "org/m", "adapter_path": str(tmp_path)}, format="json")
    assert bad.status_code == 400 and "adapter_path" in bad.json()
