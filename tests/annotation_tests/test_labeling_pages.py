"""The labeling pages through the Django test client: roles, htmx swaps, refusals, model names never shown."""

import json

import pytest
from django.urls import reverse

from annotation import labeling
from annotation.models import ItemFlag, Ranking, RankingItem
from tests.factories import as_letters, make_item

pytestmark = pytest.mark.django_db


def ids_of(item):
    return sorted(item.candidates.values_list("id", flat=True))


@pytest.fixture
def item(project):
    return make_item(project)


def test_labeling_pages_check_the_role(client, users, project, item, admin_user, labeler):
    labeling.assignment_next(labeler=labeler, project=project)
    ranking = labeling.ranking_submit(labeler=labeler, item_id=item.pk, tiers=[ids_of(item)])
    pages = [
        (reverse("label", args=[project.slug]), {"labeler", "admin"}),
        (reverse("my_rankings", args=[project.slug]), {"labeler", "admin"}),
        (reverse("dashboard", args=[project.slug]), {"admin"}),
    ]
    for role in ["anonymous", "labeler", "researcher", "admin"]:
        client.logout()
        if role != "anonymous":
            client.force_login(users[role])
        for url, allowed in pages:
            status = client.get(url).status_code
            assert status == (302 if role == "anonymous" else 200 if role in allowed else 403), (role, url)
        posts = [
            reverse("label_rank", args=[project.slug, item.pk]),
            reverse("label_skip", args=[project.slug, item.pk]),
            reverse("label_flag", args=[project.slug, item.pk]),
        ]
        if role == "researcher":
            assert all(client.post(url).status_code == 403 for url in posts)
            assert client.get(reverse("ranking_revise", args=[project.slug, ranking.pk])).status_code == 403
    client.force_login(admin_user)
    assert client.get(reverse("ranking_revise", args=[project.slug, ranking.pk])).status_code == 404  # not theirs


def test_label_page_shows_letters_but_never_the_model(client, labeler, project, item):
    client.force_login(labeler)
    page = client.get(reverse("label", args=[project.slug])).content.decode()
    for letter in "ABCD":
        assert f'data-letter="{letter}"' in page
    assert "test-policy" not in page and "org/test-policy" not in page
    assert "Rank the <strong>best</strong> response first." in page
    assert "<kbd>Enter</kbd>" in page


def test_ranking_through_htmx_swaps_in_the_next_item(client, labeler, project, item):
    second = make_item(project)
    client.force_login(labeler)
    client.get(reverse("label", args=[project.slug]))
    a, b, c, d = ids_of(item)
    response = client.post(
        reverse("label_rank", args=[project.slug, item.pk]),
        {"tiers": json.dumps(as_letters(labeler, item, [[d], [c], [a, b]])), "rationale": "clear", "time_spent_ms": "1500"},
        headers={"HX-Request": "true"},
    )
    body = response.content.decode()
    assert response.status_code == 200 and "<html" not in body
    assert "Saved: " in body and f'data-item="{second.pk}"' in body
    ranking = Ranking.objects.get()
    assert [sorted(tier) for tier in ranking.tiers] == [[d], [c], [a, b]] and ranking.pairs.count() == 5


def test_a_malformed_ranking_is_refused_on_the_page(client, labeler, project, item):
    client.force_login(labeler)
    client.get(reverse("label", args=[project.slug]))
    a, b, c, _ = ids_of(item)
    response = client.post(
        reverse("label_rank", args=[project.slug, item.pk]), {"tiers": json.dumps(as_letters(labeler, item, [[a], [b, c]]))}, headers={"HX-Request": "true"}
    )
    assert response.status_code == 422
    assert "Every shown response must be placed exactly once" in response.content.decode()
    assert f'data-item="{item.pk}"' in response.content.decode()  # the same item, to fix
    assert not Ranking.objects.exists()


def test_ranking_an_item_not_leased_to_you_is_refused(client, labeler, project, item):
    client.force_login(labeler)
    response = client.post(reverse("label_rank", args=[project.slug, item.pk]), {"tiers": json.dumps([list("ABCD")])}, headers={"HX-Request": "true"})
    assert response.status_code == 422 and "not assigned to you" in response.content.decode()


def test_skip_and_flag_from_the_page(client, labeler, project, item):
    other = make_item(project)
    client.force_login(labeler)
    client.get(reverse("label", args=[project.slug]))
    skipped = client.post(reverse("label_skip", args=[project.slug, item.pk]), {"reason": "Not my area"}, headers={"HX-Request": "true"})
    assert "Skipped." in skipped.content.decode() and f'data-item="{other.pk}"' in skipped.content.decode()
    flagged = client.post(reverse("label_flag", args=[project.slug, other.pk]), {"reason": "broken", "note": "empty"}, headers={"HX-Request": "true"})
    assert "Flagged as broken responses" in flagged.content.decode()
    assert "Nothing left to rank" in flagged.content.decode()
    assert ItemFlag.objects.get().note == "empty"


def test_without_htmx_actions_redirect_back_to_the_label_page(client, labeler, project, item):
    client.force_login(labeler)
    client.get(reverse("label", args=[project.slug]))
    response = client.post(reverse("label_rank", args=[project.slug, item.pk]), {"tiers": json.dumps([list("ABCD")])})
    assert response.status_code == 302 and response["Location"] == reverse("label", args=[project.slug])


def test_my_rankings_lists_only_mine_and_revision_works(client, users, project):
    labeler = users["labeler"]
    mine, theirs = make_item(project), make_item(project)
    labeling.assignment_next(labeler=labeler, project=project)
    ranking = labeling.ranking_submit(labeler=labeler, item_id=mine.pk, tiers=[ids_of(mine)])
    labeling.assignment_next(labeler=users["admin"], project=project)
    labeling.ranking_submit(labeler=users["admin"], item_id=theirs.pk, tiers=[ids_of(theirs)])
    client.force_login(labeler)
    page = client.get(reverse("my_rankings", args=[project.slug])).content.decode()
    assert "A = B = C = D" in page and page.count("Revise") == 1
    a, b, c, d = ids_of(mine)
    response = client.post(reverse("ranking_revise", args=[project.slug, ranking.pk]), {"tiers": json.dumps(as_letters(labeler, mine, [[a], [b], [c, d]])), "rationale": "better"})
    assert response.status_code == 302
    ranking.refresh_from_db()
    assert [sorted(tier) for tier in ranking.tiers] == [[a], [b], [c, d]] and ranking.pairs.count() == 5


def test_dashboard_shows_progress_agreement_and_flags(client, users, labeler, admin_user):
    from tests.factories import ProjectFactory

    project = ProjectFactory(rankings_per_item=2)
    item = make_item(project)
    a, b, c, d = ids_of(item)
    for user, tiers in [(labeler, [[a], [b], [c], [d]]), (admin_user, [[b], [a], [c], [d]])]:
        labeling.assignment_next(labeler=user, project=project)
        labeling.ranking_submit(labeler=user, item_id=item.pk, tiers=tiers)
    flagged = make_item(project)
    labeling.assignment_next(labeler=labeler, project=project)
    flag = labeling.item_flag(labeler=labeler, item_id=flagged.pk, reason="unsafe", note="bad")
    client.force_login(admin_user)
    page = client.get(reverse("dashboard", args=[project.slug])).content.decode()
    assert "83%" in page  # 5 of 6 pairs agree
    assert "larry-labeler" in page and "Unsafe content" in page
    response = client.post(reverse("flag_dismiss", args=[project.slug, flag.pk]), headers={"HX-Request": "true"})
    assert "No open flags" in response.content.decode()
    assert RankingItem.objects.get(pk=flagged.pk).status == "active"


def test_revising_to_the_same_ranking_writes_nothing_and_says_unchanged(client, labeler, project, item):
    labeling.assignment_next(labeler=labeler, project=project)
    a, b, c, d = ids_of(item)
    ranking = labeling.ranking_submit(labeler=labeler, item_id=item.pk, tiers=[[a], [b], [c, d]], rationale="clear")
    pair_ids = set(ranking.pairs.values_list("id", flat=True))
    same = labeling.ranking_revise(labeler=labeler, ranking_id=ranking.pk, tiers=[[a], [b], [d, c]], rationale=" clear ")
    assert not same.changed  # a tie in another order, the rationale with spaces around it: the same ranking
    client.force_login(labeler)
    url = reverse("ranking_revise", args=[project.slug, ranking.pk])
    page = client.get(url).content.decode()
    assert "<kbd>Delete</kbd> clear" in page and "<kbd>Backspace</kbd>" in page  # the label page's keyboard help
    response = client.post(url, {"tiers": json.dumps(as_letters(labeler, item, [[a], [b], [d, c]])), "rationale": "clear"}, follow=True)
    assert "Ranking unchanged" in response.content.decode() and "Ranking revised" not in response.content.decode()
    unchanged = Ranking.objects.get(pk=ranking.pk)
    assert unchanged.updated_at == ranking.updated_at and set(unchanged.pairs.values_list("id", flat=True)) == pair_ids
    response = client.post(url, {"tiers": json.dumps(as_letters(labeler, item, [[a], [b], [d, c]])), "rationale": "clearer"}, follow=True)
    assert "Ranking revised" in response.content.decode()
    assert Ranking.objects.get(pk=ranking.pk).rationale == "clearer"
    changed = labeling.ranking_revise(labeler=labeler, ranking_id=ranking.pk, tiers=[[b], [a], [c, d]])
    assert changed.changed and changed.ranking.rationale == "clearer" and changed.ranking.pairs.count() == 5


def test_empty_queue_says_a_generation_job_is_still_producing_items_and_polls(client, labeler, project):
    from generation.models import GenerationJob

    client.force_login(labeler)
    url = reverse("label", args=[project.slug])
    page = client.get(url).content.decode()
    assert "Nothing left to rank" in page and "Check again" in page and "hx-trigger" not in page

    done, total = GenerationJob.progress_fields
    GenerationJob.objects.create(project=project, status="succeeded", **{done: 5, total: 5})
    queued = GenerationJob.objects.create(project=project, status="queued", **{done: 0, total: 5})
    page = client.get(url).content.decode()
    assert f"Generation job {queued.pk} is queued to produce candidates for this project; new items will appear here automatically." in page
    running = GenerationJob.objects.create(project=project, status="running", **{done: 2, total: 5})
    page = client.get(url).content.decode()
    assert f"Generation job {running.pk} is still producing candidates for this project (40%); new items will appear here automatically." in page
    assert f'hx-get="{url}" hx-trigger="every 5s"' in page
    assert "test-policy" not in page and "Check again" not in page

    polled = client.get(url, headers={"HX-Request": "true"})
    assert polled.status_code == 200 and "<html" not in polled.content.decode() and "every 5s" in polled.content.decode()
    item = make_item(project)
    polled = client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert f'data-item="{item.pk}"' in polled and "hx-trigger" not in polled and "<html" not in polled
