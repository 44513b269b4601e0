"""Writes of the labeling loop: items, leases, rankings (and their pairs), skips and flags.

Concurrency: leasing locks the item row (``select_for_update(skip_locked=True)`` on PostgreSQL, so labelers asking
at the same moment take different items instead of waiting; SQLite serialises writers with IMMEDIATE transactions).
Every write that changes an item's slots (lease, late submit) holds that row lock, so slot counts read after taking
it are exact.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from annotation.models import Assignment, ItemFlag, PreferencePair, Project, Prompt, Ranking, RankingItem
from annotation.ranking import InvalidRanking, derive_pairs, display_order, tiers_from_letters, validate_tiers
from config.web import Refusal
from generation.models import Candidate

_UNSET = object()  # a ranking argument left out (None is a malformed ranking)
LEASE_ATTEMPTS = 20  # each attempt rules out one item whose last slot was taken meanwhile
MAX_RATIONALE = 5000
MAX_SKIP_REASON = 500
MAX_FLAG_NOTE = 2000
_SURROGATE = re.compile(r"[\ud800-\udfff]")  # decoded from a lone "\\ud800": no database stores it
MAX_TIME_SPENT_MS = 24 * 3600 * 1000


class LabelingError(Refusal):
    """A labeling action was refused; the message says why, for the page and the API alike."""

    status_code = 409


class NotAssigned(LabelingError):
    status_code = 404


class InvalidInput(LabelingError):
    """The request itself is malformed (a ranking that does not place every response once, a missing reason)."""

    status_code = 400


def lease_duration() -> timedelta:
    return timedelta(minutes=settings.PREFLOOP_LEASE_MINUTES)


def ranking_item_create(
    *, prompt: Prompt, candidates: Sequence[Candidate], origin: str = RankingItem.Origin.GENERATION
) -> RankingItem:
    """Put K candidates of a prompt in front of labelers."""
    project = prompt.project
    if len(candidates) != project.responses_per_item:
        raise LabelingError(f"An item of {project.slug} shows {project.responses_per_item} responses, not {len(candidates)}.")
    if any(candidate.prompt_id != prompt.pk for candidate in candidates):
        raise LabelingError("Every candidate of an item must answer the item's prompt.")
    item = RankingItem.objects.create(project=project, prompt=prompt, origin=origin)
    item.candidates.set(candidates)
    return item


def assignment_next(*, labeler: AbstractUser, project: Project) -> Assignment | None:
    """The labeler's current lease in the project, or a new lease on the item that most needs a ranking.
    None when nothing is left for this labeler."""
    now = timezone.now()
    current = (
        Assignment.objects.filter(labeler=labeler, item__project=project, item__status=RankingItem.Status.ACTIVE,
                                  status=Assignment.Status.LEASED, expires_at__gt=now)
        .order_by("leased_at")
        .first()
    )
    if current:
        return current
    tried: list[int] = []
    for _ in range(LEASE_ATTEMPTS):
        with transaction.atomic():
            # Skip items other labelers are leasing right now; if every candidate is being leased, wait for one
            # instead of reporting an empty queue (its other slots may still be free).
            item = _lock_next_item(project, labeler, now, tried, skip_locked=True) or _lock_next_item(
                project, labeler, now, tried, skip_locked=False
            )
            if item is None:
                return None
            if _free_slots(item, project, labeler, now) > 0:
                return _lease(item, labeler, now)
            tried.append(item.id)
    return None


@dataclass(frozen=True)
class _LockedItem:
    id: int
    rankings_count: int
    own_assignment_id: int | None  # the labeler's expired lease on this item, if any


# Hand-written because this is the hottest query of the labeling loop: the ORM spent longer building it than
# the database spent running it. Only the row lock differs between PostgreSQL and SQLite.
_NEXT_ITEM_SQL = """
SELECT item.id, item.rankings_count,
       (SELECT own.id FROM {assignment} own WHERE own.item_id = item.id AND own.labeler_id = %(labeler)s)
FROM {item} item
WHERE item.project_id = %(project)s AND item.status = 'active'
  AND item.rankings_count + (
        SELECT COUNT(*) FROM {assignment} lease
        WHERE lease.item_id = item.id AND lease.status = 'leased' AND lease.expires_at > %(now)s
          AND lease.labeler_id <> %(labeler)s
      ) < %(needed)s
  AND NOT EXISTS (
        SELECT 1 FROM {assignment} done
        WHERE done.item_id = item.id AND done.labeler_id = %(labeler)s AND done.status IN ('submitted', 'skipped', 'flagged')
      )
  {exclude}
ORDER BY {order}
LIMIT 1
{lock}
"""

# Hardest first: the smallest spread of the queue reward model's scores; items it has not scored come last.
_QUEUE_ORDER_SQL = {
    Project.QueueOrder.FEWEST_RANKINGS: "item.rankings_count, item.id",
    Project.QueueOrder.REWARD_SPREAD: "item.reward_spread ASC NULLS LAST, item.rankings_count, item.id",
}

_LEASES_SQL = """
SELECT COUNT(*) FROM {assignment}
WHERE item_id = %(item)s AND status = 'leased' AND expires_at > %(now)s AND labeler_id <> %(labeler)s
"""


def _sql(template: str, **extra) -> str:
    return template.format(assignment=Assignment._meta.db_table, item=RankingItem._meta.db_table, **extra)


def _lock_next_item(project: Project, labeler: AbstractUser, now, exclude: list[int], skip_locked: bool) -> _LockedItem | None:
    params = {"labeler": labeler.pk, "project": project.pk, "needed": project.rankings_per_item, "now": _db_time(now)}
    params.update({f"tried{i}": item_id for i, item_id in enumerate(exclude)})
    excluded = f"AND item.id NOT IN ({', '.join(f'%(tried{i})s' for i in range(len(exclude)))})" if exclude else ""
    lock = ""
    if connection.features.has_select_for_update:
        lock = "FOR UPDATE OF item SKIP LOCKED" if skip_locked else "FOR UPDATE OF item"
    with connection.cursor() as cursor:
        cursor.execute(_sql(_NEXT_ITEM_SQL, exclude=excluded, lock=lock, order=_QUEUE_ORDER_SQL[project.queue_order]), params)
        row = cursor.fetchone()
    return _LockedItem(*row) if row else None


def _db_time(moment):
    return connection.ops.adapt_datetimefield_value(moment)


def _free_slots(item: _LockedItem, project: Project, labeler: AbstractUser, now) -> int:
    """Exact once the item row is locked: every lease and late submit of this item holds the same lock, and this
    statement sees leases committed after the locking query began."""
    with connection.cursor() as cursor:
        cursor.execute(_sql(_LEASES_SQL), {"item": item.id, "now": _db_time(now), "labeler": labeler.pk})
        leases = cursor.fetchone()[0]
    return project.rankings_per_item - item.rankings_count - leases


def _lease(item: _LockedItem, labeler: AbstractUser, now) -> Assignment:
    """Create the lease, or renew the labeler's own expired one (a labeler has one assignment row per item)."""
    fields = {"status": Assignment.Status.LEASED, "leased_at": now, "expires_at": now + lease_duration()}
    if item.own_assignment_id is None:
        return Assignment.objects.create(item_id=item.id, labeler=labeler, **fields)
    Assignment.objects.filter(pk=item.own_assignment_id).update(**fields)
    return Assignment(pk=item.own_assignment_id, item_id=item.id, labeler=labeler, **fields)


def ranking_submit(
    *,
    labeler: AbstractUser,
    item_id: int,
    letters: object = _UNSET,
    tiers: object = _UNSET,
    rationale: str = "",
    time_spent_ms: int | None = None,
) -> Ranking:
    """Save the labeler's ranking of a leased item and derive its preference pairs, in one transaction.

    ``letters`` is the ranking as the labeler gave it, in the letters they were shown (the page and the API);
    ``tiers`` is the same in candidate ids, for trusted in-process callers (benches, tests, seeding)."""
    rationale = _checked_rationale(rationale)
    # An item's responses never change: the ranking is checked before the transaction, so a malformed one takes no lock.
    normalised = _valid(labeler, item_id, letters, tiers)
    now = timezone.now()
    with transaction.atomic():
        assignment = _own_lease(labeler, item_id)
        item = assignment.item
        if item.status != RankingItem.Status.ACTIVE:
            raise LabelingError("This item was flagged or retired meanwhile; fetch the next one.")
        if assignment.expires_at <= now:
            _check_late_slot(item, labeler, now)
        elapsed_ms = int((now - assignment.leased_at).total_seconds() * 1000)
        try:
            ranking = Ranking.objects.create(
                item=item, labeler=labeler, assignment=assignment, tiers=normalised, rationale=rationale,
                time_spent_ms=_time_spent(time_spent_ms, elapsed_ms),
            )
        except IntegrityError as exc:
            raise LabelingError("You already ranked this item.") from exc
        _create_pairs(ranking, normalised, item)
        Assignment.objects.filter(pk=assignment.pk).update(status=Assignment.Status.SUBMITTED)
        RankingItem.objects.filter(pk=item.pk).update(rankings_count=F("rankings_count") + 1)
    return ranking


def _own_lease(labeler: AbstractUser, item_id: int) -> Assignment:
    """The labeler's assignment on the item, locked, and still open for a ranking, a skip or a flag."""
    assignment = (
        Assignment.objects.select_related("item__project")
        .select_for_update(of=("self",))
        .filter(item_id=item_id, labeler=labeler)
        .first()
    )
    if assignment is None:
        raise NotAssigned("This item is not assigned to you.")
    if assignment.status != Assignment.Status.LEASED:
        raise LabelingError(f"You already {assignment.get_status_display().lower()} this item.")
    return assignment


def _shown(item_id: int) -> list[int]:
    shown = RankingItem.candidates.through.objects.filter(rankingitem_id=item_id).order_by("candidate_id")
    return list(shown.values_list("candidate_id", flat=True))


def _valid(labeler: AbstractUser, item_id: int, letters: object, tiers: object) -> list[list[int]]:
    """The ranking as tiers of candidate ids. The one place where a labeler's letters become ids: the letters are
    those of ``display_order`` for this labeler and item, as the page and the API showed them."""
    if (letters is _UNSET) == (tiers is _UNSET):
        raise TypeError("Pass the ranking as either `letters` (a labeler's) or `tiers` (candidate ids).")
    shown = _shown(item_id)
    try:
        if letters is not _UNSET:
            return tiers_from_letters(letters, display_order(shown, labeler_id=labeler.pk, item_id=item_id))
        return validate_tiers(tiers, shown)
    except InvalidRanking as exc:
        raise InvalidInput(str(exc)) from exc


def _check_late_slot(item: RankingItem, labeler: AbstractUser, now) -> None:
    """A submit after the lease expired is kept if nobody took the slot meanwhile."""
    rankings_count = RankingItem.objects.select_for_update().values_list("rankings_count", flat=True).get(pk=item.pk)
    locked = _LockedItem(id=item.pk, rankings_count=rankings_count, own_assignment_id=None)
    if _free_slots(locked, item.project, labeler, now) <= 0:
        raise LabelingError("Your lease on this item expired and another labeler took it; fetch the next item.")


def _time_spent(reported_ms: int | None, elapsed_ms: int) -> int:
    """The browser's count of time on the item, bounded by the time since the lease began."""
    if reported_ms is None:
        return max(0, min(elapsed_ms, MAX_TIME_SPENT_MS))
    return max(0, min(int(reported_ms), max(elapsed_ms, 0), MAX_TIME_SPENT_MS))


def _checked_rationale(rationale: str) -> str:
    return _checked_text(rationale, "The rationale", MAX_RATIONALE)


def _checked_text(text: str, what: str, limit: int) -> str:
    """A labeler's free text, stripped: refused (not cut) when longer than ``limit`` or not storable."""
    text = (text or "").strip()
    if len(text) > limit:
        raise InvalidInput(f"{what} is longer than {limit} characters.")
    if not text.isascii() and (match := _SURROGATE.search(text)):
        raise InvalidInput(f"{what} contains an unpaired surrogate (\\u{ord(match.group()):04x}), which is not valid text.")
    return text


def _create_pairs(ranking: Ranking, tiers: list[list[int]], item: RankingItem) -> None:
    k = sum(len(tier) for tier in tiers)
    pairs = PreferencePair.objects.bulk_create(
        PreferencePair(
            project_id=item.project_id, prompt_id=item.prompt_id, chosen_id=pair.chosen, rejected_id=pair.rejected,
            source=PreferencePair.Source.HUMAN, margin=pair.margin, chosen_rank=pair.chosen_rank,
            rejected_rank=pair.rejected_rank, k=k, ranking=ranking, labeler_id=ranking.labeler_id,
        )
        for pair in derive_pairs(tiers)
    )
    ranking.pair_count = len(pairs)  # spares the API a COUNT after the commit


@dataclass(frozen=True)
class RankingRevision:
    ranking: Ranking
    changed: bool  # False: the same tiers (ties in any order) and the same rationale; nothing was written


def ranking_revise(
    *, labeler: AbstractUser, ranking_id: int, letters: object = _UNSET, tiers: object = _UNSET, rationale: str | None = None
) -> RankingRevision:
    """Change one's own ranking within the lease window after submitting; its pairs are derived again. A revision
    that changes nothing (same tiers, same rationale) writes nothing and says so. ``letters`` and ``tiers`` as for
    ``ranking_submit``."""
    with transaction.atomic():
        ranking = Ranking.objects.select_for_update().select_related("item").filter(pk=ranking_id, labeler=labeler).first()
        if ranking is None:
            raise NotAssigned("No such ranking of yours.")
        if timezone.now() > ranking.created_at + lease_duration():
            raise LabelingError(f"Rankings can be revised for {settings.PREFLOOP_LEASE_MINUTES} minutes after submitting.")
        tiers = _valid(labeler, ranking.item_id, letters, tiers)
        rationale = ranking.rationale if rationale is None else _checked_rationale(rationale)
        if _same_tiers(tiers, ranking.tiers) and rationale == ranking.rationale:
            return RankingRevision(ranking=ranking, changed=False)
        ranking.tiers, ranking.rationale = tiers, rationale
        ranking.save(update_fields=["tiers", "rationale", "updated_at"])
        ranking.pairs.all().delete()
        _create_pairs(ranking, ranking.tiers, ranking.item)
    return RankingRevision(ranking=ranking, changed=True)


def _same_tiers(first: list[list[int]], second: list[list[int]]) -> bool:
    """The order within a tier means nothing (its responses are tied)."""
    return [sorted(tier) for tier in first] == [sorted(tier) for tier in second]


def assignment_skip(*, labeler: AbstractUser, item_id: int, reason: str) -> Assignment:
    """Pass on an item, with a reason; it stays in the queue for others and never comes back to this labeler."""
    reason = _checked_text(reason, "The skip reason", MAX_SKIP_REASON)
    if not reason:
        raise InvalidInput("Say why you skip this item.")
    with transaction.atomic():
        assignment = _own_lease(labeler, item_id)
        assignment.status = Assignment.Status.SKIPPED
        assignment.skip_reason = reason
        assignment.save(update_fields=["status", "skip_reason"])
    return assignment


def item_flag(*, labeler: AbstractUser, item_id: int, reason: str, note: str = "") -> ItemFlag:
    """Report an item that cannot be ranked as it is; it leaves the queue until an admin reviews it."""
    if reason not in ItemFlag.Reason.values:
        raise InvalidInput(f"Choose a flag reason: {', '.join(ItemFlag.Reason.values)}.")
    note = _checked_text(note, "The note", MAX_FLAG_NOTE)
    with transaction.atomic():
        assignment = _own_lease(labeler, item_id)
        flag = ItemFlag.objects.create(item_id=item_id, labeler=labeler, reason=reason, note=note)
        Assignment.objects.filter(pk=assignment.pk).update(status=Assignment.Status.FLAGGED)
        RankingItem.objects.filter(pk=item_id).update(status=RankingItem.Status.FLAGGED)
    return flag


def flag_dismiss(*, admin: AbstractUser, flag_id: int) -> ItemFlag:
    """The flag was unfounded: the item goes back to the queue once no other flag on it is open."""
    with transaction.atomic():
        flag = _open_flag(flag_id)
        _resolve(flag, ItemFlag.Status.DISMISSED, admin)
        if not flag.item.flags.filter(status=ItemFlag.Status.OPEN).exists():
            RankingItem.objects.filter(pk=flag.item_id, status=RankingItem.Status.FLAGGED).update(status=RankingItem.Status.ACTIVE)
    return flag


def flag_retire(*, admin: AbstractUser, flag_id: int) -> ItemFlag:
    """The flag was right: the item leaves the queue for good, and every open flag on it is closed."""
    with transaction.atomic():
        flag = _open_flag(flag_id)
        for open_flag in flag.item.flags.filter(status=ItemFlag.Status.OPEN):
            _resolve(open_flag, ItemFlag.Status.RETIRED, admin)
        RankingItem.objects.filter(pk=flag.item_id).update(status=RankingItem.Status.RETIRED)
    flag.refresh_from_db()
    return flag


def _open_flag(flag_id: int) -> ItemFlag:
    flag = ItemFlag.objects.select_for_update().select_related("item").filter(pk=flag_id).first()
    if flag is None:
        raise NotAssigned("No such flag.")
    if flag.status != ItemFlag.Status.OPEN:
        raise LabelingError("This flag was already reviewed.")
    return flag


def _resolve(flag: ItemFlag, status: str, admin: AbstractUser) -> None:
    flag.status = status
    flag.resolved_by = admin
    flag.resolved_at = timezone.now()
    flag.save(update_fields=["status", "resolved_by", "resolved_at"])

