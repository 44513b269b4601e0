"""Limits on what a user may send (issue 12, item 9): each was accepted before. A flag note or skip reason past its
length, a seed past what samplers take, `stop` as a bare string, an eval interval of 10^30, a one-character password
for add_user: each is refused with a message that names it, and nothing is written."""

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.contrib.auth import get_user_model
from django.urls import reverse

from annotation.labeling import MAX_FLAG_NOTE, MAX_SKIP_REASON
from annotation.models import Assignment, ItemFlag
from generation.jobs import MAX_SEED
from generation.models import GenerationJob, ModelVersion
from tests.factories import make_item
from training.models import TrainingRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def leased(api_client, labeler, project):
    item = make_item(project)
    api_client.force_authenticate(labeler)
    assert api_client.get(reverse("api_next_item", args=[project.slug])).json()["item"] == item.pk
    return item


def test_a_flag_note_past_its_limit_is_refused_and_the_item_stays_leased(api_client, leased):
    response = api_client.post(reverse("api_flag", args=[leased.pk]), {"reason": "broken", "note": "x" * (MAX_FLAG_NOTE + 1)}, format="json")
    assert response.status_code == 400 and len(response.content) < 300, response.content[:300]
    assert not ItemFlag.objects.exists()
    ok = api_client.post(reverse("api_flag", args=[leased.pk]), {"reason": "broken", "note": "x" * MAX_FLAG_NOTE}, format="json")
    assert ok.status_code == 201


def test_the_labeling_page_refuses_a_long_note_and_a_long_skip_reason(client, labeler, project):
    item = make_item(project)
    client.force_login(labeler)
    client.get(reverse("label", args=[project.slug]))
    flagged = client.post(reverse("label_flag", args=[project.slug, item.pk]), {"reason": "broken", "note": "n" * (MAX_FLAG_NOTE + 1)}, follow=True)
    assert b"The note is longer than 2000 characters." in flagged.content and not ItemFlag.objects.exists()
    skipped = client.post(reverse("label_skip", args=[project.slug, item.pk]), {"reason": "r" * (MAX_SKIP_REASON + 1)}, follow=True)
    assert b"The skip reason is longer than 500 characters." in skipped.content
    assert Assignment.objects.get().status == Assignment.Status.LEASED


@pytest.mark.parametrize("sampling, field", [
    ({"seed": 2**64}, "seed"),
    ({"seed": MAX_SEED + 1}, "seed"),
    ({"stop": "abc"}, "stop"),
    ({"stop": ["x"] * 17}, "stop"),
    ({"stop": [1, 2]}, "stop"),
])
def test_generation_refuses_a_seed_past_its_range_and_stop_that_is_not_a_list_of_strings(api_client, admin_user, project, sampling, field):
    ModelVersion.objects.create(name="policy", base_model="org/policy")
    api_client.force_authenticate(admin_user)
    body = {"project": project.slug, "models": [{"model": "policy", "n": 4}], "sampling": sampling}
    response = api_client.post("/api/generation-jobs/", body, format="json")
    assert response.status_code == 400 and field in str(response.json()), response.json()
    assert not GenerationJob.objects.exists()


def test_generation_keeps_the_largest_seed_and_a_list_of_stop_strings(project):
    from generation.jobs import sampling_from

    sampling = sampling_from({"seed": MAX_SEED, "stop": ["\n\n", "", "###"]})
    assert sampling.seed == MAX_SEED and sampling.stop == ("\n\n", "###")


def test_an_eval_interval_past_any_run_is_refused(api_client, admin_user, project):
    base = ModelVersion.objects.create(name="base", base_model="org/base")
    api_client.force_authenticate(admin_user)
    body = {"kind": "dpo", "base_version": base.name, "projects": [project.slug], "settings": {"eval_steps": 10**30}}
    response = api_client.post("/api/training-runs/", body, format="json")
    assert response.status_code == 400 and "eval_steps" in str(response.json()), response.json()
    assert not TrainingRun.objects.exists()


@pytest.mark.parametrize("password, message", [
    ("x", "too short"), ("password123", "too common"), ("84619273650", "entirely numeric"), ("lena-the-labeler", "too similar"),
])
def test_add_user_refuses_weak_passwords(password, message):
    with pytest.raises(CommandError, match=message):
        call_command("add_user", "lena-the-labeler", "--role", "labeler", "--password", password)
    assert not get_user_model().objects.filter(username="lena-the-labeler").exists()


def test_a_demonstration_past_its_limit_is_refused_on_the_page_and_over_the_api(client, api_client, labeler):
    from annotation.demonstrating import MAX_DEMONSTRATION_CHARS
    from annotation.models import Demonstration
    from tests.factories import ProjectFactory, PromptFactory

    prompt = PromptFactory(project=ProjectFactory(slug="writing-limits", demonstration_mode="write"))
    api_client.force_authenticate(labeler)
    url = reverse("api_demonstrations", args=["writing-limits"])
    response = api_client.post(url, {"prompt": prompt.pk, "text": "x" * (MAX_DEMONSTRATION_CHARS + 1)}, format="json")
    assert response.status_code == 400 and "text" in response.json() and len(response.content) < 300, response.content[:300]
    client.force_login(labeler)
    page = client.post(reverse("write_submit", args=["writing-limits", prompt.pk]), {"text": "x" * (MAX_DEMONSTRATION_CHARS + 1)}, follow=True)
    assert f"The answer is longer than {MAX_DEMONSTRATION_CHARS} characters.".encode() in page.content
    assert not Demonstration.objects.exists()
    assert api_client.post(url, {"prompt": prompt.pk, "text": "x" * MAX_DEMONSTRATION_CHARS}, format="json").status_code == 201
