"""Evaluations: did a round make the policy better, by how much, and how sure are we?

An evaluation (GPU queue, the job lifecycle of config.jobs) has 2 to 4 policy versions answer the same prompts (the
project's held-out split, a list of its prompts, or prompts typed in) with the same sampling and seed, ``samples``
responses each. Without a judge it is a side-by-side to read. With one (a reward version) every response is scored,
and each pair of versions gets the judge's win rate with a 95% bootstrap interval over prompts, its length-matched
win rate, and each version its mean reward and length (training.stats holds the statistics).

Responses are stored as EvaluationResponse rows, not candidates, so they can never reach the labeling queue or a
training run by accident (and two versions may well give the same text: that is a tie, not a duplicate). An admin
may send pairs of them to labelers as blind K=2 items of a project (``evaluation_send_to_labelers``): each becomes
candidates and an item marked with its origin, and its rankings are the human verdicts shown beside the judge's.
The leaderboard fits Bradley–Terry ratings on all judge and, separately, all human comparisons of a project.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import transaction

from annotation.importing import content_hash
from annotation.labeling import ranking_item_create
from annotation.models import Project, Prompt, RankingItem
from config.jobs import job_dispatch_on_commit, job_update, run_job
from generation.backends.base import PromptRequest
from generation.jobs import sampling_from
from generation.models import Candidate, GenerationJob, ModelVersion
from training import generate_and_score, selectors, stats
from training.models import Evaluation, EvaluationModel, EvaluationPrompt, EvaluationResponse, HumanComparison

MIN_VERSIONS, MAX_VERSIONS = 2, 4
MAX_SAMPLES = 8
MAX_TYPED_PROMPTS, MAX_TYPED_CHARS = 20, 20_000
MAX_SEND = 2_000  # blind comparisons per request (each is a few rows): send again for more, the sent ones are skipped


# --- launch ---------------------------------------------------------------------------------------------------------


def evaluation_create(
    *,
    project: Project,
    versions: Sequence[ModelVersion],
    prompt_selection: dict,
    sampling: dict,
    judge: ModelVersion | None = None,
    samples: int = 1,
    backend: str = GenerationJob.Backend.AUTO,
    name: str = "",
    requested_by: AbstractUser | None = None,
) -> Evaluation:
    """Validate and queue an evaluation on the GPU queue (after the transaction commits)."""
    checked = sampling_from(sampling)
    _check_versions(versions)
    generate_and_score.check_judge(judge)
    if not isinstance(samples, int) or isinstance(samples, bool) or not 1 <= samples <= MAX_SAMPLES:
        raise ValidationError({"samples": f"Responses per prompt must be a whole number from 1 to {MAX_SAMPLES}."})
    if checked.temperature == 0 and samples > 1:
        raise ValidationError({"samples": "Greedy decoding (temperature 0) gives one answer per prompt: use 1 sample, or sample."})
    if backend not in GenerationJob.Backend.values:
        raise ValidationError({"backend": f"Choose one of {', '.join(GenerationJob.Backend.values)}."})
    prompts = evaluation_prompts(project, prompt_selection)
    per_response = 2 if judge else 1
    with transaction.atomic():
        evaluation = Evaluation.objects.create(
            project=project, judge=judge, name=name.strip()[:200], sampling=checked.as_dict(), samples=samples,
            prompt_selection=prompt_selection, backend=backend, requested_by=requested_by,
            work_total=len(prompts) * len(versions) * samples * per_response,
        )
        EvaluationModel.objects.bulk_create(
            EvaluationModel(evaluation=evaluation, model_version=version, position=n) for n, version in enumerate(versions)
        )
        EvaluationPrompt.objects.bulk_create(
            EvaluationPrompt(evaluation=evaluation, prompt_id=prompt_id, messages=messages, position=n)
            for n, (prompt_id, messages) in enumerate(prompts)
        )
        job_dispatch_on_commit(evaluation)
    return evaluation


def _check_versions(versions: Sequence[ModelVersion]) -> None:
    if not MIN_VERSIONS <= len(versions) <= MAX_VERSIONS:
        raise ValidationError({"versions": f"Choose {MIN_VERSIONS} to {MAX_VERSIONS} model versions to compare."})
    if len({version.pk for version in versions}) != len(versions):
        raise ValidationError({"versions": "Each model version may appear once."})
    if any(version.kind != ModelVersion.Kind.POLICY for version in versions):
        raise ValidationError({"versions": "Only policy models answer prompts; a reward model can be the judge."})


def evaluation_prompts(project: Project, selection: dict) -> list[tuple[int | None, list[dict]]]:
    """(project prompt id or None, messages) of each prompt to evaluate: ``heldout`` (the project's held-out split),
    ``ids`` (the listed prompts of the project) or ``typed`` (texts typed in, each a one-turn conversation)."""
    mode = selection.get("mode") if isinstance(selection, dict) else None
    if mode == "typed":
        return [(None, [{"role": "user", "content": text}]) for text in _typed_texts(selection.get("typed"))]
    prompts = project.prompts.order_by("id")
    if mode == "heldout":
        prompts = prompts.filter(split=Prompt.Split.HELDOUT)
        empty = f"{project.name} has no held-out prompts: mark some as held out, or list prompts."
    elif mode == "ids":
        prompts = generate_and_score.listed_prompts(project, selection.get("ids"), "evaluation")
        empty = f"None of these prompts belongs to {project.name}."
    else:
        raise ValidationError({"prompt_selection": "mode must be heldout, ids or typed."})
    return generate_and_score.prompt_messages(prompts, empty=empty, what="evaluation")


def _typed_texts(typed) -> list[str]:
    if not isinstance(typed, list) or not all(isinstance(text, str) for text in typed):
        raise ValidationError({"prompt_selection": "typed must be a list of prompt texts."})
    texts = [text.strip() for text in typed if text.strip()]
    if not texts:
        raise ValidationError({"prompt_selection": "Type at least one prompt."})
    if len(texts) > MAX_TYPED_PROMPTS or any(len(text) > MAX_TYPED_CHARS for text in texts):
        raise ValidationError({"prompt_selection": f"At most {MAX_TYPED_PROMPTS} typed prompts of at most {MAX_TYPED_CHARS:,} characters."})
    return texts


# --- the work, in the GPU worker ------------------------------------------------------------------------------------


def evaluation_execute(job_id: int) -> Evaluation:
    """Generate, score and compute to the end in this process (the GPU worker's task)."""
    return run_job(Evaluation, job_id, work=_evaluate)


def _evaluate(evaluation: Evaluation) -> None:
    prompts = list(evaluation.prompts.values_list("pk", "messages"))
    job_update(evaluation, phase=Evaluation.Phase.GENERATING)
    for entry in evaluation.entries.select_related("model_version"):
        _generate(evaluation, entry.model_version, prompts)
    if evaluation.judge_id:
        job_update(evaluation, phase=Evaluation.Phase.SCORING)
        _score(evaluation)
        job_update(evaluation, results=judge_results(evaluation))


def _generate(evaluation: Evaluation, version: ModelVersion, prompts: list[tuple[int, list[dict]]]) -> None:
    requests = [PromptRequest(key=pk, messages=messages, n=evaluation.samples) for pk, messages in prompts]
    generate_and_score.generate(
        evaluation, version, requests, sampling_from(evaluation.sampling),
        lambda generation, sample: EvaluationResponse(
            evaluation=evaluation, eval_prompt_id=generation.key, model_version=version, sample=sample,
            text=generation.text, num_tokens=generation.num_tokens, finish_reason=generation.finish_reason,
        ),
    )


def _score(evaluation: Evaluation) -> None:
    rows = list(evaluation.responses.order_by("id").values_list("pk", "eval_prompt__messages", "text"))
    generate_and_score.score(evaluation, evaluation.judge, EvaluationResponse, rows)


# --- figures --------------------------------------------------------------------------------------------------------


def _stat_responses(evaluation: Evaluation) -> list[stats.Response]:
    return [
        stats.Response(prompt, name, sample, score, length)
        for prompt, name, sample, score, length in evaluation.responses.values_list(
            "eval_prompt_id", "model_version__name", "sample", "score", "num_tokens"
        )
    ]


def version_names(evaluation: Evaluation) -> list[str]:
    return [entry.model_version.name for entry in evaluation.entries.select_related("model_version")]


def judge_results(evaluation: Evaluation) -> dict:
    """Per version its mean reward and length; per pair of versions (in column order) the judge's win rates."""
    responses = _stat_responses(evaluation)
    names = version_names(evaluation)
    return {
        "versions": [
            {
                "name": name,
                "mean_reward": stats.per_prompt_mean(responses, name, lambda r: r.score).as_dict(),
                "mean_length": stats.per_prompt_mean(responses, name, lambda r: r.length).as_dict(),
            }
            for name in names
        ],
        "pairs": [stats.judge_pair(responses, a, b).as_dict() for a, b in combinations(names, 2)],
    }


@dataclass(frozen=True)
class Verdict:
    """One labeler's ranking of one blind comparison, oriented to ``a``."""

    comparison_id: int
    prompt: int
    a: str
    b: str
    outcome: float


def human_verdicts(comparisons) -> list[Verdict]:
    """Every ranking of these HumanComparison rows as a verdict for its response a (a flagged item has none)."""
    verdicts = []
    rows = comparisons.select_related("response_a__model_version", "response_b__model_version").prefetch_related("item__rankings")
    for comparison in rows:
        for ranking in comparison.item.rankings.all():
            tier = {candidate: n for n, members in enumerate(ranking.tiers) for candidate in members}
            a, b = tier[comparison.candidate_a_id], tier[comparison.candidate_b_id]
            verdicts.append(Verdict(
                comparison.pk, comparison.response_a.eval_prompt_id, comparison.response_a.model_version.name,
                comparison.response_b.model_version.name, 1.0 if a < b else 0.0 if a > b else 0.5,
            ))
    return verdicts


def human_results(evaluation: Evaluation) -> dict:
    """Per pair of versions: the labelers' win rate (bootstrapped over prompts), the comparisons sent and answered,
    and how often the judge agreed with them."""
    comparisons = evaluation.human_comparisons.all()
    verdicts = human_verdicts(comparisons)
    judge = {
        pk: stats.outcome(score_a, score_b)
        for pk, score_a, score_b in comparisons.values_list("pk", "response_a__score", "response_b__score")
        if score_a is not None and score_b is not None
    }
    sent = {}
    for a, b in comparisons.values_list("response_a__model_version__name", "response_b__model_version__name"):
        sent[frozenset((a, b))] = sent.get(frozenset((a, b)), 0) + 1
    pairs = []
    for a, b in combinations(version_names(evaluation), 2):
        mine = [_oriented(v, a) for v in verdicts if {v.a, v.b} == {a, b}]
        by_prompt: dict[int, list[float]] = {}
        for verdict in mine:
            by_prompt.setdefault(verdict.prompt, []).append(verdict.outcome)
        oriented_judge = {
            v.comparison_id: judge[v.comparison_id] if v.a == a else 1.0 - judge[v.comparison_id]
            for v in verdicts if {v.a, v.b} == {a, b} and v.comparison_id in judge
        }
        pairs.append({
            "a": a, "b": b, "sent": sent.get(frozenset((a, b)), 0), "verdicts": len(mine),
            "win_rate": stats.bootstrap_mean([sum(o) / len(o) for _, o in sorted(by_prompt.items())]).as_dict(),
            "agreement": stats.agreement(oriented_judge, {v.comparison_id: v.outcome for v in mine}).as_dict(),
        })
    return {"pairs": pairs}


def _oriented(verdict: Verdict, a: str) -> Verdict:
    """The verdict for ``a`` (flipped when ``a`` was the comparison's second response)."""
    if verdict.a == a:
        return verdict
    return Verdict(verdict.comparison_id, verdict.prompt, verdict.b, verdict.a, 1.0 - verdict.outcome)


# --- blind human comparisons ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    sent: int
    identical: int  # both responses had the same text: a tie without asking anyone
    already: int  # sent before


def evaluation_send_to_labelers(
    *, evaluation: Evaluation, project: Project, version_a: ModelVersion, version_b: ModelVersion, limit: int | None = None
) -> Sent:
    """Put pairs of responses (a's sample i against b's sample i of a prompt) in front of the project's labelers as
    blind K=2 items. The prompt is copied into the project as held out (so its pairs never train a run's train split
    by accident), the responses become its candidates, and the item is marked as coming from an evaluation."""
    names = version_names(evaluation)
    if project.responses_per_item != 2:
        raise ValidationError({"project": f"{project.name} shows {project.responses_per_item} responses per item; blind comparisons need a project with K = 2."})
    if version_a.pk == version_b.pk or not {version_a.name, version_b.name} <= set(names):
        raise ValidationError({"versions": f"Choose two different versions of this evaluation ({', '.join(names)})."})
    if evaluation.status != Evaluation.Status.SUCCEEDED:
        raise ValidationError({"evaluation": "Send responses once the evaluation has succeeded."})
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_SEND):
        raise ValidationError({"limit": f"The number of pairs must be a whole number from 1 to {MAX_SEND:,}."})
    limit = limit or MAX_SEND
    by_key = {(r.eval_prompt_id, r.model_version_id, r.sample): r for r in evaluation.responses.select_related("eval_prompt")}
    sent = identical = already = 0
    rng = random.Random(evaluation.pk)
    for (prompt_id, version_id, sample), response_a in sorted(by_key.items()):
        response_b = by_key.get((prompt_id, version_b.pk, sample)) if version_id == version_a.pk else None
        if response_b is None or sent >= limit:
            continue
        if response_a.text == response_b.text:
            identical += 1
        elif HumanComparison.objects.filter(response_a__in=(response_a, response_b), response_b__in=(response_a, response_b)).exists():
            already += 1
        else:
            first, second = (response_a, response_b) if rng.random() < 0.5 else (response_b, response_a)
            _send_one(evaluation, project, first, second)
            sent += 1
    return Sent(sent, identical, already)


@transaction.atomic
def _send_one(evaluation: Evaluation, project: Project, response_a: EvaluationResponse, response_b: EvaluationResponse) -> None:
    messages = response_a.eval_prompt.messages
    prompt, _ = Prompt.objects.get_or_create(
        project=project, content_hash=content_hash(messages),
        defaults={"messages": messages, "source": f"evaluation {evaluation.pk}", "split": Prompt.Split.HELDOUT},
    )
    candidates = [
        Candidate.objects.get_or_create(
            prompt=prompt, text_hash=content_hash(response.text),
            defaults={"text": response.text, "source": Candidate.Source.EVALUATION, "model_version": response.model_version,
                      "num_tokens": response.num_tokens, "finish_reason": response.finish_reason, "sampling": evaluation.sampling},
        )[0]
        for response in (response_a, response_b)
    ]
    item = ranking_item_create(prompt=prompt, candidates=candidates, origin=RankingItem.Origin.EVALUATION)
    HumanComparison.objects.create(
        evaluation=evaluation, item=item, response_a=response_a, response_b=response_b,
        candidate_a=candidates[0], candidate_b=candidates[1],
    )


# --- leaderboard ----------------------------------------------------------------------------------------------------



def leaderboard(project: Project) -> list[dict]:
    """Every policy version evaluated in the project, rated by a Bradley–Terry fit on all judge comparisons and,
    separately, on all human ones (95% bootstrap intervals, counts), with its parent, the run that made it and that
    run's held-out preference accuracy; best first (by the human rating where there is one)."""
    evaluations = list(project.evaluations.filter(status=Evaluation.Status.SUCCEEDED))
    judge_games: list[stats.Comparison] = []
    for evaluation in evaluations:
        if evaluation.judge_id:
            responses = _stat_responses(evaluation)
            for a, b in combinations(version_names(evaluation), 2):
                judge_games += stats.judge_comparisons(responses, a, b)
    human_games = [
        stats.Comparison(v.a, v.b, v.outcome)
        for v in human_verdicts(HumanComparison.objects.filter(evaluation__in=evaluations))
    ]
    judge, human = ({r.model: r for r in stats.ratings(games)} for games in (judge_games, human_games))
    names = {entry.model_version.name for e in evaluations for entry in e.entries.select_related("model_version")}
    versions = ModelVersion.objects.filter(name__in=names).select_related("parent", "training_run")
    rows = [
        {"version": v, "judge": judge.get(v.name), "human": human.get(v.name), "heldout_accuracy": selectors.heldout_accuracy(v)}
        for v in versions
    ]
    return sorted(rows, key=lambda row: tuple(-(row[k].rating.value if row[k] else float("-inf")) for k in ("human", "judge")))


# --- rounds ---------------------------------------------------------------------------------------------------------


def rounds(project: Project) -> list[dict]:
    """The project's loop, one row per training run, oldest first: the pairs it used, the version it registered,
    and that version's latest evaluation against its parent (judge and human win rates, for the new version)."""
    evaluations = list(project.evaluations.filter(status=Evaluation.Status.SUCCEEDED).prefetch_related("entries"))
    rows = []
    for run in project.training_runs.select_related("base_version").order_by("created_at"):
        version = ModelVersion.objects.filter(training_run=run).select_related("parent").first()
        row = {"run": run, "version": version, "evaluation": None, "judge": None, "human": None}
        parent_id = version.parent_id if version else None
        if version and version.kind == ModelVersion.Kind.POLICY and parent_id:
            evaluation = next((e for e in evaluations if {version.pk, parent_id} <= {m.model_version_id for m in e.entries.all()}), None)
            if evaluation is not None:
                row["evaluation"] = evaluation
                row["judge"] = _pair_for(evaluation.results.get("pairs", []), version.name, "win_rate")
                row["human"] = _pair_for(human_results(evaluation)["pairs"], version.name, "win_rate")
        rows.append(row)
    return rows


def _pair_for(pairs: list[dict], name: str, key: str) -> dict | None:
    """A pair's estimate as ``name``'s (a win rate for b is one minus a's, its interval mirrored)."""
    for pair in pairs:
        if name in (pair["a"], pair["b"]) and pair[key]["value"] is not None:
            estimate = pair[key]
            if pair["a"] == name:
                return estimate
            return {"value": 1 - estimate["value"], "low": 1 - estimate["high"], "high": 1 - estimate["low"], "count": estimate["count"]}
    return None
