"""The labeling queue and rankings through the services: leases, pairs, refusals, skips, flags, revisions."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from annotation import labeling, selectors
from annotation.labeling import InvalidInput, LabelingError, NotAssigned
from annotation.models import Assignment, ItemFlag, PreferencePair, Ranking, RankingItem
from annotation.roles import LABELER
from tests.factories import ProjectFactory, make_item, user_with_role

pytestmark = pytest.mark.django_db


@pytest.fixture
def labelers(db):
    return [user_with_role(LABELER, f"labeler-{n}") for n in range(3)]


def shown_ids(item):
    return sorted(item.candidates.values_list("id", flat=True))


def test_next_item_leases_and_is_stable_on_reload(project, labelers):
    item = make_item(project)
    first = labeling.assignment_next(labeler=labelers[0], project=project)
    assert first.item == item and first.status == Assignment.Status.LEASED
    assert timedelta(minutes=9) < first.expires_at - timezone.now() <= timedelta(minutes=10)
    assert labeling.assignment_next(labeler=labelers[0], project=project).pk == first.pk


def test_items_with_the_fewest_rankings_come_first(labelers):
    project = ProjectFactory(rankings_per_item=3)
    older, newer = make_item(project), make_item(project)
    RankingItem.objects.filter(pk=older.pk).update(rankings_count=1)
    assert labeling.assignment_next(labeler=labelers[0], project=project).item == newer


def test_an_item_needs_distinct_labelers_and_never_comes_back(labelers):
    project = ProjectFactory(rankings_per_item=2)
    item = make_item(project)
    for labeler in labelers[:2]:
        assert labeling.assignment_next(labeler=labeler, project=project).item == item
    assert labeling.assignment_next(labeler=labelers[2], project=project) is None
    labeling.ranking_submit(labeler=labelers[0], item_id=item.pk, tiers=[shown_ids(item)])
    assert labeling.assignment_next(labeler=labelers[0], project=project) is None


def test_an_expired_lease_returns_the_item_to_the_queue(project, labelers):
    item = make_item(project)
    lease = labeling.assignment_next(labeler=labelers[0], project=project)
    assert labeling.assignment_next(labeler=labelers[1], project=project) is None
    Assignment.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert labeling.assignment_next(labeler=labelers[1], project=project).item == item
    # The first labeler's late submit is refused: the slot is taken.
    with pytest.raises(LabelingError, match="expired and another labeler took it"):
        labeling.ranking_submit(labeler=labelers[0], item_id=item.pk, tiers=[shown_ids(item)])


def test_a_late_submit_is_kept_when_the_slot_is_still_free(project, labelers):
    item = make_item(project)
    lease = labeling.assignment_next(labeler=labelers[0], project=project)
    Assignment.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    ranking = labeling.ranking_submit(labeler=labelers[0], item_id=item.pk, tiers=[shown_ids(item)])
    assert ranking.item == item


def test_an_expired_own_lease_is_renewed(project, labelers):
    item = make_item(project)
    lease = labeling.assignment_next(labeler=labelers[0], project=project)
    Assignment.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    renewed = labeling.assignment_next(labeler=labelers[0], project=project)
    assert renewed.pk == lease.pk and renewed.item == item and renewed.expires_at > timezone.now()


def test_submit_derives_pairs_in_the_same_transaction(project, labelers):
    item = make_item(project)
    a, b, c, d = shown_ids(item)
    labeling.assignment_next(labeler=labelers[0], project=project)
    ranking = labeling.ranking_submit(
        labeler=labelers[0], item_id=item.pk, tiers=[[d], [c], [a, b]], rationale=" D is clearest ", time_spent_ms=4200
    )
    assert (ranking.tiers, ranking.rationale, ranking.time_spent_ms) == ([[d], [c], [a, b]], "D is clearest", ranking.time_spent_ms)
    assert 0 <= ranking.time_spent_ms <= 4200
    pairs = {(p.chosen_id, p.rejected_id, p.chosen_rank, p.rejected_rank, p.margin, p.k, p.labeler_id) for p in ranking.pairs.all()}
    assert pairs == {
        (d, c, 1, 2, 1.0, 4, labelers[0].pk), (d, a, 1, 3, 2.0, 4, labelers[0].pk), (d, b, 1, 3, 2.0, 4, labelers[0].pk),
        (c, a, 2, 3, 1.0, 4, labelers[0].pk), (c, b, 2, 3, 1.0, 4, labelers[0].pk),
    }
    assert set(ranking.pairs.values_list("source", "project_id", "prompt_id").distinct()) == {("human", project.pk, item.prompt_id)}
    item.refresh_from_db()
    assert item.rankings_count == 1
    assert Assignment.objects.get(item=item, labeler=labelers[0]).status == Assignment.Status.SUBMITTED


def test_all_equal_is_stored_without_pairs(project, labelers):
    item = make_item(project)
    labeling.assignment_next(labeler=labelers[0], project=project)
    ranking = labeling.ranking_submit(labeler=labelers[0], item_id=item.pk, tiers=[shown_ids(item)])
    assert ranking.pairs.count() == 0 and Ranking.objects.count() == 1


@pytest.mark.parametrize(
    "make_tiers",
    [
        lambda ids: [ids[:3]],  # one missing
        lambda ids: [ids[:3], [ids[0]]],  # one twice
        lambda ids: [ids[:3] + [999999]],  # one not shown
        lambda ids: [ids, [ids[0]]],  # more placements than responses
        lambda ids: [[ids[0]], [], ids[1:]],  # an empty tier
        lambda ids: [],  # nothing
        lambda ids: None,  # not a list
        lambda ids: [[str(i) for i in ids]],  # not ids
    ],
)
def test_malformed_rankings_are_refused_and_nothing_is_written(project, labelers, make_tiers):
    item = make_item(project)
    labeling.assignment_next(labeler=labelers[0], project=project)
    with pytest.raises(InvalidInput, match="(?i)Every shown response must be placed exactly once|tier|something other|places more"):
        labeling.ranking_submit(labeler=labelers[0], item_id=item.pk, tiers=make_tiers(shown_ids(item)))
    assert not Ranking.objects.exists() and not PreferencePair.objects.exists()
    assert Assignment.objects.get(item=item).status == Assignment.Status.LEASED


def test_an_item_not_assigned_cannot_be_ranked(project, labelers):
    item = make_item(project)
    labeling.assignment_next(labeler=labelers[0], project=project)
    with pytest.raises(NotAssigned):
        labeling.ranking_submit(labeler=labelers[1], item_id=item.pk, tiers=[shown_ids(item)])


def test_an_item_cannot_be_ranked_twice(project, labelers):
    item = make_item(project)
    labeling.assignment_next(labeler=labelers[0], project=project)
    labeling.ranking_submit(labeler=labelers[0], item_id=item.pk, tiers=[shown_ids(item)])
    with pytest.raises(LabelingError, match="already submitted"):
        labeling.ranking_submit(labeler=labelers[0], item_id=item.pk, tiers=[shown_ids(item)])


def test_skip_needs_a_reason_and_the_item_stays_for_others(project, labelers):
    item = make_item(project)
    labeling.assignment_next(labeler=labelers[0], project=project)
    with pytest.raises(InvalidInput, match="why"):
        labeling.assignment_skip(labeler=labelers[0], item_id=item.pk, reason="  ")
    labeling.assignment_skip(labeler=labelers[0], item_id=item.pk, reason="Not my field")
    assert Assignment.objects.get(item=item, labeler=labelers[0]).skip_reason == "Not my field"
    assert labeling.assignment_next(labeler=labelers[0], project=project) is None
    assert labeling.assignment_next(labeler=labelers[1], project=project).item == item


def test_flag_removes_the_item_until_an_admin_dismisses_it(project, labelers, admin_user):
    item = make_item(project)
    labeling.assignment_next(labeler=labelers[0], project=project)
    with pytest.raises(InvalidInput, match="flag reason"):
        labeling.item_flag(labeler=labelers[0], item_id=item.pk, reason="boring")
    flag = labeling.item_flag(labeler=labelers[0], item_id=item.pk, reason="unsafe", note="response C is harmful")
    assert RankingItem.objects.get(pk=item.pk).status == RankingItem.Status.FLAGGED
    assert list(selectors.open_flags(project)) == [flag]
    assert labeling.assignment_next(labeler=labelers[1], project=project) is None
    labeling.flag_dismiss(admin=admin_user, flag_id=flag.pk)
    assert RankingItem.objects.get(pk=item.pk).status == RankingItem.Status.ACTIVE
    assert labeling.assignment_next(labeler=labelers[1], project=project).item == item
    assert labeling.assignment_next(labeler=labelers[0], project=project) is None  # the flagger does not get it back
    with pytest.raises(LabelingError, match="already reviewed"):
        labeling.flag_dismiss(admin=admin_user, flag_id=flag.pk)


def test_retiring_a_flagged_item_closes_every_open_flag(labelers, admin_user):
    project = ProjectFactory(rankings_per_item=2)
    item = make_item(project)
    for labeler in labelers[:2]:
        labeling.assignment_next(labeler=labeler, project=project)
    first = labeling.item_flag(labeler=labelers[0], item_id=item.pk, reason="broken")
    with pytest.raises(LabelingError, match="flagged or retired"):
        labeling.ranking_submit(labeler=labelers[1], item_id=item.pk, tiers=[shown_ids(item)])
    second = labeling.item_flag(labeler=labelers[1], item_id=item.pk, reason="duplicate")
    labeling.flag_retire(admin=admin_user, flag_id=first.pk)
    assert RankingItem.objects.get(pk=item.pk).status == RankingItem.Status.RETIRED
    assert set(ItemFlag.objects.values_list("pk", "status")) == {(first.pk, "retired"), (second.pk, "retired")}


def test_revise_within_the_window_rederives_pairs(project, labelers):
    item = make_item(project)
    a, b, c, d = shown_ids(item)
    labeling.assignment_next(labeler=labelers[0], project=project)
    ranking = labeling.ranking_submit(labeler=labelers[0], item_id=item.pk, tiers=[[a], [b], [c], [d]])
    assert ranking.pairs.count() == 6
    labeling.ranking_revise(labeler=labelers[0], ranking_id=ranking.pk, tiers=[[a, b], [c, d]], rationale="ties")
    assert set(ranking.pairs.values_list("chosen_id", "rejected_id")) == {(a, c), (a, d), (b, c), (b, d)}
    with pytest.raises(NotAssigned):
        labeling.ranking_revise(labeler=labelers[1], ranking_id=ranking.pk, tiers=[[a, b, c, d]])
    Ranking.objects.filter(pk=ranking.pk).update(created_at=timezone.now() - timedelta(minutes=11))
    with pytest.raises(LabelingError, match="can be revised for 10 minutes"):
        labeling.ranking_revise(labeler=labelers[0], ranking_id=ranking.pk, tiers=[[a, b, c, d]])


def test_item_for_labeler_hides_sources_and_shuffles_per_labeler(labelers):
    project = ProjectFactory(responses_per_item=8, rankings_per_item=3)
    make_item(project)
    orders = set()
    for labeler in labelers:
        shown = selectors.item_for_labeler(labeling.assignment_next(labeler=labeler, project=project))
        assert [r.letter for r in shown.responses] == list("ABCDEFGH")
        assert set(vars(shown.responses[0])) == {"id", "letter", "text"}
        orders.add(tuple(r.id for r in shown.responses))
    assert len(orders) > 1


def test_progress_counts_for_the_labeler(project, labelers):
    items = [make_item(project) for _ in range(3)]
    labeling.assignment_next(labeler=labelers[0], project=project)
    labeling.ranking_submit(labeler=labelers[0], item_id=items[0].pk, tiers=[shown_ids(items[0])])
    assert selectors.labeler_progress(labelers[0], project) == {"ranked": 1, "open": 2}


def test_item_creation_checks_k_and_prompt(project):
    item = make_item(project)
    candidates = list(item.candidates.all())
    with pytest.raises(LabelingError, match="shows 4 responses, not 3"):
        labeling.ranking_item_create(prompt=item.prompt, candidates=candidates[:3])
    other = make_item(project)
    with pytest.raises(LabelingError, match="answer the item's prompt"):
        labeling.ranking_item_create(prompt=item.prompt, candidates=candidates[:3] + [other.candidates.first()])


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("rankings_per_item", "items", "labeler_count"), [(2, 8, 16), (1, 10, 16)])
def test_concurrent_requests_never_share_a_slot(rankings_per_item, items, labeler_count):
    project = ProjectFactory(rankings_per_item=rankings_per_item)
    for _ in range(items):
        make_item(project)
    labelers = [user_with_role(LABELER, f"concurrent-{n}") for n in range(labeler_count)]
    barrier = threading.Barrier(labeler_count)
    results, errors = {}, []

    def ask(labeler):
        try:
            barrier.wait()
            assignment = labeling.assignment_next(labeler=labeler, project=project)
            results[labeler.pk] = assignment.item_id if assignment else None
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=ask, args=(labeler,)) for labeler in labelers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    served = [item_id for item_id in results.values() if item_id is not None]
    slots = rankings_per_item * items
    assert len(served) == min(slots, labeler_count)
    assert all(served.count(item_id) <= rankings_per_item for item_id in set(served))
    for item in RankingItem.objects.filter(project=project):
        assert item.assignments.filter(status="leased").count() <= rankings_per_item
