"""Demonstrations made by labelers (the answer a prompt should get): written from scratch, or edited from the best
response of their own ranking; the admins' review of them; and the reads behind the write, edit and review pages.

The protocol, for whoever changes this module:

- **Write** (Project.demonstration_mode "write"): a labeler answers a train prompt of the project, once per prompt
  (constraint ``demonstration_written_once``). There is no lease: two labelers may answer the same prompt at the same
  time, and ``prompt_to_write`` spreads them by handing out the prompts with the fewest demonstrations first. A prompt
  a labeler skips is remembered by the caller (the page's session, the API client's ``exclude``), never stored.
- **Edit** ("edit_optional" / "edit_required"): after ranking an item, the labeler rewrites a response of the ranking's
  top tier (by default the first one placed there) into the answer they want. One transaction, holding the ranking's
  row lock (so two submits of the same edit cannot both pass the "already edited" check; the constraints
  ``demonstration_edit_once`` and ``pair_one_per_edit`` are the backstop), writes three rows: the Demonstration
  (source edited, pending review), a Candidate holding the edited text (source edit, no model version; the prompt's
  existing candidate with the same text is reused) and the PreferencePair "edited > original" (source edit, margin 1).
  The pair does not hang off the ranking (``pair.ranking`` stays empty): revising the ranking derives the ranking's
  own pairs again and leaves the edit's pair alone. Blind comparisons from evaluations are not edited.
- **Edit required**: before a new item, the label page (and the API's next item) hands the labeler the editor of their
  latest ranking in the project while it has no edit (``ranking_awaiting_edit``). Only the latest: rankings made
  before the project asked for edits are never called back. In "edit_optional" skipping the editor writes nothing.
- **Review**: admins accept or reject (a reason is required to reject) any demonstration, and may change their mind.
  A rejected edit keeps its pair in the database; ``annotation.pairs.selected_pairs`` leaves such pairs out.
- Labelers never see model names or candidate ids: a response is named by the letter that labeler saw on the item.

Refusals are the labeling loop's (annotation.labeling): InvalidInput (400), NotAssigned (404), LabelingError (409).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.contrib.auth.models import AbstractUser
from django.db import IntegrityError, transaction
from django.db.models import Case, Count, Exists, F, IntegerField, OuterRef, Q, QuerySet, Value, When
from django.utils import timezone

from annotation.importing import content_hash
from annotation.labeling import MAX_TIME_SPENT_MS, InvalidInput, LabelingError, NotAssigned, _checked_text, _time_spent
from annotation.models import Demonstration, PreferencePair, Project, Prompt, Ranking, RankingItem
from annotation.ranking import display_order, letters_for
from annotation.roles import can_manage
from generation.models import Candidate

# As long as the longest text a person types elsewhere (an evaluation's typed prompt, training.evaluation): room for a
# long, careful answer, far below what a request body may carry (PREFLOOP_MAX_BODY_BYTES).
MAX_DEMONSTRATION_CHARS = 20_000
MAX_REVIEW_REASON = Demonstration._meta.get_field("review_reason").max_length
EDIT_MODES = (Project.DemonstrationMode.EDIT_OPTIONAL, Project.DemonstrationMode.EDIT_REQUIRED)
LABELER_SOURCES = (Demonstration.Source.WRITTEN, Demonstration.Source.EDITED)
DECISIONS = {"accept": Demonstration.Status.ACCEPTED, "reject": Demonstration.Status.REJECTED}


class NotAllowed(LabelingError):
    """The user's role may not do this (a defence behind the views' own checks)."""

    status_code = 403


# --- writes ----------------------------------------------------------------------------------------------------------


def demonstration_write(*, labeler: AbstractUser, prompt: Prompt | int, text: str, time_spent_ms: int | None = None) -> Demonstration:
    """The labeler's own answer to a train prompt of a project in write mode; pending review."""
    text = _checked_demonstration(text)
    prompt = _prompt(prompt)
    project = prompt.project
    if project.demonstration_mode != Project.DemonstrationMode.WRITE:
        raise LabelingError(f"{project.name} does not ask labelers to write answers.")
    if prompt.split != Prompt.Split.TRAIN:
        raise LabelingError("This prompt is held out for evaluation; it gets no written answers.")
    written = Demonstration.objects.filter(prompt=prompt, labeler=labeler, source=Demonstration.Source.WRITTEN)
    if written.exists():
        raise LabelingError("You already answered this prompt.")
    try:
        with transaction.atomic():
            return Demonstration.objects.create(
                project=project, prompt=prompt, text=text, text_hash=content_hash(text), source=Demonstration.Source.WRITTEN,
                labeler=labeler, time_spent_ms=_time_spent(time_spent_ms or 0, MAX_TIME_SPENT_MS),
            )
    except IntegrityError as exc:  # the same answer sent twice at once
        raise LabelingError("You already answered this prompt.") from exc


def demonstration_edit(
    *,
    labeler: AbstractUser,
    ranking: Ranking | int,
    text: str,
    time_spent_ms: int | None = None,
    candidate: Candidate | int | None = None,
) -> Demonstration:
    """The labeler's rewrite of a response of their ranking's top tier (``candidate``; by default the first one placed
    there), with its candidate and its pair "edited > original". See the module's protocol."""
    text = _checked_demonstration(text)
    ranking_id = ranking.pk if isinstance(ranking, Ranking) else ranking
    candidate_id = candidate.pk if isinstance(candidate, Candidate) else candidate
    with transaction.atomic():
        ranking = (
            Ranking.objects.select_for_update(of=("self",)).select_related("item__project", "item__prompt")
            .filter(pk=ranking_id, labeler=labeler).first()
        )
        if ranking is None:
            raise NotAssigned("No such ranking of yours.")
        item, project = ranking.item, ranking.item.project
        _check_editable(project, item)
        if Demonstration.objects.filter(ranking=ranking, source=Demonstration.Source.EDITED).exists():
            raise LabelingError("You already edited the best response of this ranking.")
        top = ranking.tiers[0]
        original_id = top[0] if candidate_id is None else candidate_id
        if original_id not in top:
            raise InvalidInput("Edit a response you ranked best (your ranking's top tier).")
        original = Candidate.objects.get(pk=original_id)
        if text == _newlines(original.text).strip():
            raise InvalidInput("Your edit is the same as the response: change it, or skip the edit.")
        if Demonstration.objects.filter(edited_from=original, labeler=labeler, source=Demonstration.Source.EDITED).exists():
            raise LabelingError("You already edited this response (it was shown to you in another item).")
        elapsed_ms = int((timezone.now() - ranking.created_at).total_seconds() * 1000)
        edited, _ = Candidate.objects.get_or_create(
            prompt=item.prompt, text_hash=content_hash(text), defaults={"text": text, "source": Candidate.Source.EDIT}
        )
        demonstration = Demonstration.objects.create(
            project=project, prompt=item.prompt, text=text, text_hash=content_hash(text), source=Demonstration.Source.EDITED,
            labeler=labeler, edited_from=original, ranking=ranking, time_spent_ms=_time_spent(time_spent_ms, elapsed_ms),
        )
        PreferencePair.objects.create(
            project=project, prompt=item.prompt, chosen=edited, rejected=original, source=PreferencePair.Source.EDIT,
            margin=1.0, demonstration=demonstration, labeler=labeler,
        )
    return demonstration


def demonstration_skip_edit(*, labeler: AbstractUser, ranking: Ranking | int) -> Ranking:
    """Pass on editing a ranking's best response: allowed where edits are optional; nothing is written."""
    ranking_id = ranking.pk if isinstance(ranking, Ranking) else ranking
    ranking = Ranking.objects.select_related("item__project").filter(pk=ranking_id, labeler=labeler).first()
    if ranking is None:
        raise NotAssigned("No such ranking of yours.")
    if ranking.item.project.demonstration_mode == Project.DemonstrationMode.EDIT_REQUIRED:
        raise LabelingError("This project asks for an edit of every ranking's best response.")
    return ranking


def demonstration_review(
    *, demonstration: Demonstration | int, reviewer: AbstractUser, decision: str, reason: str = ""
) -> Demonstration:
    """Accept or reject a demonstration (a reason is required to reject); a later review replaces an earlier one."""
    if not can_manage(reviewer):
        raise NotAllowed("Only admins review demonstrations.")
    if decision not in DECISIONS:
        raise InvalidInput(f"Decide {' or '.join(DECISIONS)}.")
    reason = _checked_text(reason, "The reason", MAX_REVIEW_REASON)
    if "\x00" in reason:
        raise InvalidInput("The reason contains a NUL character, which is not text.")
    if decision == "reject" and not reason:
        raise InvalidInput("Say why you reject this demonstration: its labeler reads the reason.")
    demonstration_id = demonstration.pk if isinstance(demonstration, Demonstration) else demonstration
    with transaction.atomic():
        demonstration = Demonstration.objects.select_for_update().filter(pk=demonstration_id).first()
        if demonstration is None:
            raise NotAssigned("No such demonstration.")
        demonstration.status = DECISIONS[decision]
        demonstration.review_reason = reason
        demonstration.reviewed_by = reviewer
        demonstration.reviewed_at = timezone.now()
        demonstration.save(update_fields=["status", "review_reason", "reviewed_by", "reviewed_at", "updated_at"])
    return demonstration


def _checked_demonstration(text: str) -> str:
    if not isinstance(text, str):
        raise InvalidInput("Send the answer as text.")
    text = _checked_text(_newlines(text), "The answer", MAX_DEMONSTRATION_CHARS)
    if not text:
        raise InvalidInput("Write an answer first.")
    if "\x00" in text:
        raise InvalidInput("The answer contains a NUL character, which is not text.")
    return text


def _newlines(text: str) -> str:
    """Line ends as "\n": a browser sends a text box's lines ended by "\r\n"."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _prompt(prompt: Prompt | int) -> Prompt:
    if isinstance(prompt, Prompt):
        return prompt
    found = Prompt.objects.select_related("project").filter(pk=prompt).first()
    if found is None:
        raise NotAssigned("No such prompt.")
    return found


def _check_editable(project: Project, item: RankingItem) -> None:
    if project.demonstration_mode not in EDIT_MODES:
        raise LabelingError(f"{project.name} does not ask labelers to edit responses.")
    if item.origin != RankingItem.Origin.GENERATION:
        raise LabelingError("The responses of a blind comparison are not edited.")


# --- reads -----------------------------------------------------------------------------------------------------------


def prompt_to_write(*, labeler: AbstractUser, project: Project, exclude: Iterable[int] = ()) -> Prompt | None:
    """The next prompt for the labeler to answer: a train prompt they have not answered (nor skipped: ``exclude``),
    the one with the fewest demonstrations (rejected ones not counted) first. None when none is left, or when the
    project does not ask for written answers."""
    if project.demonstration_mode != Project.DemonstrationMode.WRITE:
        return None
    return (
        _unwritten(labeler, project)
        .exclude(pk__in=list(exclude))
        .annotate(demonstration_count=Count("demonstrations", filter=~Q(demonstrations__status=Demonstration.Status.REJECTED)))
        .order_by("demonstration_count", "id")
        .first()
    )


def write_progress(labeler: AbstractUser, project: Project) -> dict[str, int]:
    """The labeler's counts in write mode: prompts answered, and train prompts still open to them."""
    written = Demonstration.objects.filter(labeler=labeler, project=project, source=Demonstration.Source.WRITTEN).count()
    return {"written": written, "open": _unwritten(labeler, project).count()}


def _unwritten(labeler: AbstractUser, project: Project) -> QuerySet[Prompt]:
    written = Demonstration.objects.filter(prompt=OuterRef("pk"), labeler=labeler, source=Demonstration.Source.WRITTEN)
    return project.prompts.filter(split=Prompt.Split.TRAIN).exclude(Exists(written))


def ranking_awaiting_edit(*, labeler: AbstractUser, project: Project) -> Ranking | None:
    """In "edit_required": the labeler's latest ranking in the project while it has no edit (the editor comes back
    before any new item). None otherwise, and when every response of its top tier was already edited by them."""
    if project.demonstration_mode != Project.DemonstrationMode.EDIT_REQUIRED:
        return None
    latest = (
        Ranking.objects.filter(labeler=labeler, item__project=project).select_related("item").order_by("-created_at", "-id").first()
    )
    if latest is None or latest.item.origin != RankingItem.Origin.GENERATION:
        return None
    if latest.demonstrations.filter(source=Demonstration.Source.EDITED).exists():
        return None
    edited = Demonstration.objects.filter(labeler=labeler, source=Demonstration.Source.EDITED, edited_from__in=latest.tiers[0])
    return None if edited.count() >= len(set(latest.tiers[0])) else latest


def can_edit(ranking: Ranking) -> bool:
    """Whether the editor may be offered for this ranking now: an edit-mode project, a generated item, no edit yet."""
    project = ranking.item.project
    return (
        project.demonstration_mode in EDIT_MODES
        and ranking.item.origin == RankingItem.Origin.GENERATION
        and not ranking.demonstrations.filter(source=Demonstration.Source.EDITED).exists()
    )


@dataclass(frozen=True)
class EditorForLabeler:
    """What the editor shows a labeler: the conversation and the response they start from, named by its letter.
    Nothing about where the response came from."""

    ranking_id: int
    item_id: int
    messages: list[dict]
    letter: str  # the response being edited
    original: str
    top_letters: list[str]  # the responses the labeler ranked best (more than one: a tie), any of which may be edited
    required: bool

    max_chars: int = MAX_DEMONSTRATION_CHARS


def editor_for_labeler(ranking: Ranking, letter: str | None = None) -> EditorForLabeler:
    """The editor of a ranking, starting from the response ``letter`` of its top tier (by default the first placed
    there). Raises InvalidInput for a letter outside the top tier."""
    letters = response_letters(ranking)
    top = ranking.tiers[0]
    by_letter = {letters[candidate_id]: candidate_id for candidate_id in top}
    if letter is None:
        chosen = top[0]
    elif letter in by_letter:
        chosen = by_letter[letter]
    else:
        raise InvalidInput(f"Edit a response you ranked best: {', '.join(sorted(by_letter))}.")
    original = Candidate.objects.values_list("text", flat=True).get(pk=chosen)
    return EditorForLabeler(
        ranking_id=ranking.pk, item_id=ranking.item_id, messages=ranking.item.prompt.messages, letter=letters[chosen],
        original=original, top_letters=sorted(by_letter),
        required=ranking.item.project.demonstration_mode == Project.DemonstrationMode.EDIT_REQUIRED,
    )


def response_letters(ranking: Ranking) -> dict[int, str]:
    """Candidate id → the letter the ranking's labeler saw it under."""
    shown = [candidate_id for tier in ranking.tiers for candidate_id in tier]
    return letters_for(display_order(shown, labeler_id=ranking.labeler_id, item_id=ranking.item_id))


def candidate_for_letter(ranking: Ranking, letter: str | None) -> int | None:
    """The candidate behind a letter the labeler saw on the ranking's item; None for no letter. Raises InvalidInput
    for a letter that was not on the item."""
    if letter in (None, ""):
        return None
    by_letter = {value: key for key, value in response_letters(ranking).items()}
    if letter not in by_letter:
        raise InvalidInput(f"No response {letter} was shown with this ranking's item.")
    return by_letter[letter]


def edited_letter(demonstration: Demonstration) -> str | None:
    """For an edit: the letter its labeler saw the original under (None when the ranking is gone)."""
    if demonstration.ranking is None or demonstration.edited_from_id is None:
        return None
    return response_letters(demonstration.ranking).get(demonstration.edited_from_id)


def demonstrations_of(labeler: AbstractUser, project: Project) -> QuerySet[Demonstration]:
    """A labeler's own demonstrations in a project, newest first."""
    return (
        Demonstration.objects.filter(labeler=labeler, project=project)
        .select_related("prompt", "edited_from", "ranking")
        .order_by("-created_at", "-id")
    )


def review_queue(
    project: Project, *, status: str = "", source: str = "", labeler: int | None = None
) -> QuerySet[Demonstration]:
    """A project's demonstrations for review: pending ones first, oldest first (a queue), then the others, newest
    first; filtered by status, source and labeler (a user id)."""
    demonstrations = Demonstration.objects.filter(project=project).select_related("prompt", "labeler", "edited_from", "reviewed_by")
    if status:
        demonstrations = demonstrations.filter(status=status)
    if source:
        demonstrations = demonstrations.filter(source=source)
    if labeler is not None:
        demonstrations = demonstrations.filter(labeler_id=labeler)
    pending = Q(status=Demonstration.Status.PENDING)
    return demonstrations.order_by(
        Case(When(pending, then=Value(0)), default=Value(1), output_field=IntegerField()),
        Case(When(pending, then=F("id")), default=Value(0) - F("id"), output_field=IntegerField()),
    )


def demonstration_counts(project: Project) -> dict[str, int]:
    """How many demonstrations the project holds in each review status."""
    counts = dict(Demonstration.objects.filter(project=project).values_list("status").annotate(n=Count("id")).order_by())
    return {status: counts.get(status, 0) for status in Demonstration.Status.values}
