"""Reads for projects, prompts, the labeling queue, dashboards and agreement."""

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from datetime import timedelta
from statistics import median

from django.conf import settings
from django.core.cache import cache
from django.contrib.auth import get_user_model
from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from annotation import agreement
from annotation.agreement import ItemRankings
from annotation.models import Assignment, ItemFlag, Project, Prompt, Ranking, RankingItem
from annotation.ranking import display_order, letter_tiers, letters_for, ranking_text
from config.jobs import Job
from generation.models import Candidate, GenerationJob


def projects_with_counts() -> QuerySet[Project]:
    return Project.objects.annotate(
        prompt_count=Count("prompts", distinct=True),
        pair_count=Count("pairs", distinct=True),
    ).order_by("name")


def project_stats(project: Project) -> dict[str, int]:
    prompts = project.prompts.aggregate(
        total=Count("id"),
        heldout=Count("id", filter=Q(split=Prompt.Split.HELDOUT)),
    )
    return {
        "prompts": prompts["total"],
        "heldout_prompts": prompts["heldout"],
        "items": project.items.count(),
        "human_pairs": project.pairs.filter(source="human").count(),
        "imported_pairs": project.pairs.filter(source="import").count(),
    }


def prompts_filtered(project: Project, *, q: str = "", split: str = "") -> QuerySet[Prompt]:
    prompts = project.prompts.annotate(candidate_count=Count("candidates")).order_by("id")
    if split:
        prompts = prompts.filter(split=split)
    if q:
        prompts = prompts.filter(Q(messages__icontains=q) | Q(external_id=q))
    return prompts


PROJECT_CACHE_SECONDS = 10


@dataclass(frozen=True)
class ShownResponse:
    id: int
    letter: str
    text: str


@dataclass(frozen=True)
class ItemForLabeler:
    """What a labeler sees of an item: the conversation and the responses, lettered in their own shuffled order.
    Nothing about where a response came from."""

    item_id: int
    messages: list[dict]
    responses: list[ShownResponse]
    expires_at: object

    @property
    def letters(self) -> dict[int, str]:
        return {response.id: response.letter for response in self.responses}


def item_for_labeler(assignment: Assignment) -> ItemForLabeler:
    item_id = assignment.item_id
    rows = list(Candidate.objects.filter(items__pk=item_id).values_list("id", "text", "prompt__messages"))
    texts = {candidate_id: text for candidate_id, text, _ in rows}
    letters = letters_for(display_order(list(texts), labeler_id=assignment.labeler_id, item_id=item_id))
    return ItemForLabeler(
        item_id=item_id,
        messages=rows[0][2] if rows else [],
        responses=sorted((ShownResponse(id=i, letter=letter, text=texts[i]) for i, letter in letters.items()), key=lambda r: r.letter),
        expires_at=assignment.expires_at,
    )


def project_for_labeling(slug: str) -> Project | None:
    """The project behind a labeling request, cached for a few seconds: it is read twice per ranked item."""
    key = _project_cache_key(slug)
    project = cache.get(key)
    if project is None:
        project = Project.objects.filter(slug=slug).first()
        if project is not None:
            cache.set(key, project, PROJECT_CACHE_SECONDS)
    return project


def forget_project_for_labeling(project: Project) -> None:
    cache.delete(_project_cache_key(project.slug))


def _project_cache_key(slug: str) -> str:
    return f"prefloop:project:{slug}"


@dataclass(frozen=True)
class GenerationUnderway:
    """A generation job still filling this project's queue, as a labeler may see it: no model names."""

    id: int
    running: bool  # False: queued
    percent: int | None  # of the job's work (its progress counters), where it knows its total


def generation_underway(project: Project) -> GenerationUnderway | None:
    """The generation job filling this project's queue now, if any: a running one before a queued one, oldest first."""
    jobs = GenerationJob.objects.filter(project=project, status__in=(Job.Status.QUEUED, Job.Status.RUNNING))
    job = min(jobs, key=lambda job: (job.status != Job.Status.RUNNING, job.created_at, job.pk), default=None)
    if job is None:
        return None
    done, total = job.counts
    return GenerationUnderway(
        id=job.pk, running=job.status == Job.Status.RUNNING, percent=min(100, done * 100 // total) if total else None
    )


def labeler_progress(labeler, project: Project) -> dict[str, int]:
    """The labeler's own counts: ranked in this project, and items still open to them."""
    ranked = Ranking.objects.filter(labeler=labeler, item__project=project).count()
    done = Assignment.objects.filter(labeler=labeler, item=OuterRef("pk")).exclude(status=Assignment.Status.LEASED)
    open_items = (
        project.items.filter(status=RankingItem.Status.ACTIVE, rankings_count__lt=project.rankings_per_item)
        .exclude(Exists(done))
        .count()
    )
    return {"ranked": ranked, "open": open_items}


@dataclass(frozen=True)
class RankingRow:
    ranking: Ranking
    text: str
    revisable: bool


def rankings_of(labeler, project: Project | None = None, limit: int = 50) -> list[RankingRow]:
    """A labeler's recent rankings, each as ``D > C > A = B`` in the letters that labeler saw."""
    rankings = Ranking.objects.filter(labeler=labeler).select_related("item__prompt", "item__project").order_by("-created_at")
    if project is not None:
        rankings = rankings.filter(item__project=project)
    window_start = timezone.now() - timedelta(minutes=settings.PREFLOOP_LEASE_MINUTES)
    return [
        RankingRow(ranking=ranking, text=ranking_as_text(ranking), revisable=ranking.created_at > window_start)
        for ranking in rankings[:limit]
    ]


def ranking_as_text(ranking: Ranking) -> str:
    """``D > C > A = B`` in the letters its labeler saw (the shuffle depends only on labeler, item and ids)."""
    shown = [response for tier in ranking.tiers for response in tier]
    order = display_order(shown, labeler_id=ranking.labeler_id, item_id=ranking.item_id)
    return ranking_text(ranking.tiers, letters_for(order))


def ranking_letters(ranking: Ranking) -> list[list[str]]:
    """The ranking as its labeler gave it: tiers of the letters they saw (``[["D"], ["C"], ["A", "B"]]``)."""
    shown = [response for tier in ranking.tiers for response in tier]
    return letter_tiers(ranking.tiers, display_order(shown, labeler_id=ranking.labeler_id, item_id=ranking.item_id))


def project_dashboard(project: Project) -> dict:
    items = project.items.aggregate(
        total=Count("id"),
        ready=Count("id", filter=Q(status=RankingItem.Status.ACTIVE)),
        ranked=Count("id", filter=Q(rankings_count__gte=1)),
        complete=Count("id", filter=Q(rankings_count__gte=project.rankings_per_item)),
        flagged=Count("id", filter=Q(status=RankingItem.Status.FLAGGED)),
        retired=Count("id", filter=Q(status=RankingItem.Status.RETIRED)),
    )
    per_labeler = list(
        Ranking.objects.filter(item__project=project)
        .values("labeler_id", "labeler__username")
        .annotate(rankings=Count("id"))
        .order_by("-rankings")
    )
    times = _times_by_labeler(project)
    agreement_summary = project_agreement(project)
    agreement_by_labeler = {entry["labeler_id"]: entry for entry in agreement_summary["labelers"]}
    for row in per_labeler:
        row["median_seconds"] = _median_seconds(times.get(row["labeler_id"], []))
        row["agreement"] = agreement_by_labeler.get(row["labeler_id"])
    return {
        "items": items,
        "rankings": sum(row["rankings"] for row in per_labeler),
        "median_seconds": _median_seconds([t for values in times.values() for t in values]),
        "labelers": per_labeler,
        "skips": Assignment.objects.filter(item__project=project, status=Assignment.Status.SKIPPED).count(),
        "agreement": agreement_summary,
    }


def _times_by_labeler(project: Project) -> dict[int, list[int]]:
    times: dict[int, list[int]] = {}
    for labeler_id, ms in Ranking.objects.filter(item__project=project).values_list("labeler_id", "time_spent_ms"):
        times.setdefault(labeler_id, []).append(ms)
    return times


def _median_seconds(values: list[int]) -> float | None:
    return round(median(values) / 1000, 1) if values else None


def open_flags(project: Project):
    return (
        ItemFlag.objects.filter(item__project=project, status=ItemFlag.Status.OPEN)
        .select_related("item__prompt", "labeler")
        .order_by("created_at")
    )


def project_agreement(project: Project) -> dict:
    """Agreement on the project's items ranked by more than one labeler (see annotation.agreement)."""
    summary = agreement.summarize(_multiply_ranked_items([project]))
    names = dict(get_user_model().objects.filter(pk__in=summary["labelers"]).values_list("pk", "username"))
    summary["labelers"] = [{"labeler_id": pk, "username": names.get(pk, ""), **values} for pk, values in summary["labelers"].items()]
    return summary


def item_agreement(projects) -> dict[int, float | None]:
    """Pairwise agreement of each item ranked by two or more labelers, by item id."""
    summary = agreement.summarize(_multiply_ranked_items(projects))
    return {row["item"]: row["pairwise_agreement"] for row in summary["items"]}


def _multiply_ranked_items(projects) -> Iterator[ItemRankings]:
    """Streamed item by item, so a project of millions of rankings is never held in memory at once."""
    rankings = Ranking.objects.filter(item__project__in=projects, item__rankings_count__gte=2).order_by("item_id", "id")
    rows = rankings.values_list("item_id", "labeler_id", "tiers").iterator(chunk_size=2000)
    for item_id, group in groupby(rows, key=itemgetter(0)):
        yield ItemRankings(item_id, {labeler_id: tiers for _, labeler_id, tiers in group})
