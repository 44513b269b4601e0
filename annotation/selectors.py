"""Reads for projects and prompts."""

from django.db.models import Count, Q, QuerySet

from annotation.models import Project, Prompt


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

