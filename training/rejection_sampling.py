"""Rejection sampling: a policy generates N responses per prompt, a judge reward model scores all of them, and a
selection rule over that reward matrix picks what to fine-tune on.

A job (GPU queue, the lifecycle of config.jobs) runs in three phases, counted in ``work_done`` over ``work_total``
(prompts x N generated, then as many scored):

1. **generating** - the policy answers every prompt N times with the job's sampling and seed, exactly as an
   evaluation does (training.generate_and_score); each batch is saved as RejectionSample rows as it comes;
2. **scoring** - the judge scores every response (training.trainers.scoring's RewardScorer, batch by batch);
3. **selecting** - a rule of training.selection over the reward matrix (best-of-n, top-k-per-prompt,
   top-k-overall; ties: higher score, then lower prompt id, then lower sample number). An empty response, or one
   repeating the text of a better one of its prompt, is never selected.

What is selected becomes Demonstration rows (source rejection_sampling, accepted, no labeler, the job, policy,
judge, score, rule and sampling in their metadata), each linked from its RejectionSample. With ``make_pairs`` each
prompt's best response over its worst (when the judge scored them apart) also becomes a preference pair of source
``judge``, its two responses stored as the prompt's candidates (source rejection_sampling); judge pairs stay out of
training and exports unless a pair filter names the source (annotation.pairs.DEFAULT_SOURCES).

The selection, its demonstrations and pairs, and the job's figures are written in the transaction that marks the
job succeeded: a job that fails, is cancelled or loses its worker selects nothing (its responses and their scores
are kept, to read). The selection trains an SFT run in one step (``rejection_sampling_train``).
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import transaction

from annotation.importing import content_hash
from annotation.models import Demonstration, PreferencePair, Project, Prompt
from config.jobs import job_dispatch_on_commit, job_update, run_job, stop_if_cancelled
from generation.backends.base import PromptRequest
from generation.jobs import sampling_from
from generation.models import Candidate, GenerationJob, ModelVersion
from training import generate_and_score
from training import selection as rules
from training.models import RejectionSample, RejectionSamplingJob, TrainingRun

MIN_N, MAX_N = 2, 64
MAX_RESPONSES = 50_000  # prompts x N per job: each is a row, generated and scored
PROMPT_MODES = ("train", "ids")
Selection = RejectionSamplingJob.Selection


# --- launch ---------------------------------------------------------------------------------------------------------


def rejection_sampling_create(
    *,
    project: Project,
    policy: ModelVersion,
    judge: ModelVersion,
    n: int,
    selection: str = Selection.BEST_OF_N,
    k: int = 1,
    sampling: dict,
    prompt_selection: dict | None = None,
    backend: str = GenerationJob.Backend.AUTO,
    make_pairs: bool = False,
    requested_by: AbstractUser | None = None,
) -> RejectionSamplingJob:
    """Validate and queue a job on the GPU queue (after the transaction commits). ``prompt_selection``: the
    project's train split (``{"mode": "train"}``, the default) or ``{"mode": "ids", "ids": [...]}``."""
    checked = sampling_from(sampling)
    if policy.kind != ModelVersion.Kind.POLICY:
        raise ValidationError({"policy": f"{policy.name} is a reward model: only a policy model generates responses."})
    if judge is None:
        raise ValidationError({"judge": "Choose the reward model that scores the responses."})
    generate_and_score.check_judge(judge)
    if not _whole(n) or not MIN_N <= n <= MAX_N:
        raise ValidationError({"n": f"Responses per prompt must be a whole number from {MIN_N} to {MAX_N}."})
    if checked.temperature == 0:
        raise ValidationError({"temperature": "Greedy decoding (temperature 0) gives one answer per prompt: sample (temperature above 0) to have N to choose from."})
    if selection not in Selection.values:
        raise ValidationError({"selection": f"Choose one of {', '.join(Selection.values)}."})
    if backend not in GenerationJob.Backend.values:
        raise ValidationError({"backend": f"Choose one of {', '.join(GenerationJob.Backend.values)}."})
    prompt_selection = prompt_selection or {"mode": "train"}
    prompts = rejection_prompts(project, prompt_selection)
    _check_k(selection, k, n, len(prompts))
    if len(prompts) * n > MAX_RESPONSES:
        raise ValidationError({"n": f"{len(prompts):,} prompts x {n} responses is {len(prompts) * n:,} responses: at most {MAX_RESPONSES:,} per job (fewer prompts, or a smaller N)."})
    with transaction.atomic():
        job = RejectionSamplingJob.objects.create(
            project=project, policy=policy, judge=judge, n=n, selection=selection, k=k, make_pairs=bool(make_pairs),
            sampling=checked.as_dict(), prompt_selection=prompt_selection, backend=backend, requested_by=requested_by,
            prompts_total=len(prompts), work_total=2 * len(prompts) * n,
        )
        job_dispatch_on_commit(job)
    return job


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_k(rule: str, k, n: int, prompts: int) -> None:
    if not _whole(k) or k < 1:
        raise ValidationError({"k": "K must be a whole number of at least 1."})
    if rule == Selection.BEST_OF_N and k != 1:
        raise ValidationError({"k": "Best of N keeps one response per prompt (K = 1): for more, choose top K per prompt."})
    if rule == Selection.TOP_K_PER_PROMPT and k > n:
        raise ValidationError({"k": f"Top K per prompt keeps at most the N = {n} responses of each prompt: K may be 1 to {n}."})
    if rule == Selection.TOP_K_OVERALL and k > prompts * n:
        raise ValidationError({"k": f"Top K over all prompts keeps at most every response ({prompts:,} prompts x {n} = {prompts * n:,})."})


def rejection_prompts(project: Project, selection: dict) -> list[tuple[int, list[dict]]]:
    """(id, messages) of each prompt: ``train`` (the project's train split) or ``ids`` (the listed prompts)."""
    mode = selection.get("mode") if isinstance(selection, dict) else None
    if mode == "train":
        prompts = project.prompts.filter(split=Prompt.Split.TRAIN).order_by("id")
        empty = f"{project.name} has no training prompts: import some, or list prompts."
    elif mode == "ids":
        prompts = generate_and_score.listed_prompts(project, selection.get("ids"), "rejection sampling job")
        empty = f"None of these prompts belongs to {project.name}."
    else:
        raise ValidationError({"prompt_selection": "mode must be train or ids."})
    return generate_and_score.prompt_messages(prompts, empty=empty, what="rejection sampling job")


# --- the work, in the GPU worker ------------------------------------------------------------------------------------


def rejection_sampling_execute(job_id: int) -> RejectionSamplingJob:
    """Generate, score and select to the end in this process (the GPU worker's task)."""
    return run_job(RejectionSamplingJob, job_id, work=_sample_and_score, succeed=_select)


def _sample_and_score(job: RejectionSamplingJob) -> None:
    # The prompts are selected again as the job starts (the train split may have grown since it was queued).
    prompts = rejection_prompts(job.project, job.prompt_selection)
    job_update(job, phase=RejectionSamplingJob.Phase.GENERATING, prompts_total=len(prompts), work_total=2 * len(prompts) * job.n)
    requests = [PromptRequest(key=pk, messages=messages, n=job.n) for pk, messages in prompts]
    generate_and_score.generate(
        job, job.policy, requests, sampling_from(job.sampling),
        lambda generation, sample: RejectionSample(
            job=job, prompt_id=generation.key, sample=sample, text=generation.text, num_tokens=generation.num_tokens,
            finish_reason=generation.finish_reason,
        ),
    )
    job_update(job, phase=RejectionSamplingJob.Phase.SCORING)
    rows = list(job.samples.order_by("prompt_id", "sample").values_list("pk", "prompt__messages", "text"))
    generate_and_score.score(job, job.judge, RejectionSample, rows)
    job_update(job, phase=RejectionSamplingJob.Phase.SELECTING)
    stop_if_cancelled(job)


def reward_matrices(samples: list[RejectionSample]) -> tuple[dict[int, list[float | None]], dict[int, list[float | None]]]:
    """Every score by prompt and sample number, and the same with the responses no rule may select masked (None):
    an empty text, or the text of a better-scored (or, scored alike, earlier) response of the prompt."""
    scores: dict[int, list[float | None]] = {}
    eligible: dict[int, list[float | None]] = {}
    by_prompt: dict[int, list[RejectionSample]] = {}
    for sample in samples:
        by_prompt.setdefault(sample.prompt_id, []).append(sample)
    for prompt_id, rows in by_prompt.items():
        width = max(row.sample for row in rows) + 1
        scores[prompt_id] = [None] * width
        eligible[prompt_id] = [None] * width
        seen: set[str] = set()
        for row in sorted(rows, key=lambda r: (-(r.score if r.score is not None else float("-inf")), r.sample)):
            scores[prompt_id][row.sample] = row.score
            if row.text.strip() and row.text not in seen:
                eligible[prompt_id][row.sample] = row.score
            seen.add(row.text)
    return scores, eligible


def _select(job: RejectionSamplingJob, _result) -> dict:
    """In the transaction that marks the job succeeded: the selection, its demonstrations and pairs, the figures."""
    samples = list(job.samples.all())
    by_cell = {(sample.prompt_id, sample.sample): sample for sample in samples}
    scores, eligible = reward_matrices(samples)
    chosen = rules.select(job.selection, eligible, job.k)
    provenance = {
        "job": job.pk, "policy": job.policy.name, "judge": job.judge.name, "selection": job.selection, "k": job.k,
        "n": job.n, "sampling": job.sampling,
    }
    demonstrations = Demonstration.objects.bulk_create(
        Demonstration(
            project_id=job.project_id, prompt_id=prompt_id, text=by_cell[(prompt_id, sample)].text,
            text_hash=content_hash(by_cell[(prompt_id, sample)].text), source=Demonstration.Source.REJECTION_SAMPLING,
            status=Demonstration.Status.ACCEPTED, labeler=None,
            metadata={**provenance, "sample": sample, "score": by_cell[(prompt_id, sample)].score},
        )
        for prompt_id, sample in chosen
    )
    picked = []
    for (prompt_id, sample), demonstration in zip(chosen, demonstrations, strict=True):
        row = by_cell[(prompt_id, sample)]
        row.selected, row.demonstration = True, demonstration
        picked.append(row)
    RejectionSample.objects.bulk_update(picked, ["selected", "demonstration"], batch_size=1000)
    pairs = _judge_pairs(job, by_cell, rules.best_and_worst(eligible)) if job.make_pairs else 0
    results = rules.summary(scores, chosen)
    return {"selected_count": len(chosen), "pairs_created": pairs, "results": results}


def _judge_pairs(job: RejectionSamplingJob, by_cell: dict, best_and_worst: dict[int, tuple[int, int]]) -> int:
    """Each prompt's best response over its worst as a pair of source judge (its two responses stored as the
    prompt's candidates, or the candidates already holding those texts); returns how many pairs are new."""
    rows = [(by_cell[(prompt_id, best)], by_cell[(prompt_id, worst)]) for prompt_id, (best, worst) in best_and_worst.items()]
    candidates = _candidates(job, [row for pair in rows for row in pair])
    existing = set(
        PreferencePair.objects.filter(source=PreferencePair.Source.JUDGE, judge=job.judge, prompt_id__in=best_and_worst)
        .values_list("chosen_id", "rejected_id")
    )
    new = []
    for chosen, rejected in rows:
        key = (candidates[(chosen.prompt_id, chosen.text)], candidates[(rejected.prompt_id, rejected.text)])
        if key not in existing:
            existing.add(key)
            new.append(PreferencePair(
                project_id=job.project_id, prompt_id=chosen.prompt_id, chosen_id=key[0], rejected_id=key[1],
                source=PreferencePair.Source.JUDGE, judge=job.judge,
            ))
    PreferencePair.objects.bulk_create(new, batch_size=1000)
    return len(new)


def _candidates(job: RejectionSamplingJob, rows: list[RejectionSample]) -> dict[tuple[int, str], int]:
    """The candidate id of each response's (prompt, text): the prompt's candidate with that text where there is one
    (a prompt holds each text once), else a new one from the policy, source rejection_sampling."""
    wanted = {(row.prompt_id, content_hash(row.text)): row for row in rows}
    found = {
        (prompt_id, text_hash): pk
        for prompt_id, text_hash, pk in Candidate.objects.filter(prompt_id__in={row.prompt_id for row in rows}).values_list("prompt_id", "text_hash", "pk")
        if (prompt_id, text_hash) in wanted
    }
    missing = [
        Candidate(
            prompt_id=row.prompt_id, text=row.text, text_hash=key[1], source=Candidate.Source.REJECTION_SAMPLING,
            model_version=job.policy, sampling=job.sampling, num_tokens=row.num_tokens, finish_reason=row.finish_reason,
        )
        for key, row in wanted.items() if key not in found
    ]
    for candidate in Candidate.objects.bulk_create(missing, batch_size=1000):
        found[(candidate.prompt_id, candidate.text_hash)] = candidate.pk
    return {(row.prompt_id, row.text): found[key] for key, row in wanted.items()}


# --- the one-step SFT run ---------------------------------------------------------------------------------------------


def sft_pair_filter(job: RejectionSamplingJob) -> dict:
    """The demonstration filter of exactly this job's selection (an SFT run's or an SFT export's)."""
    return {"sources": [Demonstration.Source.REJECTION_SAMPLING.value], "rejection_jobs": [job.pk]}


def rejection_sampling_train(
    *,
    job: RejectionSamplingJob,
    settings: dict | None = None,
    eval_fraction: float | None = None,
    requested_by: AbstractUser | None = None,
) -> TrainingRun:
    """Queue an SFT run of the job's policy on the job's selection (training.services validates the settings).
    ``eval_fraction``: the share of the selection's prompts held out for evaluation when none is marked held out
    (None: the demonstration filter's default; 0: train on everything)."""
    from training.services import training_run_create

    if job.status != RejectionSamplingJob.Status.SUCCEEDED:
        raise ValidationError({"job": f"Train on the selection once the job has succeeded (it is {job.get_status_display().lower()})."})
    if not job.selected_count:
        raise ValidationError({"job": "This job selected nothing to train on."})
    return training_run_create(
        kind=TrainingRun.Kind.SFT.value, base_version=job.policy, projects=[job.project],
        pair_filter={**sft_pair_filter(job), **({} if eval_fraction is None else {"eval_fraction": eval_fraction})},
        settings=settings or {}, requested_by=requested_by,
    )


# --- reading the reward matrix ----------------------------------------------------------------------------------------


def matrix_prompt_ids(job: RejectionSamplingJob):
    """The ids of the prompts the job has responses for, in order (a page of the matrix is a slice of them)."""
    return job.samples.order_by("prompt_id").values_list("prompt_id", flat=True).distinct()


def matrix_rows(job: RejectionSamplingJob, prompt_ids, *, best_first: bool = False) -> list[dict]:
    """One row per prompt of ``prompt_ids`` (in that order): its messages, every response (by sample number, or
    best score first) and its spread (highest score minus lowest)."""
    prompt_ids = list(prompt_ids)
    messages = dict(Prompt.objects.filter(pk__in=prompt_ids).values_list("pk", "messages"))
    samples: dict[int, list[RejectionSample]] = {}
    for sample in job.samples.filter(prompt_id__in=prompt_ids).order_by("prompt_id", "sample"):
        samples.setdefault(sample.prompt_id, []).append(sample)
    rows = []
    for prompt_id in prompt_ids:
        mine = samples.get(prompt_id, [])
        scores = [sample.score for sample in mine if sample.score is not None]
        if best_first:
            mine = sorted(mine, key=lambda s: (s.score is None, -(s.score or 0.0), s.sample))
        rows.append({
            "prompt": prompt_id, "messages": messages.get(prompt_id, []), "samples": mine,
            "spread": max(scores) - min(scores) if scores else None,
        })
    return rows
