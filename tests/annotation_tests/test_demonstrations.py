"""Demonstrations made by labelers (annotation.demonstrating): writing, editing the best response of a ranking (its
candidate and its pair "edited > original"), every refusal, review, the reads behind the pages, the pages themselves
and the API's permissions (labelers see only their own, never a model name or a candidate id)."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token

from annotation import demonstrating, labeling
from annotation.demonstrating import MAX_DEMONSTRATION_CHARS
from annotation.labeling import InvalidInput, LabelingError, NotAssigned
from annotation.models import Demonstration, PreferencePair, Project, Prompt, Ranking, RankingItem
from annotation.pairs import PairFilter, selected_pairs
from annotation.roles import LABELER
from generation.models import Candidate
from tests.factories import DemonstrationFactory, ProjectFactory, PromptFactory, make_item, user_with_role

pytestmark = pytest.mark.django_db

MODEL_NAME = "test-policy"  # make_item's model version: never in a labeler's response


def edit_project(mode=Project.DemonstrationMode.EDIT_OPTIONAL, **fields):
    return ProjectFactory(demonstration_mode=mode, **fields)


def ranked(labeler, project, tiers_by_index=None, texts=None):
    """An item of ``project`` ranked by ``labeler``: by default the candidates in id order, best first."""
    item = make_item(project, texts=texts)
    assignment = labeling.assignment_next(labeler=labeler, project=project)
    assert assignment.item_id == item.pk
    ids = list(item.candidates.order_by("id").values_list("id", flat=True))
    tiers = [[ids[i] for i in tier] for tier in (tiers_by_index or [[i] for i in range(len(ids))])]
    return labeling.ranking_submit(labeler=labeler, item_id=item.pk, tiers=tiers)


@pytest.fixture
def other_labeler(db):
    return user_with_role(LABELER, "olga-labeler")


# --- writing -----------------------------------------------------------------------------------------------------------


def test_a_labeler_writes_one_answer_per_prompt_pending_review(labeler, other_labeler):
    project = ProjectFactory(demonstration_mode="write")
    prompt = PromptFactory(project=project)
    demonstration = demonstrating.demonstration_write(labeler=labeler, prompt=prompt, text="  Water boils at 100 °C.\r\n ", time_spent_ms=4200)
    assert (demonstration.source, demonstration.status, demonstration.text, demonstration.time_spent_ms) == ("written", "pending", "Water boils at 100 °C.", 4200)
    assert demonstration.project == project and demonstration.labeler == labeler and demonstration.edited_from is None
    with pytest.raises(LabelingError, match="already answered"):
        demonstrating.demonstration_write(labeler=labeler, prompt=prompt, text="Another answer")
    # Another labeler answers the same prompt.
    demonstrating.demonstration_write(labeler=other_labeler, prompt=prompt.pk, text="At sea level, 100 degrees Celsius.")
    assert Demonstration.objects.filter(prompt=prompt).count() == 2


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("", InvalidInput, "Write an answer first"),
        ("   \n\t ", InvalidInput, "Write an answer first"),
        ("x" * (MAX_DEMONSTRATION_CHARS + 1), InvalidInput, "longer than 20000 characters"),
        ("bad \ud800 text", InvalidInput, "unpaired surrogate"),
        ("nul \x00 inside", InvalidInput, "NUL"),
        (None, InvalidInput, "as text"),
    ],
)
def test_writing_refuses_empty_too_long_and_unstorable_text(labeler, text, error, message):
    prompt = PromptFactory(project=ProjectFactory(demonstration_mode="write"))
    with pytest.raises(error, match=message):
        demonstrating.demonstration_write(labeler=labeler, prompt=prompt, text=text)
    assert not Demonstration.objects.exists()


def test_the_longest_answer_is_kept(labeler):
    prompt = PromptFactory(project=ProjectFactory(demonstration_mode="write"))
    assert len(demonstrating.demonstration_write(labeler=labeler, prompt=prompt, text="y" * MAX_DEMONSTRATION_CHARS).text) == MAX_DEMONSTRATION_CHARS


@pytest.mark.parametrize("mode", ["off", "edit_optional", "edit_required"])
def test_writing_is_refused_outside_write_mode(labeler, mode):
    prompt = PromptFactory(project=ProjectFactory(demonstration_mode=mode))
    with pytest.raises(LabelingError, match="does not ask labelers to write"):
        demonstrating.demonstration_write(labeler=labeler, prompt=prompt, text="An answer.")
    assert demonstrating.prompt_to_write(labeler=labeler, project=prompt.project) is None


def test_held_out_prompts_get_no_written_answers(labeler):
    prompt = PromptFactory(project=ProjectFactory(demonstration_mode="write"), split=Prompt.Split.HELDOUT)
    with pytest.raises(LabelingError, match="held out"):
        demonstrating.demonstration_write(labeler=labeler, prompt=prompt, text="An answer.")


def test_the_next_prompt_to_write_is_an_unwritten_train_prompt_with_the_fewest_demonstrations(labeler, other_labeler):
    project = ProjectFactory(demonstration_mode="write")
    first, second, third = (PromptFactory(project=project) for _ in range(3))
    PromptFactory(project=project, split=Prompt.Split.HELDOUT)
    demonstrating.demonstration_write(labeler=other_labeler, prompt=first, text="Answer one.")
    DemonstrationFactory(prompt=second, status=Demonstration.Status.REJECTED)  # rejected ones do not count
    assert demonstrating.prompt_to_write(labeler=labeler, project=project) == second
    assert demonstrating.prompt_to_write(labeler=labeler, project=project, exclude=[second.pk]) == third
    demonstrating.demonstration_write(labeler=labeler, prompt=second, text="Answer two.")
    demonstrating.demonstration_write(labeler=labeler, prompt=third, text="Answer three.")
    assert demonstrating.prompt_to_write(labeler=labeler, project=project) == first
    assert demonstrating.write_progress(labeler, project) == {"written": 2, "open": 1}
    demonstrating.demonstration_write(labeler=labeler, prompt=first, text="Answer one, mine.")
    assert demonstrating.prompt_to_write(labeler=labeler, project=project) is None


# --- editing ------------------------------------------------------------------------------------------------------------


def test_an_edit_makes_a_demonstration_a_candidate_and_the_pair_edited_over_original(labeler):
    project = edit_project()
    ranking = ranked(labeler, project, tiers_by_index=[[2], [0], [1, 3]])
    Ranking.objects.filter(pk=ranking.pk).update(created_at=timezone.now() - timedelta(minutes=1))
    original = Candidate.objects.get(pk=ranking.tiers[0][0])
    demonstration = demonstrating.demonstration_edit(labeler=labeler, ranking=ranking, text=original.text + " And kindly.", time_spent_ms=3000)
    assert (demonstration.source, demonstration.status, demonstration.edited_from, demonstration.ranking) == ("edited", "pending", original, ranking)
    assert demonstration.time_spent_ms == 3000 and demonstration.prompt == ranking.item.prompt and demonstration.labeler == labeler
    edited = Candidate.objects.get(text=original.text + " And kindly.")
    assert (edited.source, edited.model_version, edited.prompt) == ("edit", None, ranking.item.prompt)
    pair = PreferencePair.objects.get(source="edit")
    assert (pair.chosen, pair.rejected, pair.demonstration, pair.labeler, pair.margin) == (edited, original, demonstration, labeler, 1.0)
    assert (pair.project, pair.prompt, pair.ranking) == (project, ranking.item.prompt, None)
    assert ranking.pairs.count() == 5  # the ranking's own pairs are untouched


def test_an_edit_reuses_the_prompts_candidate_with_the_same_text(labeler):
    project = edit_project()
    ranking = ranked(labeler, project, texts=["First answer.", "Second answer.", "Third.", "Fourth."])
    second = Candidate.objects.get(text="Second answer.")
    demonstrating.demonstration_edit(labeler=labeler, ranking=ranking, text="Second answer.")
    pair = PreferencePair.objects.get(source="edit")
    assert pair.chosen == second and pair.rejected.text == "First answer."
    assert Candidate.objects.filter(prompt=ranking.item.prompt).count() == 4


def test_an_edit_of_another_response_of_a_tied_top_tier(labeler):
    ranking = ranked(labeler, edit_project(), tiers_by_index=[[1, 3], [0, 2]])
    tied = Candidate.objects.get(pk=ranking.tiers[0][1])
    demonstration = demonstrating.demonstration_edit(labeler=labeler, ranking=ranking.pk, text="Better than both.", candidate=tied)
    assert demonstration.edited_from == tied


def test_the_edit_time_is_capped_by_the_rankings_age(labeler):
    ranking = ranked(labeler, edit_project())
    Ranking.objects.filter(pk=ranking.pk).update(created_at=timezone.now() - timedelta(seconds=10))
    demonstration = demonstrating.demonstration_edit(labeler=labeler, ranking=ranking.pk, text="A new answer.", time_spent_ms=10**9)
    assert 10_000 <= demonstration.time_spent_ms < 60_000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "Write an answer first"),
        ("  ", "Write an answer first"),
        ("x" * (MAX_DEMONSTRATION_CHARS + 1), "longer than"),
        ("nul \x00", "NUL"),
        ("SAME", "same as the response"),
        ("  SAME \n", "same as the response"),
    ],
)
def test_an_empty_unchanged_or_too_long_edit_is_refused(labeler, text, message):
    ranking = ranked(labeler, edit_project())
    original = Candidate.objects.get(pk=ranking.tiers[0][0])
    with pytest.raises(InvalidInput, match=message):
        demonstrating.demonstration_edit(labeler=labeler, ranking=ranking, text=text.replace("SAME", original.text))
    assert not Demonstration.objects.exists() and not PreferencePair.objects.filter(source="edit").exists()


def test_an_edit_with_windows_line_ends_of_the_same_text_is_unchanged(labeler):
    ranking = ranked(labeler, edit_project(), texts=["Line one.\nLine two.", "b", "c", "d"])
    with pytest.raises(InvalidInput, match="same as the response"):
        demonstrating.demonstration_edit(labeler=labeler, ranking=ranking, text="Line one.\r\nLine two.\r\n")


def test_an_edit_of_someone_elses_ranking_is_refused(labeler, other_labeler):
    ranking = ranked(labeler, edit_project())
    with pytest.raises(NotAssigned, match="No such ranking of yours"):
        demonstrating.demonstration_edit(labeler=other_labeler, ranking=ranking, text="Mine now.")
    with pytest.raises(NotAssigned):
        demonstrating.demonstration_edit(labeler=labeler, ranking=ranking.pk + 1000, text="No ranking.")


def test_an_edit_of_a_response_outside_the_top_tier_is_refused(labeler):
    ranking = ranked(labeler, edit_project(), tiers_by_index=[[0], [1], [2, 3]])
    with pytest.raises(InvalidInput, match="ranked best"):
        demonstrating.demonstration_edit(labeler=labeler, ranking=ranking, text="Better.", candidate=ranking.tiers[1][0])


@pytest.mark.parametrize("mode", ["off", "write"])
def test_an_edit_is_refused_where_the_project_asks_for_none(labeler, mode):
    ranking = ranked(labeler, edit_project(mode))
    with pytest.raises(LabelingError, match="does not ask labelers to edit"):
        demonstrating.demonstration_edit(labeler=labeler, ranking=ranking, text="Better.")
    assert not demonstrating.can_edit(ranking)


def test_a_second_edit_of_the_same_ranking_is_refused(labeler):
    ranking = ranked(labeler, edit_project(), tiers_by_index=[[0, 1], [2], [3]])
    demonstrating.demonstration_edit(labeler=labeler, ranking=ranking, text="First edit.")
    with pytest.raises(LabelingError, match="already edited"):
        demonstrating.demonstration_edit(labeler=labeler, ranking=ranking, text="Second edit.", candidate=ranking.tiers[0][1])
    assert Demonstration.objects.count() == 1 and PreferencePair.objects.filter(source="edit").count() == 1
    assert not demonstrating.can_edit(ranking)


def test_the_same_response_is_edited_once_per_labeler_even_from_another_item(labeler):
    project = edit_project(responses_per_item=2)
    first = ranked(labeler, project)
    original = Candidate.objects.get(pk=first.tiers[0][0])
    demonstrating.demonstration_edit(labeler=labeler, ranking=first, text="Edited once.")
    other = Candidate.objects.create(prompt=original.prompt, text="Other", text_hash="other-hash", source="import")
    item = labeling.ranking_item_create(prompt=original.prompt, candidates=[original, other])
    labeling.assignment_next(labeler=labeler, project=project)
    second = labeling.ranking_submit(labeler=labeler, item_id=item.pk, tiers=[[original.pk], [other.pk]])
    with pytest.raises(LabelingError, match="already edited this response"):
        demonstrating.demonstration_edit(labeler=labeler, ranking=second, text="Edited twice.")


def test_blind_comparisons_are_not_edited(labeler):
    ranking = ranked(labeler, edit_project())
    RankingItem.objects.filter(pk=ranking.item_id).update(origin=RankingItem.Origin.EVALUATION)
    ranking.refresh_from_db()
    with pytest.raises(LabelingError, match="blind comparison"):
        demonstrating.demonstration_edit(labeler=labeler, ranking=ranking, text="Better.")


def test_revising_the_ranking_keeps_the_edit_pair(labeler):
    ranking = ranked(labeler, edit_project())
    demonstrating.demonstration_edit(labeler=labeler, ranking=ranking, text="Edited.")
    labeling.ranking_revise(labeler=labeler, ranking_id=ranking.pk, tiers=list(reversed(ranking.tiers)))
    assert PreferencePair.objects.filter(source="edit").count() == 1 and ranking.pairs.count() == 6


def test_skipping_an_edit_is_allowed_only_where_edits_are_optional(labeler, other_labeler):
    optional = ranked(labeler, edit_project())
    assert demonstrating.demonstration_skip_edit(labeler=labeler, ranking=optional) == optional
    with pytest.raises(NotAssigned):
        demonstrating.demonstration_skip_edit(labeler=other_labeler, ranking=optional.pk)
    required = ranked(labeler, edit_project(Project.DemonstrationMode.EDIT_REQUIRED))
    with pytest.raises(LabelingError, match="asks for an edit"):
        demonstrating.demonstration_skip_edit(labeler=labeler, ranking=required)
    assert not Demonstration.objects.exists()


def test_edit_required_calls_back_the_latest_unedited_ranking(labeler):
    project = edit_project(Project.DemonstrationMode.EDIT_REQUIRED)
    assert demonstrating.ranking_awaiting_edit(labeler=labeler, project=project) is None
    ranking = ranked(labeler, project)
    assert demonstrating.ranking_awaiting_edit(labeler=labeler, project=project) == ranking
    demonstrating.demonstration_edit(labeler=labeler, ranking=ranking, text="Edited.")
    assert demonstrating.ranking_awaiting_edit(labeler=labeler, project=project) is None
    project.demonstration_mode = Project.DemonstrationMode.EDIT_OPTIONAL
    project.save()
    ranked(labeler, project)
    assert demonstrating.ranking_awaiting_edit(labeler=labeler, project=project) is None


def test_the_editor_names_responses_by_the_labelers_letters(labeler):
    ranking = ranked(labeler, edit_project(), tiers_by_index=[[3, 1], [0], [2]])
    letters = demonstrating.response_letters(ranking)
    editor = demonstrating.editor_for_labeler(ranking)
    assert editor.letter == letters[ranking.tiers[0][0]] and editor.original == Candidate.objects.get(pk=ranking.tiers[0][0]).text
    assert editor.top_letters == sorted(letters[c] for c in ranking.tiers[0]) and not editor.required
    other = letters[ranking.tiers[0][1]]
    assert demonstrating.editor_for_labeler(ranking, other).letter == other
    worst = letters[ranking.tiers[2][0]]
    with pytest.raises(InvalidInput):
        demonstrating.editor_for_labeler(ranking, worst)
    assert demonstrating.candidate_for_letter(ranking, worst) == ranking.tiers[2][0]
    with pytest.raises(InvalidInput):
        demonstrating.candidate_for_letter(ranking, "Z")


# --- review and the pair filter -------------------------------------------------------------------------------------


def test_admins_accept_and_reject_with_a_reason(labeler, admin_user, researcher):
    demonstration = demonstrating.demonstration_write(
        labeler=labeler, prompt=PromptFactory(project=ProjectFactory(demonstration_mode="write")), text="An answer."
    )
    with pytest.raises(InvalidInput, match="Say why"):
        demonstrating.demonstration_review(demonstration=demonstration, reviewer=admin_user, decision="reject", reason="  ")
    with pytest.raises(InvalidInput, match="accept or reject"):
        demonstrating.demonstration_review(demonstration=demonstration, reviewer=admin_user, decision="maybe")
    with pytest.raises(InvalidInput, match="longer than 500"):
        demonstrating.demonstration_review(demonstration=demonstration, reviewer=admin_user, decision="reject", reason="r" * 501)
    for user in (labeler, researcher):
        with pytest.raises(demonstrating.NotAllowed):
            demonstrating.demonstration_review(demonstration=demonstration, reviewer=user, decision="accept")
    demonstration.refresh_from_db()
    assert demonstration.status == "pending" and demonstration.reviewed_by is None
    rejected = demonstrating.demonstration_review(demonstration=demonstration.pk, reviewer=admin_user, decision="reject", reason="Too terse.")
    assert (rejected.status, rejected.review_reason, rejected.reviewed_by) == ("rejected", "Too terse.", admin_user)
    assert rejected.reviewed_at is not None
    accepted = demonstrating.demonstration_review(demonstration=demonstration, reviewer=admin_user, decision="accept")
    assert (accepted.status, accepted.review_reason) == ("accepted", "")
    with pytest.raises(NotAssigned):
        demonstrating.demonstration_review(demonstration=10**9, reviewer=admin_user, decision="accept")


def test_the_pairs_of_rejected_edits_leave_the_pair_filters_selection(labeler, admin_user):
    project = edit_project()
    kept, dropped = ranked(labeler, project), ranked(labeler, project)
    demonstrating.demonstration_edit(labeler=labeler, ranking=kept, text="Kept edit.")
    rejected = demonstrating.demonstration_edit(labeler=labeler, ranking=dropped, text="Rejected edit.")
    demonstrating.demonstration_review(demonstration=rejected, reviewer=admin_user, decision="reject", reason="Made up facts.")
    edit_pairs = selected_pairs([project], PairFilter()).filter(source="edit")
    assert list(edit_pairs.values_list("demonstration__text", flat=True)) == ["Kept edit."]
    assert PreferencePair.objects.filter(source="edit").count() == 2  # kept in the database
    assert selected_pairs([project], PairFilter()).filter(source="human").count() == 12
    assert not selected_pairs([project], PairFilter(sources=("human", "import"))).filter(source="edit").exists()
    RankingItem.objects.filter(pk=kept.item_id).update(status=RankingItem.Status.RETIRED)
    assert not selected_pairs([project], PairFilter()).filter(source="edit").exists()
    assert selected_pairs([project], PairFilter(exclude_flagged=False)).filter(source="edit").count() == 1


def test_the_review_queue_puts_pending_first_and_filters(labeler, other_labeler, admin_user):
    project = ProjectFactory(demonstration_mode="write")
    prompts = [PromptFactory(project=project) for _ in range(3)]
    first = demonstrating.demonstration_write(labeler=labeler, prompt=prompts[0], text="One.")
    second = demonstrating.demonstration_write(labeler=other_labeler, prompt=prompts[1], text="Two.")
    third = demonstrating.demonstration_write(labeler=labeler, prompt=prompts[2], text="Three.")
    imported = DemonstrationFactory(prompt=prompts[0])
    demonstrating.demonstration_review(demonstration=first, reviewer=admin_user, decision="accept")
    assert list(demonstrating.review_queue(project)) == [second, third, imported, first]
    assert list(demonstrating.review_queue(project, status="pending")) == [second, third]
    assert list(demonstrating.review_queue(project, source="import")) == [imported]
    assert list(demonstrating.review_queue(project, labeler=labeler.pk)) == [third, first]
    assert demonstrating.demonstration_counts(project) == {"pending": 2, "accepted": 2, "rejected": 0}
    assert list(demonstrating.demonstrations_of(labeler, project)) == [third, first]


# --- the project setting ---------------------------------------------------------------------------------------------


def test_the_project_form_and_api_set_the_demonstration_mode(client, api_client, admin_user):
    client.force_login(admin_user)
    page = client.get(reverse("project_create"))
    assert b'name="demonstration_mode"' in page.content
    response = client.post(
        reverse("project_create"),
        {"name": "Writers", "slug": "writers", "responses_per_item": 4, "rankings_per_item": 1, "demonstration_mode": "write"},
    )
    assert response.status_code == 302 and Project.objects.get(slug="writers").demonstration_mode == "write"
    api_client.force_authenticate(admin_user)
    created = api_client.post("/api/projects/", {"name": "Editors", "slug": "editors", "demonstration_mode": "edit_required"}, format="json")
    assert created.status_code == 201 and created.json()["demonstration_mode"] == "edit_required"
    assert api_client.get("/api/projects/writers/").json()["demonstration_mode"] == "write"
    bad = api_client.post("/api/projects/", {"name": "Bad", "slug": "bad", "demonstration_mode": "sometimes"}, format="json")
    assert bad.status_code == 400 and "demonstration_mode" in bad.json()


# --- the API -----------------------------------------------------------------------------------------------------------


def as_user(api_client, user):
    token, _ = Token.objects.get_or_create(user=user)
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return api_client


def test_labelers_write_over_the_api_and_list_only_their_own(api_client, labeler, other_labeler, researcher, admin_user):
    project = ProjectFactory(slug="writing", demonstration_mode="write")
    first, second = PromptFactory(project=project), PromptFactory(project=project)
    client = as_user(api_client, labeler)
    url = reverse("api_demonstrations", args=[project.slug])
    shown = client.get(reverse("api_demonstration_next", args=[project.slug])).json()
    assert shown == {"prompt": first.pk, "messages": first.messages}
    skipped = client.get(reverse("api_demonstration_next", args=[project.slug]), {"exclude": f"{first.pk}"}).json()
    assert skipped["prompt"] == second.pk
    assert client.get(reverse("api_demonstration_next", args=[project.slug]), {"exclude": "x"}).status_code == 400
    created = client.post(url, {"prompt": first.pk, "text": "My answer.", "time_spent_ms": 1200}, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["source"] == "written" and created.json()["status"] == "pending" and created.json()["prompt"] == first.pk
    assert client.post(url, {"prompt": first.pk, "text": "Again."}, format="json").status_code == 409
    assert client.post(url, {"prompt": first.pk, "text": ""}, format="json").status_code == 400
    assert client.post(url, {"prompt": 10**12, "text": "Where?"}, format="json").status_code == 404
    assert client.post(url, {"prompt": second.pk, "text": "x" * (MAX_DEMONSTRATION_CHARS + 1)}, format="json").status_code == 400
    as_user(api_client, other_labeler).post(url, {"prompt": second.pk, "text": "Olga's answer."}, format="json")

    mine = as_user(api_client, labeler).get(url).json()
    assert mine["count"] == 1 and mine["results"][0]["text"] == "My answer."
    assert "labeler" not in mine["results"][0] and "metadata" not in mine["results"][0]
    theirs = Demonstration.objects.get(labeler=other_labeler)
    assert api_client.get(reverse("api_demonstration", args=[theirs.pk])).status_code == 404
    assert api_client.get(url, {"labeler": other_labeler.pk}).json()["count"] == 1  # still only their own

    everyone = as_user(api_client, researcher).get(url).json()
    assert everyone["count"] == 2 and {row["labeler"] for row in everyone["results"]} == {labeler.pk, other_labeler.pk}
    assert api_client.get(url, {"labeler": other_labeler.pk}).json()["count"] == 1
    assert api_client.get(url, {"status": "accepted"}).json()["count"] == 0
    assert api_client.get(url, {"status": "nope"}).status_code == 400
    assert api_client.post(url, {"prompt": second.pk, "text": "A researcher's answer."}, format="json").status_code == 403
    assert as_user(api_client, admin_user).get(url).json()["count"] == 2


def test_only_admins_review_over_the_api(api_client, labeler, researcher, admin_user):
    demonstration = demonstrating.demonstration_write(
        labeler=labeler, prompt=PromptFactory(project=ProjectFactory(demonstration_mode="write")), text="An answer."
    )
    url = reverse("api_demonstration_review", args=[demonstration.pk])
    for user in (labeler, researcher):
        assert as_user(api_client, user).post(url, {"decision": "accept"}, format="json").status_code == 403
    client = as_user(api_client, admin_user)
    assert client.post(url, {"decision": "reject"}, format="json").status_code == 400
    assert client.post(url, {"decision": "perhaps"}, format="json").status_code == 400
    assert client.post(reverse("api_demonstration_review", args=[10**9]), {"decision": "accept"}, format="json").status_code == 404
    response = client.post(url, {"decision": "reject", "reason": "Off topic."}, format="json")
    assert response.status_code == 200 and response.json()["status"] == "rejected" and response.json()["reviewed_by"] == admin_user.pk
    own = as_user(api_client, labeler).get(reverse("api_demonstration", args=[demonstration.pk])).json()
    assert (own["status"], own["review_reason"]) == ("rejected", "Off topic.")


def test_edits_over_the_api_name_responses_by_letter_and_never_a_model(api_client, labeler, other_labeler, researcher):
    project = edit_project(Project.DemonstrationMode.EDIT_REQUIRED, slug="editing")
    make_item(project)
    make_item(project)
    client = as_user(api_client, labeler)
    shown = client.get(reverse("api_next_item", args=[project.slug])).json()
    ranking = client.post(reverse("api_rank", args=[shown["item"]]), {"tiers": [["C"], ["A", "B"], ["D"]]}, format="json").json()
    edit_url = reverse("api_ranking_edit", args=[ranking["id"]])

    blocked = client.get(reverse("api_next_item", args=[project.slug]))
    assert blocked.status_code == 409 and f"/api/rankings/{ranking['id']}/edit/" in blocked.json()["detail"]
    editor = client.get(edit_url)
    text_c = next(r["text"] for r in shown["responses"] if r["key"] == "C")
    assert editor.status_code == 200 and editor.json()["response"] == "C" and editor.json()["text"] == text_c
    assert editor.json()["best"] == ["C"] and editor.json()["required"] is True
    assert client.post(edit_url, {"text": text_c}, format="json").status_code == 400
    assert client.post(edit_url, {"text": "Better.", "response": "A"}, format="json").status_code == 400
    assert client.post(edit_url, {"text": "Better.", "response": "cc"}, format="json").status_code == 400
    assert as_user(api_client, other_labeler).post(edit_url, {"text": "Better."}, format="json").status_code == 404
    client = as_user(api_client, labeler)
    done = client.post(edit_url, {"text": text_c + " Better.", "time_spent_ms": 500}, format="json")
    assert done.status_code == 201, done.json()
    body = done.json()
    assert body["source"] == "edited" and body["edited_response"] == "C" and body["ranking"] == ranking["id"]
    assert PreferencePair.objects.get(pk=body["pair"]).source == "edit"
    assert "edited_from" not in body
    assert client.post(edit_url, {"text": text_c + " Again."}, format="json").status_code == 409
    assert client.get(edit_url).status_code == 409
    assert client.get(reverse("api_next_item", args=[project.slug])).status_code == 200

    listed = client.get(reverse("api_demonstrations", args=[project.slug]))
    for response in (listed, done, editor, client.get(reverse("api_demonstration", args=[body["id"]]))):
        assert MODEL_NAME not in response.content.decode()
    assert listed.json()["results"][0]["edited_response"] == "C"
    full = as_user(api_client, researcher).get(reverse("api_demonstrations", args=[project.slug])).json()["results"][0]
    demonstration = Demonstration.objects.get(pk=body["id"])
    assert (full["edited_from"], full["ranking"], full["pair"], full["labeler"]) == (demonstration.edited_from_id, ranking["id"], body["pair"], labeler.pk)


# --- the pages ---------------------------------------------------------------------------------------------------------


def test_the_write_page_shows_a_prompt_saves_an_answer_and_skips(client, labeler):
    project = ProjectFactory(slug="write-page", demonstration_mode="write")
    first, second = PromptFactory(project=project), PromptFactory(project=project)
    client.force_login(labeler)
    page = client.get(reverse("write", args=[project.slug]))
    assert page.status_code == 200 and first.messages[0]["content"].encode() in page.content
    assert b"<kbd>S</kbd> skip" in page.content
    skipped = client.post(reverse("write_skip", args=[project.slug, first.pk]), HTTP_HX_REQUEST="true")
    assert second.messages[0]["content"].encode() in skipped.content
    refused = client.post(reverse("write_submit", args=[project.slug, second.pk]), {"text": " "}, HTTP_HX_REQUEST="true")
    assert refused.status_code == 422 and b"Write an answer first" in refused.content
    saved = client.post(reverse("write_submit", args=[project.slug, second.pk]), {"text": "Answer.", "time_spent_ms": "900"}, HTTP_HX_REQUEST="true")
    assert b"Answer saved" in saved.content and b"Nothing left to answer" in saved.content and b"1 skipped" in saved.content
    assert Demonstration.objects.get().time_spent_ms == 900
    again = client.get(reverse("write", args=[project.slug]) + "?again=1", follow=True)
    assert first.messages[0]["content"].encode() in again.content


def test_the_write_page_of_a_project_that_asks_for_edits_says_so(client, labeler):
    project = edit_project(slug="no-writing")
    client.force_login(labeler)
    assert b"does not ask for written answers" in client.get(reverse("write", args=[project.slug])).content


def test_the_label_page_shows_the_editor_after_a_ranking_and_the_next_item_after_the_edit(client, labeler):
    project = edit_project(slug="edit-page")
    first, second = make_item(project), make_item(project)
    client.force_login(labeler)
    client.get(reverse("label", args=[project.slug]))
    ranked_page = client.post(reverse("label_rank", args=[project.slug, first.pk]), {"tiers": '[["B"], ["A"], ["C"], ["D"]]'}, HTTP_HX_REQUEST="true")
    html = ranked_page.content.decode()
    ranking = Ranking.objects.get()
    assert 'class="editor"' in html and "Saved: B &gt; A &gt; C &gt; D" in html and "Skip edit" in html
    original = Candidate.objects.get(pk=ranking.tiers[0][0])
    assert original.text in html and MODEL_NAME not in html and f"data-item=\"{second.pk}\"" not in html
    assert not ranking.item.assignments.exclude(pk=ranking.assignment_id).exists()  # no new lease while editing
    unchanged = client.post(reverse("label_edit", args=[project.slug, ranking.pk]), {"text": original.text, "response": "B"}, HTTP_HX_REQUEST="true")
    assert unchanged.status_code == 422 and b"same as the response" in unchanged.content and b'class="editor"' in unchanged.content
    edited = client.post(reverse("label_edit", args=[project.slug, ranking.pk]), {"text": "Much better.", "response": "B"}, HTTP_HX_REQUEST="true")
    assert b"Edit saved" in edited.content and f'data-item="{second.pk}"'.encode() in edited.content
    assert Demonstration.objects.get().edited_from == original
    twice = client.post(reverse("label_edit", args=[project.slug, ranking.pk]), {"text": "Even better."}, HTTP_HX_REQUEST="true")
    assert twice.status_code == 422 and b"already edited" in twice.content and b'class="editor"' not in twice.content


def test_skipping_the_optional_editor_and_the_required_one_coming_back(client, labeler):
    optional = edit_project(slug="optional")
    item = make_item(optional)
    make_item(optional)
    client.force_login(labeler)
    client.get(reverse("label", args=[optional.slug]))
    client.post(reverse("label_rank", args=[optional.slug, item.pk]), {"tiers": '[["A"], ["B"], ["C"], ["D"]]'}, HTTP_HX_REQUEST="true")
    skipped = client.post(reverse("label_edit_skip", args=[optional.slug, Ranking.objects.get().pk]), HTTP_HX_REQUEST="true")
    assert b"Edit skipped" in skipped.content and b'class="ranker"' in skipped.content
    # A plain form post (no JavaScript) is redirected to the editor.
    required = edit_project(Project.DemonstrationMode.EDIT_REQUIRED, slug="required")
    required_item = make_item(required)
    make_item(required)
    client.get(reverse("label", args=[required.slug]))
    posted = client.post(reverse("label_rank", args=[required.slug, required_item.pk]), {"tiers": '[["A"], ["B"], ["C"], ["D"]]'})
    ranking = Ranking.objects.get(item=required_item)
    assert posted.status_code == 302 and posted.url.endswith(f"?edit={ranking.pk}")
    again = client.get(reverse("label", args=[required.slug]))
    assert b'class="editor"' in again.content and b"Skip edit" not in again.content
    refused = client.post(reverse("label_edit_skip", args=[required.slug, ranking.pk]), HTTP_HX_REQUEST="true")
    assert refused.status_code == 422 and b"asks for an edit" in refused.content and b'class="editor"' in refused.content


def test_my_demonstrations_shows_status_and_reason_without_model_names(client, labeler, other_labeler, admin_user):
    project = edit_project(slug="mine")
    ranking = ranked(labeler, project)
    demonstration = demonstrating.demonstration_edit(labeler=labeler, ranking=ranking, text="My better answer.")
    demonstrating.demonstration_review(demonstration=demonstration, reviewer=admin_user, decision="reject", reason="Drops the key fact.")
    other = ranked(other_labeler, project)
    demonstrating.demonstration_edit(labeler=other_labeler, ranking=other, text="Olga's answer.")
    client.force_login(labeler)
    page = client.get(reverse("my_demonstrations", args=[project.slug])).content.decode()
    letter = demonstrating.edited_letter(demonstration)
    assert "My better answer." in page and "Drops the key fact." in page and "Rejected" in page and f"Edit of response {letter}" in page
    assert "Olga" not in page and MODEL_NAME not in page


def test_the_review_page_is_for_admins_and_reviews_in_place(client, labeler, researcher, admin_user):
    project = ProjectFactory(slug="review", demonstration_mode="write")
    demonstration = demonstrating.demonstration_write(labeler=labeler, prompt=PromptFactory(project=project), text="An answer to review.")
    url = reverse("demonstration_review", args=[project.slug])
    for user in (labeler, researcher):
        client.force_login(user)
        assert client.get(url).status_code == 403
        assert client.post(reverse("demonstration_review_submit", args=[project.slug, demonstration.pk]), {"decision": "accept"}).status_code == 403
    client.force_login(admin_user)
    page = client.get(url)
    assert b"An answer to review." in page.content and labeler.username.encode() in page.content
    assert client.get(url, {"status": "accepted"}).content.count(b'class="review-row') == 0
    submit = reverse("demonstration_review_submit", args=[project.slug, demonstration.pk])
    missing = client.post(submit, {"decision": "reject", "reason": ""}, HTTP_HX_REQUEST="true")
    assert missing.status_code == 422 and b"Say why" in missing.content
    row = client.post(submit, {"decision": "reject", "reason": "Wrong."}, HTTP_HX_REQUEST="true")
    assert row.status_code == 200 and b"Rejected" in row.content and b"data-reviewed" in row.content
    demonstration.refresh_from_db()
    assert (demonstration.status, demonstration.review_reason) == ("rejected", "Wrong.")


def test_the_project_page_links_by_role(client, labeler, admin_user, researcher):
    project = ProjectFactory(slug="links", demonstration_mode="write")
    client.force_login(labeler)
    page = client.get(reverse("project_detail", args=[project.slug])).content.decode()
    assert reverse("write", args=[project.slug]) in page and reverse("my_demonstrations", args=[project.slug]) in page
    assert reverse("demonstration_review", args=[project.slug]) not in page
    client.force_login(admin_user)
    assert reverse("demonstration_review", args=[project.slug]) in client.get(reverse("project_detail", args=[project.slug])).content.decode()
    client.force_login(researcher)
    page = client.get(reverse("project_detail", args=[project.slug])).content.decode()
    assert reverse("my_demonstrations", args=[project.slug]) not in page and reverse("demonstration_review", args=[project.slug]) not in page
