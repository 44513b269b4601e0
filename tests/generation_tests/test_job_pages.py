"""Generation job pages and API: roles, the launch form's refusals, cancel, progress figures."""

import pytest
from django.urls import reverse
from rest_framework.authtoken.models import Token

from generation.models import GenerationJob, GenerationJobModel, ModelVersion
from tests.factories import PromptFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def version(db):
    return ModelVersion.objects.create(name="policy", base_model="org/policy")


@pytest.fixture
def job(project, version):
    job = GenerationJob.objects.create(project=project, sampling={"temperature": 0.8, "top_p": 0.95, "max_new_tokens": 8, "seed": 0}, prompts_total=4)
    GenerationJobModel.objects.create(job=job, model_version=version, n=4)
    return job


def test_job_pages_check_the_role(client, users, project, job):
    pages = [
        (reverse("job_list"), {"researcher", "admin"}),
        (reverse("job_detail", args=[job.pk]), {"researcher", "admin"}),
        (reverse("job_create", args=[project.slug]), {"admin"}),
    ]
    for role in ["labeler", "researcher", "admin"]:
        client.force_login(users[role])
        for url, allowed in pages:
            assert client.get(url).status_code == (200 if role in allowed else 403), (role, url)
        if role != "admin":
            assert client.post(reverse("job_cancel", args=[job.pk])).status_code == 403
    client.logout()
    assert client.get(reverse("job_list")).status_code == 302


def test_labelers_never_see_models_in_job_pages(client, users, job):
    client.force_login(users["labeler"])
    assert "policy" not in client.get(reverse("job_list")).content.decode()


def test_the_launch_form_queues_a_job(client, admin_user, project, version):
    PromptFactory(project=project)
    client.force_login(admin_user)
    data = {f"n_{version.pk}": 4, "prompts": "missing", "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 32, "seed": 5, "stop": "###", "backend": "transformers"}
    response = client.post(reverse("job_create", args=[project.slug]), data)
    job = GenerationJob.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("job_detail", args=[job.pk])
    assert job.sampling == {"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 32, "seed": 5, "stop": ["###"]}
    assert (job.status, job.backend, job.prompts_total, job.requested_by) == ("queued", "transformers", 1, admin_user)


@pytest.mark.parametrize(
    ("change", "message"),
    [({"n": 3}, "add up to the project"), ({"prompts": "heldout"}, "No prompt matches"), ({"prompts": "ids", "prompt_ids": "1,x"}, "whole numbers")],
)
def test_the_launch_form_refuses_bad_jobs(client, admin_user, project, version, change, message):
    PromptFactory(project=project)
    client.force_login(admin_user)
    data = {f"n_{version.pk}": change.pop("n", 4), "prompts": "missing", "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 32, "seed": 0, "backend": "auto", **change}
    response = client.post(reverse("job_create", args=[project.slug]), data)
    assert response.status_code == 422 and message in response.content.decode()
    assert not GenerationJob.objects.exists()


def test_cancel_and_progress_fragment(client, admin_user, job):
    client.force_login(admin_user)
    fragment = client.get(reverse("job_detail", args=[job.pk]), headers={"HX-Request": "true"}).content.decode()
    assert 'hx-trigger="every 1s"' in fragment and "<html" not in fragment and "0 / 4" in fragment
    client.post(reverse("job_cancel", args=[job.pk]))
    job.refresh_from_db()
    assert job.status == "cancelled"
    page = client.get(reverse("job_detail", args=[job.pk])).content.decode()
    assert "every 1s" not in page  # finished jobs stop polling
    client.post(reverse("job_cancel", args=[job.pk]))
    assert "already cancelled" in client.get(reverse("job_detail", args=[job.pk])).content.decode()


def test_jobs_through_the_api(api_client, users, project, version):
    PromptFactory(project=project)
    token, _ = Token.objects.get_or_create(user=users["admin"])
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    body = {"project": project.slug, "models": [{"model": "policy", "n": 4}], "sampling": {"max_new_tokens": 16}, "backend": "transformers"}
    created = api_client.post(reverse("api_generation_jobs"), body, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["models"] == [{"model": "policy", "n": 4}] and created.json()["status"] == "queued"
    bad = api_client.post(reverse("api_generation_jobs"), {**body, "models": [{"model": "policy", "n": 2}]}, format="json")
    assert bad.status_code == 400 and "plan" in bad.json()
    cancelled = api_client.post(reverse("api_generation_job_cancel", args=[created.json()["id"]]))
    assert cancelled.json()["status"] == "cancelled"
    token, _ = Token.objects.get_or_create(user=users["labeler"])
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert api_client.get(reverse("api_generation_jobs")).status_code == 403
    assert api_client.post(reverse("api_generation_jobs"), body, format="json").status_code == 403
