"""The labeling loop through the REST API, with token auth and role checks."""

import pytest
from django.urls import reverse
from rest_framework.authtoken.models import Token

from annotation import labeling
from annotation.models import PreferencePair, Ranking
from annotation.roles import LABELER
from tests.factories import ProjectFactory, as_letters, make_item, user_with_role

pytestmark = pytest.mark.django_db


def as_user(api_client, user):
    token, _ = Token.objects.get_or_create(user=user)
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return api_client


def test_next_item_then_rank_over_the_api(api_client, labeler, project):
    item = make_item(project)
    client = as_user(api_client, labeler)
    shown = client.get(reverse("api_next_item", args=[project.slug])).json()
    assert shown["item"] == item.pk
    assert [r["key"] for r in shown["responses"]] == ["A", "B", "C", "D"]
    assert set(shown["responses"][0]) == {"key", "text"}
    assert shown["messages"] == item.prompt.messages
    response = client.post(reverse("api_rank", args=[item.pk]), {"tiers": [["D"], ["C"], ["A", "B"]], "rationale": "D best"}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert body["pairs"] == 5 and body["tiers"] == [["D"], ["C"], ["A", "B"]] and body["ranking"] == "D > C > A = B"
    id_of = {as_letters(labeler, item, [[i]])[0][0]: i for i in item.candidates.values_list("id", flat=True)}
    assert Ranking.objects.get().tiers == [[id_of["D"]], [id_of["C"]], [id_of["A"], id_of["B"]]]  # stored as candidate ids
    assert client.get(reverse("api_next_item", args=[project.slug])).status_code == 204


@pytest.mark.parametrize(
    ("tiers", "status"),
    [([["A", "B"]], 400), ("D > C", 400), ([], 400), (None, 400), ([["a"], ["B", "C", "D"]], 400), ([["A", "B", "C", "E"]], 400)],
)
def test_malformed_rankings_are_400s(api_client, labeler, project, tiers, status):
    item = make_item(project)
    client = as_user(api_client, labeler)
    client.get(reverse("api_next_item", args=[project.slug]))
    response = client.post(reverse("api_rank", args=[item.pk]), {"tiers": tiers}, format="json")
    assert response.status_code == status and response.json()  # a `detail` or the field's errors
    assert not Ranking.objects.exists() and not PreferencePair.objects.filter(source="human").exists()


def test_ranking_someone_elses_item_is_a_404_and_twice_is_a_409(api_client, labeler, project):
    item = make_item(project)
    other = user_with_role(LABELER, "other-labeler")
    labeling.assignment_next(labeler=other, project=project)
    client = as_user(api_client, labeler)
    letters = list("ABCD")
    assert client.post(reverse("api_rank", args=[item.pk]), {"tiers": [letters]}, format="json").status_code == 404
    as_user(api_client, other)
    assert client.post(reverse("api_rank", args=[item.pk]), {"tiers": [letters]}, format="json").status_code == 201
    again = client.post(reverse("api_rank", args=[item.pk]), {"tiers": [letters]}, format="json")
    assert again.status_code == 409 and "already submitted" in again.json()["detail"]


def test_skip_and_flag_over_the_api(api_client, labeler, admin_user, project):
    first, second = make_item(project), make_item(project)
    client = as_user(api_client, labeler)
    client.get(reverse("api_next_item", args=[project.slug]))
    assert client.post(reverse("api_skip", args=[first.pk]), {}, format="json").status_code == 400
    assert client.post(reverse("api_skip", args=[first.pk]), {"reason": "unsure"}, format="json").status_code == 200
    assert client.get(reverse("api_next_item", args=[project.slug])).json()["item"] == second.pk
    assert client.post(reverse("api_flag", args=[second.pk]), {"reason": "nope"}, format="json").status_code == 400
    flag = client.post(reverse("api_flag", args=[second.pk]), {"reason": "duplicate", "note": "B = C"}, format="json")
    assert flag.status_code == 201
    assert client.get(reverse("api_flags", args=[project.slug])).status_code == 403
    admin = as_user(api_client, admin_user)
    assert [f["note"] for f in admin.get(reverse("api_flags", args=[project.slug])).json()] == ["B = C"]
    assert admin.post(reverse("api_flag_retire", args=[flag.json()["id"]])).json()["status"] == "retired"


def test_labelers_list_only_their_own_rankings_researchers_all(api_client, users, project):
    rankings = {}
    for role in ("labeler", "admin"):
        item = make_item(project)
        labeling.assignment_next(labeler=users[role], project=project)
        rankings[role] = labeling.ranking_submit(labeler=users[role], item_id=item.pk, tiers=[list(item.candidates.values_list("id", flat=True))])
    client = as_user(api_client, users["labeler"])
    listed = client.get(reverse("api_rankings")).json()
    assert [r["id"] for r in listed["results"]] == [rankings["labeler"].pk]
    assert client.get(reverse("api_ranking", args=[rankings["admin"].pk])).status_code == 404
    researcher = as_user(api_client, users["researcher"])
    assert researcher.get(reverse("api_rankings")).json()["count"] == 2
    assert researcher.get(reverse("api_rankings"), {"labeler": users["admin"].pk}).json()["count"] == 1
    assert researcher.patch(reverse("api_ranking", args=[rankings["admin"].pk]), {"tiers": []}, format="json").status_code == 403


def test_revise_over_the_api(api_client, labeler, project):
    item = make_item(project)
    labeling.assignment_next(labeler=labeler, project=project)
    a, b, c, d = sorted(item.candidates.values_list("id", flat=True))
    ranking = labeling.ranking_submit(labeler=labeler, item_id=item.pk, tiers=[[a, b, c, d]])
    client = as_user(api_client, labeler)
    response = client.patch(reverse("api_ranking", args=[ranking.pk]), {"tiers": as_letters(labeler, item, [[a], [b, c, d]])}, format="json")
    assert response.status_code == 200 and response.json()["pairs"] == 3
    assert response.json()["tiers"] == as_letters(labeler, item, [[a], [b, c, d]])
    refused = client.patch(reverse("api_ranking", args=[ranking.pk]), {"tiers": [[a], [b, c, d]]}, format="json")
    assert refused.status_code == 400 and "not by response ids" in refused.json()["detail"]


def test_progress_and_agreement_for_admins_and_researchers(api_client, users):
    project = ProjectFactory(rankings_per_item=2)
    item = make_item(project)
    a, b, c, d = sorted(item.candidates.values_list("id", flat=True))
    for role, tiers in [("labeler", [[a], [b], [c], [d]]), ("admin", [[a], [b], [d], [c]])]:
        labeling.assignment_next(labeler=users[role], project=project)
        labeling.ranking_submit(labeler=users[role], item_id=item.pk, tiers=tiers)
    for role, expected in [("labeler", 403), ("researcher", 200), ("admin", 200)]:
        client = as_user(api_client, users[role])
        assert client.get(reverse("api_progress", args=[project.slug])).status_code == expected
        assert client.get(reverse("api_agreement", args=[project.slug])).status_code == expected
    client = as_user(api_client, users["admin"])
    progress = client.get(reverse("api_progress", args=[project.slug])).json()
    assert progress["items"]["complete"] == 1 and progress["rankings"] == 2
    agreement = client.get(reverse("api_agreement", args=[project.slug])).json()
    assert agreement["project"] == {"pairwise_agreement": round(5 / 6, 4), "kendall_tau": round(4 / 6, 4), "pairs_compared": 6, "items": 1}
    assert {entry["username"] for entry in agreement["labelers"]} == {"larry-labeler", "alice-admin"}


def test_researchers_cannot_label_and_anonymous_gets_401(api_client, users, project):
    make_item(project)
    assert api_client.get(reverse("api_next_item", args=[project.slug])).status_code == 401
    client = as_user(api_client, users["researcher"])
    assert client.get(reverse("api_next_item", args=[project.slug])).status_code == 403
