"""The demonstration pages (htmx): writing answers, the editor the label page shows after a ranking in an edit-mode
project, "My demonstrations"; and the admins' review. The services and reads are in annotation.demonstrating."""

from django.contrib import messages
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from annotation import demonstrating, selectors
from annotation.demonstrating import MAX_DEMONSTRATION_CHARS, MAX_REVIEW_REASON
from annotation.labeling import LabelingError
from annotation.models import Demonstration, Project, Prompt, Ranking
from annotation.roles import LABEL, MANAGE, require
from config.api import int64

SKIPPED_SESSION_KEY = "prefloop-write-skipped-{project}"
MAX_REMEMBERED_SKIPS = 500  # prompts skipped on the write page, per project, kept in the session
DEMONSTRATIONS_PER_PAGE = 25


# --- writing ---------------------------------------------------------------------------------------------------------


@require(LABEL)
def write(request, slug):
    """The write page; htmx gets just the prompt fragment. ``?again=1`` forgets the prompts skipped so far."""
    project = get_object_or_404(Project, slug=slug)
    if request.GET.get("again"):
        request.session.pop(_skipped_key(project), None)
        if not request.htmx:
            return redirect("write", slug=slug)
    fragment = request.htmx and not request.htmx.history_restore_request
    return render(request, "_write_item.html" if fragment else "write.html", _write_context(request, project))


@require(LABEL)
@require_POST
def write_submit(request, slug, prompt_id):
    project = get_object_or_404(Project, slug=slug)
    prompt = get_object_or_404(Prompt, pk=prompt_id, project=project)
    text = request.POST.get("text", "")
    try:
        demonstrating.demonstration_write(
            labeler=request.user, prompt=prompt, text=text, time_spent_ms=_int_or_none(request.POST.get("time_spent_ms"))
        )
    except LabelingError as exc:
        if not request.htmx:
            messages.error(request, str(exc))
            return redirect("write", slug=slug)
        return render(request, "_write_item.html", _write_context(request, project, prompt=prompt, text=text, error=str(exc)), status=422)
    if not request.htmx:
        messages.success(request, "Answer saved.")
        return redirect("write", slug=slug)
    return render(request, "_write_item.html", _write_context(request, project, saved="Answer saved; it awaits an admin's review."))


@require(LABEL)
@require_POST
def write_skip(request, slug, prompt_id):
    """Pass on a prompt: it does not come back in this session (``?again=1`` brings the skipped ones back)."""
    project = get_object_or_404(Project, slug=slug)
    key = _skipped_key(project)
    skipped = [prompt for prompt in request.session.get(key, []) if prompt != prompt_id]
    request.session[key] = (skipped + [prompt_id])[-MAX_REMEMBERED_SKIPS:]
    if not request.htmx:
        return redirect("write", slug=slug)
    return render(request, "_write_item.html", _write_context(request, project, saved="Skipped."))


def _write_context(request, project, prompt=None, **extra):
    skipped = request.session.get(_skipped_key(project), [])
    if prompt is None:
        prompt = demonstrating.prompt_to_write(labeler=request.user, project=project, exclude=skipped)
    return {
        "project": project,
        "prompt": prompt,
        "writing": project.demonstration_mode == Project.DemonstrationMode.WRITE,
        "progress": demonstrating.write_progress(request.user, project),
        "skipped": len(skipped),
        "max_chars": MAX_DEMONSTRATION_CHARS,
        **extra,
    }


def _skipped_key(project) -> str:
    return SKIPPED_SESSION_KEY.format(project=project.pk)


# --- the editor on the label page -----------------------------------------------------------------------------------


def editor_after_ranking(ranking: Ranking):
    """The editor to show right after a ranking was submitted, or None where the project asks for no edit."""
    return demonstrating.editor_for_labeler(ranking) if demonstrating.can_edit(ranking) else None


def editor_awaiting(labeler, project):
    """In "edit_required": the editor of the labeler's latest unedited ranking, shown before any new item."""
    ranking = demonstrating.ranking_awaiting_edit(labeler=labeler, project=project)
    return demonstrating.editor_for_labeler(ranking) if ranking else None


def editor_requested(request, project):
    """The editor asked for in the label page's URL (``?edit=<ranking>&response=<letter>``): after a plain form post,
    and to start from another response of a tie. None when that ranking cannot be edited (now)."""
    ranking_id = int64(request.GET.get("edit", ""))
    if ranking_id is None:
        return None
    ranking = _own_ranking(request, project, ranking_id).first()
    if ranking is None or not demonstrating.can_edit(ranking):
        return None
    try:
        return demonstrating.editor_for_labeler(ranking, request.GET.get("response") or None)
    except LabelingError:
        return demonstrating.editor_for_labeler(ranking)


def editor_url(project, ranking_id: int) -> str:
    return f"{reverse('label', args=[project.slug])}?edit={ranking_id}"


@require(LABEL)
@require_POST
def label_edit(request, slug, ranking_id):
    """Submit the edit of a ranking's best response; the next item follows (or the editor again, with the error)."""
    from annotation.labeling_views import _next_item_context

    project = get_object_or_404(Project, slug=slug)
    ranking = get_object_or_404(_own_ranking(request, project, ranking_id))
    letter = request.POST.get("response") or None
    text = request.POST.get("text", "")
    try:
        demonstrating.demonstration_edit(
            labeler=request.user, ranking=ranking, text=text, time_spent_ms=_int_or_none(request.POST.get("time_spent_ms")),
            candidate=demonstrating.candidate_for_letter(ranking, letter),
        )
    except LabelingError as exc:
        editable = demonstrating.can_edit(ranking)
        if not request.htmx:
            messages.error(request, str(exc))
            return redirect(editor_url(project, ranking.pk) if editable else reverse("label", args=[slug]))
        if not editable:  # already edited (a second submit), or the project stopped asking: on to the next item
            return render(request, "_label_item.html", _next_item_context(request, project, error=str(exc)), status=422)
        try:
            editor = demonstrating.editor_for_labeler(ranking, letter)
        except LabelingError:
            editor = demonstrating.editor_for_labeler(ranking)
        context = {"project": project, "editor": editor, "text": text, "error": str(exc), "progress": selectors.labeler_progress(request.user, project)}
        return render(request, "_label_item.html", context, status=422)
    saved = "Edit saved; it awaits an admin's review."
    if not request.htmx:
        messages.success(request, saved)
        return redirect("label", slug=slug)
    return render(request, "_label_item.html", _next_item_context(request, project, saved=saved))


@require(LABEL)
@require_POST
def label_edit_skip(request, slug, ranking_id):
    """Pass on the edit (where edits are optional): the next item."""
    from annotation.labeling_views import _next_item_context

    project = get_object_or_404(Project, slug=slug)
    ranking = get_object_or_404(_own_ranking(request, project, ranking_id))
    try:
        demonstrating.demonstration_skip_edit(labeler=request.user, ranking=ranking)
    except LabelingError as exc:
        if not request.htmx:
            messages.error(request, str(exc))
            return redirect("label", slug=slug)
        return render(request, "_label_item.html", _next_item_context(request, project, error=str(exc)), status=422)
    if not request.htmx:
        return redirect("label", slug=slug)
    return render(request, "_label_item.html", _next_item_context(request, project, saved="Edit skipped."))


def _own_ranking(request, project, ranking_id):
    return Ranking.objects.select_related("item__project", "item__prompt").filter(
        pk=ranking_id, labeler=request.user, item__project=project
    )


# --- lists -----------------------------------------------------------------------------------------------------------


@require(LABEL)
def my_demonstrations(request, slug):
    """A labeler's own demonstrations: status and the reviewer's reason; an edit with its diff (never a model name)."""
    project = get_object_or_404(Project, slug=slug)
    page = Paginator(demonstrating.demonstrations_of(request.user, project), DEMONSTRATIONS_PER_PAGE).get_page(request.GET.get("page"))
    rows = [{"demonstration": d, "letter": demonstrating.edited_letter(d)} for d in page]
    counts = {status: 0 for status in Demonstration.Status.values}
    for status in Demonstration.objects.filter(labeler=request.user, project=project).values_list("status", flat=True):
        counts[status] += 1
    return render(request, "my_demonstrations.html", {"project": project, "page": page, "rows": rows, "counts": counts})


@require(MANAGE)
def review_list(request, slug):
    """The admins' review queue: pending first; filters by status, source and labeler; accept or reject in place."""
    project = get_object_or_404(Project, slug=slug)
    status = request.GET.get("status", "")
    source = request.GET.get("source", "")
    labeler = int64(request.GET.get("labeler", ""))
    status = status if status in Demonstration.Status.values else ""
    source = source if source in Demonstration.Source.values else ""
    queue = demonstrating.review_queue(project, status=status, source=source, labeler=labeler)
    page = Paginator(queue, DEMONSTRATIONS_PER_PAGE).get_page(request.GET.get("page"))
    labelers = (
        Demonstration.objects.filter(project=project, labeler__isnull=False)
        .values_list("labeler_id", "labeler__username").distinct().order_by("labeler__username")
    )
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "project": project, "page": page, "counts": demonstrating.demonstration_counts(project),
        "filters": {"status": status, "source": source, "labeler": labeler}, "query": query.urlencode(),
        "statuses": Demonstration.Status.choices, "sources": Demonstration.Source.choices, "labelers": labelers,
        "max_reason": MAX_REVIEW_REASON,
    }
    return render(request, "demonstration_review.html", context)


@require(MANAGE)
@require_POST
def review(request, slug, demonstration_id):
    """Accept or reject one demonstration; htmx gets its row back, showing the decision (or the refusal)."""
    project = get_object_or_404(Project, slug=slug)
    demonstration = get_object_or_404(Demonstration, pk=demonstration_id, project=project)
    error = None
    try:
        demonstration = demonstrating.demonstration_review(
            demonstration=demonstration, reviewer=request.user, decision=request.POST.get("decision", ""),
            reason=request.POST.get("reason", ""),
        )
    except LabelingError as exc:
        error = str(exc)
    if not request.htmx:
        if error:
            messages.error(request, error)
        else:
            messages.success(request, f"Demonstration {demonstration.pk} {demonstration.get_status_display().lower()}.")
        return redirect(request.POST.get("next") if _safe_next(request.POST.get("next", ""), slug) else reverse("demonstration_review", args=[slug]))
    demonstration = demonstrating.review_queue(project).get(pk=demonstration.pk)
    context = {
        "project": project, "demonstration": demonstration, "error": error, "reviewed": not error, "max_reason": MAX_REVIEW_REASON,
        "oob_counts": demonstrating.demonstration_counts(project),  # the page's counts, swapped out of band
    }
    return render(request, "_demonstration_row.html", context, status=422 if error else 200)


def _safe_next(url: str, slug: str) -> bool:
    return url.startswith(reverse("demonstration_review", args=[slug]))


def _int_or_none(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
