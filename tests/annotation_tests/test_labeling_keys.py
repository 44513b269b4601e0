"""Labelers never learn which model wrote a response (hardening item 5).

Generation jobs write model after model, so candidate ids follow generation order: shown to a labeler, the lower ids
were the first model's responses on every item. Labelers get letters of a per-labeler, per-item shuffle instead, over
the API and on the page (next item, ranking results, my rankings, revise); researchers and admins keep the ids.
"""

import json
import re

import pytest
from django.urls import reverse
from rest_framework.authtoken.models import Token

from annotation import labeling
from annotation.importing import content_hash
from annotation.models import Ranking, RankingItem
from generation.models import Candidate, ModelVersion
from tests.factories import ProjectFactory, PromptFactory, user_with_role

pytestmark = pytest.mark.django_db

ITEMS = 24
FIRST_ID = 7_310_000  # candidate ids far from any other number on the pages, so a leak is a plain substring


def _policy(name):
    return ModelVersion.objects.create(name=name, base_model=f"org/{name}")


@pytest.fixture
def generated():
    """ITEMS prompts of a K=4 project; model one answered all of them twice, then model two did (ids ascending)."""
    project = ProjectFactory(responses_per_item=4, rankings_per_item=1)
    prompts = [PromptFactory(project=project) for _ in range(ITEMS)]
    models = [_policy("first-model"), _policy("second-model")]
    next_id = FIRST_ID
    by_prompt = {prompt.pk: [] for prompt in prompts}
    for model in models:  # one job after the other
        for prompt in prompts:
            for sample in range(2):
                text = f"Answer {sample} of model {model.pk} to prompt {prompt.pk}."
                by_prompt[prompt.pk].append(Candidate.objects.create(
                    pk=next_id, prompt=prompt, model_version=model, text=text, text_hash=content_hash(text), source="generated"
                ))
                next_id += 1
    for prompt in prompts:
        labeling.ranking_item_create(prompt=prompt, candidates=by_prompt[prompt.pk])
    return project, models[0], range(FIRST_ID, next_id)


def _ids_in(text, candidate_ids):
    found = {int(number) for number in re.findall(r"\d{7}", text)}
    return found & set(candidate_ids)


def test_labeler_keys_say_nothing_about_generation_order_over_the_api_and_the_page(api_client, client, generated):
    project, first_model, candidate_ids = generated
    labeler = user_with_role("labeler", "keys-labeler")
    token, _ = Token.objects.get_or_create(user=labeler)
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    client.force_login(labeler)
    first_model_keys_lowest = 0
    for n in range(ITEMS):
        # Every other item through the page, the rest through the API.
        response = client.get(reverse("label", args=[project.slug])) if n % 2 else api_client.get(reverse("api_next_item", args=[project.slug]))
        text = response.content.decode()
        assert response.status_code == 200
        assert not _ids_in(text, candidate_ids), f"a candidate id reached the labeler: {_ids_in(text, candidate_ids)}"
        if n % 2:
            item_id = int(re.search(r'data-item="(\d+)"', text).group(1))
            keys = re.findall(r'class="response"[^>]*data-letter="([A-Z])"', text)
        else:
            item_id = response.json()["item"]
            keys = [shown["key"] for shown in response.json()["responses"]]
            assert all(set(shown) == {"key", "text"} for shown in response.json()["responses"])
        assert sorted(keys) == list("ABCD")
        # The labeler ranks by keys alone; the stored ranking (in ids) tells which key was which model.
        submitted = [[key] for key in keys]
        if n % 2:
            client.post(reverse("label_rank", args=[project.slug, item_id]), {"tiers": json.dumps(submitted)})
        else:
            result = api_client.post(reverse("api_rank", args=[item_id]), {"tiers": submitted}, format="json")
            assert result.status_code == 201 and not _ids_in(result.content.decode(), candidate_ids)
            assert result.json()["tiers"] == submitted
        stored = Ranking.objects.get(item_id=item_id, labeler=labeler).tiers
        model_of = dict(Candidate.objects.filter(items__pk=item_id).values_list("id", "model_version_id"))
        first_keys = sorted(key for key, [candidate] in zip(keys, stored) if model_of[candidate] == first_model.pk)
        assert len(first_keys) == 2
        first_model_keys_lowest += first_keys == sorted(keys)[:2]
    # With ids, the first model had the two lowest on all 24 items; with a shuffle, each item 1 time in 6 (about 4).
    assert first_model_keys_lowest <= ITEMS // 2, f"the first model had the lowest keys on {first_model_keys_lowest} of {ITEMS} items"
    assert RankingItem.objects.filter(project=project, rankings_count=1).count() == ITEMS

    # My rankings, their revision page, and the API list and detail: letters, never ids.
    for url in [reverse("my_rankings", args=[project.slug]), reverse("api_rankings")]:
        assert not _ids_in(client.get(url).content.decode(), candidate_ids), url
    ranking = Ranking.objects.filter(labeler=labeler).first()
    for url in [reverse("ranking_revise", args=[project.slug, ranking.pk]), reverse("api_ranking", args=[ranking.pk])]:
        assert not _ids_in(client.get(url).content.decode(), candidate_ids), url

    # Researchers keep the real ids.
    researcher = user_with_role("researcher", "keys-researcher")
    client.force_login(researcher)
    assert client.get(reverse("api_ranking", args=[ranking.pk])).json()["tiers"] == ranking.tiers


def test_raw_candidate_ids_are_refused_with_a_clear_400(api_client, client, generated):
    project, _, candidate_ids = generated
    labeler = user_with_role("labeler", "old-client")
    token, _ = Token.objects.get_or_create(user=labeler)
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    item_id = api_client.get(reverse("api_next_item", args=[project.slug])).json()["item"]
    ids = list(Candidate.objects.filter(items__pk=item_id).order_by("id").values_list("id", flat=True))
    response = api_client.post(reverse("api_rank", args=[item_id]), {"tiers": [[i] for i in ids]}, format="json")
    assert response.status_code == 400
    assert response.json()["detail"] == "Rank by the letters shown (A, B, C, D), not by response ids."
    client.force_login(labeler)
    page = client.post(reverse("label_rank", args=[project.slug, item_id]), {"tiers": json.dumps([ids])}, headers={"HX-Request": "true"})
    assert page.status_code == 422 and "not by response ids" in page.content.decode()
    assert not Ranking.objects.exists()
