"""HTML pages: who may see and do what, and the admin's browser workflows."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from annotation.models import Project
from generation.models import Candidate, ModelVersion
from tests.factories import PromptFactory

pytestmark = pytest.mark.django_db

ROLES = ["anonymous", "labeler", "researcher", "admin"]


def client_for(client, users, role):
    if role != "anonymous":
        client.force_login(users[role])
    return client


def page_urls(project, prompt):
    """Every page, with the roles allowed to open it."""
    return [
        (reverse("home"), {"labeler", "researcher", "admin"}),
        (reverse("project_detail", args=[project.slug]), {"labeler", "researcher", "admin"}),
        (reverse("project_create"), {"admin"}),
        (reverse("prompts_import", args=[project.slug]), {"admin"}),
        (reverse("prompt_list", args=[project.slug]), {"researcher", "admin"}),
        (reverse("prompt_detail", args=[project.slug, prompt.pk]), {"researcher", "admin"}),
        (reverse("model_list"), {"researcher", "admin"}),
        (reverse("model_register"), {"admin"}),
    ]


@pytest.mark.parametrize("role", ROLES)
def test_every_page_checks_the_role(client, users, project, role):
    prompt = PromptFactory(project=project)
    client = client_for(client, users, role)
    for url, allowed in page_urls(project, prompt):
        response = client.get(url)
        if role == "anonymous":
            assert response.status_code == 302 and response["Location"].startswith(reverse("login")), url
        elif role in allowed:
            assert response.status_code == 200, url
        else:
            assert response.status_code == 403, url


@pytest.mark.parametrize("role", ["labeler", "researcher"])
def test_only_admins_can_post_writes(client, users, project, role):
    client.force_login(users[role])
    upload = SimpleUploadedFile("p.jsonl", b'{"prompt": "x"}\n')
    assert client.post(reverse("prompts_import", args=[project.slug]), {"file": upload}).status_code == 403
    assert client.post(reverse("project_create"), {"name": "X", "slug": "x", "responses_per_item": 4, "rankings_per_item": 1}).status_code == 403
    assert client.post(reverse("model_register"), {"name": "m", "base_model": "org/model", "kind": "policy"}).status_code == 403
    assert not project.prompts.exists() and not Project.objects.filter(slug="x").exists() and not ModelVersion.objects.exists()


def test_a_user_without_a_role_is_refused(client, django_user_model, project):
    client.force_login(django_user_model.objects.create_user("nobody", password="pw"))
    assert client.get(reverse("home")).status_code == 403


def test_login_and_logout(client, labeler):
    response = client.post(reverse("login"), {"username": labeler.username, "password": "pw-" + labeler.username})
    assert response.status_code == 302
    assert client.get(reverse("home")).status_code == 200
    client.post(reverse("logout"))
    assert client.get(reverse("home")).status_code == 302


def test_admin_creates_a_project_in_the_browser(client, admin_user):
    client.force_login(admin_user)
    response = client.post(
        reverse("project_create"),
        {"name": "Chat v2", "slug": "chat-v2", "guidelines": "# Be kind", "responses_per_item": 5, "rankings_per_item": 3},
    )
    project = Project.objects.get(slug="chat-v2")
    assert response.status_code == 302 and response["Location"] == reverse("project_detail", args=["chat-v2"])
    assert (project.responses_per_item, project.rankings_per_item, project.created_by) == (5, 3, admin_user)
    page = client.get(reverse("project_detail", args=["chat-v2"])).content.decode()
    assert "<h1>Be kind</h1>" in page


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("responses_per_item", 9, "less than or equal to 8"), ("responses_per_item", 1, "greater than or equal to 2"),
     ("rankings_per_item", 6, "less than or equal to 5"), ("slug", "has spaces", "valid “slug”")],
)
def test_project_form_refuses_bad_values(client, admin_user, field, value, message):
    client.force_login(admin_user)
    data = {"name": "P", "slug": "p", "responses_per_item": 4, "rankings_per_item": 1, field: value}
    response = client.post(reverse("project_create"), data)
    assert response.status_code == 422
    assert message in response.content.decode()
    assert not Project.objects.exists()


def test_duplicate_slug_is_refused_on_the_form(client, admin_user, project):
    client.force_login(admin_user)
    response = client.post(reverse("project_create"), {"name": "Again", "slug": project.slug, "responses_per_item": 4, "rankings_per_item": 1})
    assert response.status_code == 422
    assert "already exists" in response.content.decode()


def test_guidelines_markdown_cannot_inject_html(client, labeler):
    project = Project.objects.create(name="P", slug="p", guidelines="**bold** <script>alert(1)</script> <img src=x onerror=alert(1)>")
    client.force_login(labeler)
    page = client.get(reverse("project_detail", args=[project.slug])).content.decode()
    assert "<strong>bold</strong>" in page
    assert "<script>alert" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_import_upload_with_htmx_returns_the_result_fragment(client, admin_user, project):
    client.force_login(admin_user)
    rows = b'{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": "a"}\n'
    response = client.post(
        reverse("prompts_import", args=[project.slug]),
        {"file": SimpleUploadedFile("p.jsonl", rows), "heldout_fraction": "0"},
        headers={"HX-Request": "true"},
    )
    body = response.content.decode()
    assert response.status_code == 200
    assert "3 rows, 2 new prompts, 0 new preference pairs, 1 duplicates skipped" in body
    assert "<html" not in body
    assert project.prompts.count() == 2


def test_import_upload_of_a_broken_file_shows_the_line_and_imports_nothing(client, admin_user, project):
    client.force_login(admin_user)
    rows = b'{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": }\n'
    response = client.post(reverse("prompts_import", args=[project.slug]), {"file": SimpleUploadedFile("bad.jsonl", rows)})
    assert response.status_code == 422
    assert "Nothing was imported. bad.jsonl, line 3: invalid JSON" in response.content.decode()
    assert not project.prompts.exists()


def test_prompt_list_paginates_and_searches(client, researcher, project):
    for n in range(60):
        PromptFactory(project=project, messages=[{"role": "user", "content": f"topic {'zebra' if n == 42 else 'plain'} {n}"}])
    client.force_login(researcher)
    url = reverse("prompt_list", args=[project.slug])
    first = client.get(url).content.decode()
    assert "60 prompts" in first and "Page 1 of 2" in first
    found = client.get(url, {"q": "zebra"}, headers={"HX-Request": "true"}).content.decode()
    assert "1 prompt" in found and "topic zebra 42" in found and "<html" not in found


def test_prompt_detail_shows_candidates_with_their_model_to_researchers(client, researcher, project):
    prompt = PromptFactory(project=project, messages=[{"role": "user", "content": "Say <b>hi</b>"}])
    version = ModelVersion.objects.create(name="policy-v1", base_model="org/model")
    Candidate.objects.create(prompt=prompt, text="Hello <script>x</script>", text_hash="h", source="generated", model_version=version, sampling={"temperature": 0.7})
    client.force_login(researcher)
    page = client.get(reverse("prompt_detail", args=[project.slug, prompt.pk])).content.decode()
    assert "policy-v1" in page and "temperature" in page
    assert "<script>x</script>" not in page and "<b>hi</b>" not in page


def test_prompt_from_another_project_is_not_found(client, researcher, project):
    other = PromptFactory()
    client.force_login(researcher)
    assert client.get(reverse("prompt_detail", args=[project.slug, other.pk])).status_code == 404


def test_admin_registers_a_model_in_the_browser(client, admin_user, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    client.force_login(admin_user)
    response = client.post(reverse("model_register"), {"name": "local-model", "base_model": str(tmp_path), "kind": "policy"})
    assert response.status_code == 302
    assert ModelVersion.objects.get(name="local-model").base_model == str(tmp_path)
    bad = client.post(reverse("model_register"), {"name": "missing", "base_model": "/does/not/exist", "kind": "policy"})
    assert bad.status_code == 422 and "not a model folder" in bad.content.decode()
