"""Reward models at work: scoring jobs over a project's candidates, and the labeling queue ordered by their scores.

A scoring job (GPU queue, one process per job) scores every candidate of a project with a reward version and saves
the scores batch by batch (a score per candidate and reward model; scoring again replaces it). When the project's
queue is ordered by that reward model, each item's reward spread (highest minus lowest score of its candidates) is
refreshed at the end: the smaller the spread, the harder the model finds the item, and the sooner labelers see it.
"""

from __future__ import annotations

import time

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import transaction
from annotation.models import Project, RankingItem
from config.jobs import job_dispatch_on_commit, job_update, run_job, stop_if_cancelled
from generation.models import Candidate, ModelVersion
from training.generate_and_score import judge_spec
from training.models import CandidateScore, ScoringJob

BATCH_SIZE = 16


def _check_reward_version(version: ModelVersion) -> None:
    if version.kind != ModelVersion.Kind.REWARD or not version.adapter_path:
        raise ValidationError({"reward_version": "Choose a reward model (a reward adapter trained here or registered)."})


def scoring_job_create(*, project: Project, reward_version: ModelVersion, requested_by: AbstractUser | None = None) -> ScoringJob:
    _check_reward_version(reward_version)
    total = Candidate.objects.filter(prompt__project=project).count()
    if not total:
        raise ValidationError({"project": "This project has no candidates to score yet."})
    with transaction.atomic():
        job = ScoringJob.objects.create(project=project, reward_version=reward_version, candidates_total=total, requested_by=requested_by)
        job_dispatch_on_commit(job)
    return job


def scoring_job_execute(job_id: int) -> ScoringJob:
    """Score to the end in this process (the GPU worker's task). The job row records how it ended."""
    return run_job(ScoringJob, job_id, work=_score_and_refresh)


def _score_and_refresh(job: ScoringJob) -> None:
    """Score, then refresh the queue order whatever happened: the scores saved so far are kept and count."""
    try:
        _score(job)
    finally:
        project = Project.objects.get(pk=job.project_id)
        if project.queue_order == Project.QueueOrder.REWARD_SPREAD and project.queue_reward_version_id == job.reward_version_id:
            item_spreads_update(project=project)


def _score(job: ScoringJob) -> None:
    from training.trainers.scoring import RewardScorer

    version = job.reward_version
    candidates = list(
        Candidate.objects.filter(prompt__project=job.project).order_by("id").values_list("pk", "prompt__messages", "text")
    )
    started = time.monotonic()
    scorer = RewardScorer(**judge_spec(version))
    job_update(job, load_seconds=time.monotonic() - started, device=scorer.device)
    batches = scorer.score([(messages, text) for _, messages, text in candidates], batch_size=BATCH_SIZE)
    done = 0
    for batch_scores in batches:
        batch = candidates[done : done + len(batch_scores)]
        CandidateScore.objects.bulk_create(
            [
                CandidateScore(candidate_id=pk, reward_version=version, score=score, scoring_job=job)
                for (pk, _, _), score in zip(batch, batch_scores, strict=True)
            ],
            update_conflicts=True,
            unique_fields=["candidate", "reward_version"],
            update_fields=["score", "scoring_job"],
        )
        done += len(batch_scores)
        job_update(job, candidates_done=done)
        stop_if_cancelled(job)


def project_queue_order_set(*, project: Project, order: str, reward_version: ModelVersion | None = None) -> Project:
    """Order the labeling queue by fewest rankings (the default) or hardest for a reward model first."""
    if order not in Project.QueueOrder.values:
        raise ValidationError({"queue_order": f"Choose one of {', '.join(Project.QueueOrder.values)}."})
    if order == Project.QueueOrder.REWARD_SPREAD:
        if reward_version is None:
            raise ValidationError({"reward_version": "Choose the reward model whose scores order the queue."})
        _check_reward_version(reward_version)
        if not CandidateScore.objects.filter(reward_version=reward_version, candidate__prompt__project=project).exists():
            raise ValidationError({"reward_version": "This reward model has not scored this project yet: run a scoring job first."})
    else:
        reward_version = None
    with transaction.atomic():
        project.queue_order, project.queue_reward_version = order, reward_version
        project.save(update_fields=["queue_order", "queue_reward_version", "updated_at"])
        item_spreads_update(project=project)
    from annotation.selectors import forget_project_for_labeling

    forget_project_for_labeling(project)
    return project


def item_spreads_update(*, project: Project) -> int:
    """Each item's spread of rewards under the project's queue reward model (None where a candidate is unscored)."""
    version_id = project.queue_reward_version_id if project.queue_order == Project.QueueOrder.REWARD_SPREAD else None
    scores = dict(
        CandidateScore.objects.filter(reward_version_id=version_id, candidate__prompt__project=project).values_list("candidate_id", "score")
    ) if version_id else {}
    by_item: dict[int, list[int]] = {}
    for item_id, candidate_id in RankingItem.candidates.through.objects.filter(rankingitem__project=project).values_list("rankingitem_id", "candidate_id"):
        by_item.setdefault(item_id, []).append(candidate_id)
    items = []
    for item_id, candidate_ids in by_item.items():
        values = [scores.get(candidate_id) for candidate_id in candidate_ids]
        spread = max(values) - min(values) if values and None not in values else None
        items.append(RankingItem(pk=item_id, reward_spread=spread))
    RankingItem.objects.bulk_update(items, ["reward_spread"], batch_size=1000)
    return len(items)
