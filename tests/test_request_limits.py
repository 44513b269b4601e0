"""Hostile request bodies: a body past its endpoint's limit is a 413 before anything reads it, and a ranking larger
than its item is a short 400 without quadratic work. Imports keep their large limit."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from django.urls import reverse
from rest_framework.authtoken.models import Token

from annotation.models import Prompt, Ranking
from tests.factories import make_item

pytestmark = pytest.mark.django_db


def token_client(client, user):
    token, _ = Token.objects.get_or_create(user=user)
    client.defaults["HTTP_AUTHORIZATION"] = f"Token {token.key}"
    return client


def test_an_oversized_json_body_is_a_413_before_it_is_read(client, labeler, project):
    item = make_item(project)
    client = token_client(client, labeler)
    client.get(reverse("api_next_item", args=[project.slug]))
    body = json.dumps({"tiers": [list(range(300_000))]})
    assert len(body) > 1024**2
    response = client.post(reverse("api_rank", args=[item.pk]), body, content_type="application/json")
    assert response.status_code == 413
    assert response.json() == {"detail": "The request body is larger than this endpoint accepts (1 MB)."}
    assert not Ranking.objects.exists()


def test_an_oversized_form_is_a_413_on_the_labeling_page(client, labeler, project):
    item = make_item(project)
    client.force_login(labeler)
    client.get(reverse("label", args=[project.slug]))
    response = client.post(reverse("label_rank", args=[project.slug, item.pk]), {"tiers": "[" + "1," * 600_000 + "1]"})
    assert response.status_code == 413 and len(response.content) < 200
    assert not Ranking.objects.exists()


def test_a_ranking_larger_than_its_item_is_a_short_400(client, labeler, project):
    item = make_item(project)
    client = token_client(client, labeler)
    client.get(reverse("api_next_item", args=[project.slug]))
    body = json.dumps({"tiers": [[7] * 150_000]})  # under the body limit, but 150,000 placements for 4 responses
    response = client.post(reverse("api_rank", args=[item.pk]), body, content_type="application/json")
    assert response.status_code == 400 and len(response.content) < 300, response.content[:300]
    assert "shows 4 responses; the ranking places more" in response.content.decode()
    assert not Ranking.objects.exists()


@override_settings(PREFLOOP_MAX_BODY_BYTES=1024)
def test_imports_keep_their_large_limit(client, admin_user, project):
    rows = "".join(json.dumps({"prompt": f"Question {n} " + "x" * 40}) + "\n" for n in range(100))
    assert len(rows) > 1024
    client.force_login(admin_user)
    upload = SimpleUploadedFile("prompts.jsonl", rows.encode(), content_type="application/jsonl")
    response = client.post(reverse("api_prompts_import", args=[project.slug]), {"file": upload})
    assert response.status_code == 201, response.content[:500]
    assert Prompt.objects.filter(project=project).count() == 100
