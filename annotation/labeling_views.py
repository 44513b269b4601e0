"""The labeling pages (htmx): rank, skip, flag, my rankings; and the admin's dashboard and flag review."""

import json

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from annotation import demonstration_views, labeling, selectors
from annotation.labeling import LabelingError
from annotation.models import ItemFlag, Project, Ranking
from annotation.roles import LABEL, MANAGE, require


EMPTY_QUEUE_POLL_SECONDS = 5  # while a generation job is filling the queue, the empty-queue page asks again this often


@require(LABEL)
def label(request, slug):
    """The label page; htmx (the empty queue polling while generation runs) gets just the item fragment."""
    project = get_object_or_404(Project, slug=slug)
    fragment = request.htmx and not request.htmx.history_restore_request
    editor = demonstration_views.editor_requested(request, project)
    return render(request, "_label_item.html" if fragment else "label.html", _next_item_context(request, project, editor=editor))


def _next_item_context(request, project, editor=None, **extra):
    """The next item to rank; or, in an edit-mode project, the editor of a ranking's best response (``editor``, or the
    one "edit_required" calls back), with no new lease taken meanwhile."""
    editor = editor or demonstration_views.editor_awaiting(request.user, project)
    if editor:
        return {"project": project, "editor": editor, "progress": selectors.labeler_progress(request.user, project), **extra}
    assignment = labeling.assignment_next(labeler=request.user, project=project)
    return {
        "project": project,
        "shown": selectors.item_for_labeler(assignment) if assignment else None,
        "generating": None if assignment else selectors.generation_underway(project),
        "poll_seconds": EMPTY_QUEUE_POLL_SECONDS,
        "progress": selectors.labeler_progress(request.user, project),
        "flag_reasons": ItemFlag.Reason.choices,
        **extra,
    }


def _item_or_next(request, project, action, success_message, editor_after=None):
    """Run a labeling action on the current item. htmx gets the next item (or the same one with the error) to
    swap in; a plain form post is redirected back to the label page with the outcome as a message. ``editor_after``
    (of the action's result) gives the editor to show instead of the next item, where the project asks for edits."""
    editor = None
    try:
        result = action()
        outcome, status = {"saved": success_message(result)}, 200
        editor = editor_after(result) if editor_after else None
    except LabelingError as exc:
        outcome, status = {"error": str(exc)}, 422
    if not request.htmx:
        if "error" in outcome:
            messages.error(request, outcome["error"])
        else:
            messages.success(request, outcome["saved"])
        if editor:
            return redirect(demonstration_views.editor_url(project, editor.ranking_id))
        return redirect("label", slug=project.slug)
    return render(request, "_label_item.html", _next_item_context(request, project, editor=editor, **outcome), status=status)


@require(LABEL)
@require_POST
def label_rank(request, slug, item_id):
    project = get_object_or_404(Project, slug=slug)

    def rank():
        return labeling.ranking_submit(
            labeler=request.user,
            item_id=item_id,
            letters=_json_or_none(request.POST.get("tiers", "")),
            rationale=request.POST.get("rationale", ""),
            time_spent_ms=_int_or_none(request.POST.get("time_spent_ms")),
        )

    return _item_or_next(
        request, project, rank, lambda ranking: f"Saved: {selectors.ranking_as_text(ranking)}",
        editor_after=demonstration_views.editor_after_ranking,
    )


@require(LABEL)
@require_POST
def label_skip(request, slug, item_id):
    project = get_object_or_404(Project, slug=slug)

    def skip():
        return labeling.assignment_skip(labeler=request.user, item_id=item_id, reason=request.POST.get("reason", ""))

    return _item_or_next(request, project, skip, lambda _: "Skipped.")


@require(LABEL)
@require_POST
def label_flag(request, slug, item_id):
    project = get_object_or_404(Project, slug=slug)

    def flag():
        return labeling.item_flag(
            labeler=request.user, item_id=item_id, reason=request.POST.get("reason", ""), note=request.POST.get("note", "")
        )

    return _item_or_next(request, project, flag, lambda flag: f"Flagged as {flag.get_reason_display().lower()}; an admin will review it.")


@require(LABEL)
def my_rankings(request, slug):
    project = get_object_or_404(Project, slug=slug)
    return render(
        request,
        "my_rankings.html",
        {"project": project, "rows": selectors.rankings_of(request.user, project), "progress": selectors.labeler_progress(request.user, project)},
    )


@require(LABEL)
def ranking_revise(request, slug, ranking_id):
    project = get_object_or_404(Project, slug=slug)
    ranking = get_object_or_404(Ranking.objects.select_related("item", "assignment"), pk=ranking_id, labeler=request.user, item__project=project)
    error = None
    if request.method == "POST":
        try:
            revision = labeling.ranking_revise(
                labeler=request.user, ranking_id=ranking.pk, letters=_json_or_none(request.POST.get("tiers", "")),
                rationale=request.POST.get("rationale", ""),
            )
        except LabelingError as exc:
            error = str(exc)
        else:
            text = selectors.ranking_as_text(revision.ranking)
            messages.success(request, f"Ranking revised: {text}." if revision.changed else f"Ranking unchanged: {text}.")
            return redirect("my_rankings", slug=slug)
    shown = selectors.item_for_labeler(ranking.assignment) if ranking.assignment else None
    return render(
        request,
        "ranking_revise.html",
        {
            "project": project, "ranking": ranking, "shown": shown, "initial_tiers": json.dumps(selectors.ranking_letters(ranking)),
            "saved_text": selectors.ranking_as_text(ranking), "revisable_until": ranking.created_at + labeling.lease_duration(),
            "error": error,
        },
        status=422 if error else 200,
    )


@require(MANAGE)
def dashboard(request, slug):
    project = get_object_or_404(Project, slug=slug)
    return render(
        request,
        "dashboard.html",
        {
            "project": project,
            "dashboard": selectors.project_dashboard(project),
            "flags": selectors.open_flags(project),
        },
    )


@require(MANAGE)
@require_POST
def flag_review(request, slug, flag_id, decision):
    project = get_object_or_404(Project, slug=slug)
    review = labeling.flag_dismiss if decision == "dismiss" else labeling.flag_retire
    try:
        review(admin=request.user, flag_id=flag_id)
    except LabelingError as exc:
        messages.error(request, str(exc))
    if request.htmx:
        return render(request, "_flag_list.html", {"project": project, "flags": selectors.open_flags(project)})
    return redirect(reverse("dashboard", args=[slug]) + "#flags")


def _json_or_none(value: str):
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return None


def _int_or_none(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None

