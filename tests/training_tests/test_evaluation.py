"""Evaluations in-process on tiny real models: generation with the transformers backend, scoring with a real reward
adapter, the judge's figures recomputed from the stored rows, blind human comparisons, the leaderboard, refusals and
permissions. (The worker path and the command are in test_evaluation_worker.py.)"""

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from annotation.labeling import assignment_next, ranking_submit
from annotation.models import PreferencePair, RankingItem
from annotation.pairs import pair_filter_from, selected_pairs
from config.jobs import job_cancel
from generation.models import Candidate, ModelVersion
from tests.factories import ProjectFactory, PromptFactory, user_with_role
from tests.tiny_models import build_reward_adapter
from training import evaluation as evaluations
from training import stats
from training.models import Evaluation, EvaluationResponse, HumanComparison, TrainingRun

SAMPLING = {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 6, "seed": 3}


@pytest.fixture(scope="session")
def judge_adapter(tiny_model, tmp_path_factory):
    return str(build_reward_adapter(tiny_model, tmp_path_factory.mktemp("judge")))


@pytest.fixture
def versions(db, tiny_model, tiny_adapter, judge_adapter):
    base = ModelVersion.objects.create(name="zeta-base", base_model=tiny_model)
    tuned = ModelVersion.objects.create(name="zeta-tuned", base_model=tiny_model, adapter_path=tiny_adapter, parent=base)
    judge = ModelVersion.objects.create(name="zeta-judge", base_model=tiny_model, adapter_path=judge_adapter, kind="reward")
    return base, tuned, judge


@pytest.fixture
def project(db):
    project = ProjectFactory(responses_per_item=4)
    for n in range(3):
        PromptFactory(project=project, split="heldout", messages=[{"role": "user", "content": f"Held-out question {n}?"}])
    PromptFactory(project=project, messages=[{"role": "user", "content": "A training question?"}])
    return project


def pair_of(evaluation):
    (pair,) = evaluation.results["pairs"]
    return pair


def evaluate(project, versions, judge=None, samples=2, **kwargs):
    evaluation = evaluations.evaluation_create(
        project=project, versions=versions, judge=judge, prompt_selection=kwargs.pop("prompts", {"mode": "heldout"}),
        sampling=SAMPLING, samples=samples, backend="transformers", **kwargs,
    )
    evaluation = evaluations.evaluation_execute(evaluation.pk)
    assert evaluation.status == "succeeded", evaluation.error
    return evaluation


def test_an_evaluation_generates_scores_and_reports_every_pair(project, versions):
    base, tuned, judge = versions
    evaluation = evaluate(project, [base, tuned], judge)
    assert evaluation.work_done == evaluation.work_total == 3 * 2 * 2 * 2  # prompts x versions x samples, generated then scored
    assert evaluation.device == "cpu"
    responses = list(EvaluationResponse.objects.filter(evaluation=evaluation))
    assert len(responses) == 12 and all(r.score is not None and r.num_tokens > 0 for r in responses)
    # Evaluation output never reaches the labeling queue or the pairs.
    assert not Candidate.objects.exists() and not RankingItem.objects.exists() and not PreferencePair.objects.exists()

    # The judge's win rate, worked out from the stored scores: sample i meets sample i, a prompt is the mean of its meetings.
    score = {(r.eval_prompt_id, r.model_version_id, r.sample): r.score for r in responses}
    per_prompt = [
        np.mean([stats.outcome(score[(p, base.pk, s)], score[(p, tuned.pk, s)]) for s in (0, 1)])
        for p in sorted({r.eval_prompt_id for r in responses})
    ]
    (pair,) = evaluation.results["pairs"]
    assert (pair["a"], pair["b"]) == ("zeta-base", "zeta-tuned")
    assert pair["win_rate"]["value"] == pytest.approx(np.mean(per_prompt))
    assert pair["win_rate"]["count"] == 3 and pair["wins"] + pair["ties"] + pair["losses"] == 6
    assert pair["win_rate"]["low"] <= pair["win_rate"]["value"] <= pair["win_rate"]["high"]
    figures = {row["name"]: row for row in evaluation.results["versions"]}
    base_rewards = [np.mean([score[(p, base.pk, s)] for s in (0, 1)]) for p in sorted({r.eval_prompt_id for r in responses})]
    assert figures["zeta-base"]["mean_reward"]["value"] == pytest.approx(np.mean(base_rewards))
    assert figures["zeta-tuned"]["mean_length"]["count"] == 3


def test_same_sampling_and_seed_give_every_version_the_same_draws(project, versions, tiny_model):
    """Two registrations of the same weights answer identically: the comparison is between models, not seeds."""
    base, _, judge = versions
    twin = ModelVersion.objects.create(name="zeta-twin", base_model=tiny_model)
    evaluation = evaluate(project, [base, twin], judge, samples=1)
    texts = {}
    for response in evaluation.responses.all():
        texts.setdefault(response.eval_prompt_id, set()).add(response.text)
    assert all(len(answers) == 1 for answers in texts.values())
    (pair,) = evaluation.results["pairs"]
    assert pair["ties"] == 3 and pair["win_rate"]["value"] == 0.5


def test_blind_comparisons_give_the_human_win_rate_and_the_leaderboard(project, versions):
    base, tuned, judge = versions
    evaluation = evaluate(project, [base, tuned], judge)
    pairwise = ProjectFactory(responses_per_item=2, slug="blind")
    with pytest.raises(ValidationError, match="K = 2"):
        evaluations.evaluation_send_to_labelers(evaluation=evaluation, project=project, version_a=tuned, version_b=base)
    sent = evaluations.evaluation_send_to_labelers(evaluation=evaluation, project=pairwise, version_a=tuned, version_b=base)
    assert sent.sent + sent.identical == 6 and sent.sent > 0
    again = evaluations.evaluation_send_to_labelers(evaluation=evaluation, project=pairwise, version_a=base, version_b=tuned)
    assert (again.sent, again.already) == (0, sent.sent)
    assert RankingItem.objects.filter(project=pairwise, origin="evaluation").count() == sent.sent
    assert set(pairwise.prompts.values_list("split", flat=True)) == {"heldout"}

    # A labeler prefers the tuned version's response every time.
    labeler = user_with_role("labeler")
    for _ in range(sent.sent):
        item = assignment_next(labeler=labeler, project=pairwise).item
        comparison = HumanComparison.objects.get(item=item)
        tuned_first = comparison.response_a.model_version_id == tuned.pk
        better, worse = (comparison.candidate_a_id, comparison.candidate_b_id) if tuned_first else (comparison.candidate_b_id, comparison.candidate_a_id)
        ranking_submit(labeler=labeler, item_id=item.pk, tiers=[[better], [worse]])

    (human,) = evaluations.human_results(evaluation)["pairs"]
    assert (human["a"], human["b"], human["sent"], human["verdicts"]) == ("zeta-base", "zeta-tuned", sent.sent, sent.sent)
    assert human["win_rate"]["value"] == 0.0  # the base never won
    judge_picked_tuned = [
        c.response_a.score != c.response_b.score
        for c in HumanComparison.objects.select_related("response_a", "response_b")
    ]
    decided = [
        (c.response_a.score > c.response_b.score) == (c.response_a.model_version_id == tuned.pk)
        for c in HumanComparison.objects.select_related("response_a", "response_b") if c.response_a.score != c.response_b.score
    ]
    assert human["agreement"]["count"] == sum(judge_picked_tuned)
    assert human["agreement"]["value"] == pytest.approx(np.mean(decided))

    # Their pairs are marked with their origin: a pair filter can leave them out.
    everything = selected_pairs([pairwise], pair_filter_from({}))
    assert everything.count() == sent.sent
    assert not selected_pairs([pairwise], pair_filter_from({"include_evaluation": False})).exists()

    board = evaluations.leaderboard(project)
    assert [row["version"].name for row in board] == ["zeta-tuned", "zeta-base"]
    top = board[0]
    assert top["human"].rating.count == sent.sent and (top["human"].wins, top["human"].losses) == (sent.sent, 0)
    assert top["judge"].rating.count == 6
    assert board[1]["version"].parent is None and top["version"].parent == base

    # The project's rounds: the run that made the tuned version, and its evaluation against its parent.
    run = TrainingRun.objects.create(kind="dpo", base_version=base, status="succeeded", train_pairs_used=40, eval_pairs_used=5)
    run.projects.add(project)
    ModelVersion.objects.filter(pk=tuned.pk).update(training_run=run)
    (round_,) = evaluations.rounds(project)
    assert round_["version"] == tuned and round_["evaluation"] == evaluation
    assert round_["human"]["value"] == 1.0 and round_["human"]["count"] == human["win_rate"]["count"]
    assert round_["judge"]["value"] == pytest.approx(1 - pair_of(evaluation)["win_rate"]["value"])  # stored as base over tuned
    assert round_["judge"]["low"] == pytest.approx(1 - pair_of(evaluation)["win_rate"]["high"])


def test_a_labeler_never_sees_that_an_item_comes_from_an_evaluation(client, project, versions):
    base, tuned, judge = versions
    evaluation = evaluate(project, [base, tuned], judge, samples=1)
    pairwise = ProjectFactory(responses_per_item=2, slug="blind-page")
    evaluations.evaluation_send_to_labelers(evaluation=evaluation, project=pairwise, version_a=tuned, version_b=base)
    labeler = user_with_role("labeler")
    client.force_login(labeler)
    page = client.get(reverse("label", args=[pairwise.slug])).content.decode()
    assert "Held-out question" in page
    assert "zeta" not in page and "valuation" not in page
    assert client.get(reverse("evaluation_detail", args=[evaluation.pk])).status_code == 403
    assert client.get(reverse("leaderboard", args=[project.slug])).status_code == 403
    assert client.get(reverse("project_rounds", args=[project.slug])).status_code == 403
    assert client.get(f"/api/evaluations/{evaluation.pk}/").status_code == 403
    assert client.get(f"/api/projects/{project.slug}/leaderboard/").status_code == 403


def test_refusals_name_the_problem(project, versions):
    base, tuned, judge = versions
    cases = [
        ({"versions": [base]}, "2 to 4"),
        ({"versions": [base, base]}, "once"),
        ({"versions": [base, judge]}, "Only policy models"),
        ({"judge": tuned}, "not a reward model"),
        ({"samples": 9}, "1 to 8"),
        ({"sampling": {**SAMPLING, "temperature": 0}, "samples": 2}, "Greedy"),
        ({"prompt_selection": {"mode": "typed", "typed": ["  "]}}, "Type at least one prompt"),
        ({"prompt_selection": {"mode": "ids", "ids": [10**9]}}, "None of these prompts"),
        ({"prompt_selection": {"mode": "everything"}}, "heldout, ids or typed"),
    ]
    for change, message in cases:
        arguments = {"project": project, "versions": [base, tuned], "judge": judge, "prompt_selection": {"mode": "heldout"},
                     "sampling": SAMPLING, **change}
        with pytest.raises(ValidationError, match=message):
            evaluations.evaluation_create(**arguments)
    no_heldout = ProjectFactory()
    PromptFactory(project=no_heldout)
    with pytest.raises(ValidationError, match="no held-out prompts"):
        evaluations.evaluation_create(project=no_heldout, versions=[base, tuned], prompt_selection={"mode": "heldout"}, sampling=SAMPLING)
    queued = evaluations.evaluation_create(project=project, versions=[base, tuned], prompt_selection={"mode": "heldout"}, sampling=SAMPLING)
    with pytest.raises(ValidationError, match="once the evaluation has succeeded"):
        evaluations.evaluation_send_to_labelers(
            evaluation=queued, project=ProjectFactory(responses_per_item=2), version_a=base, version_b=tuned
        )
    assert Evaluation.objects.count() == 1  # nothing left behind by the refusals


def test_a_typed_side_by_side_through_the_api_and_its_page(client, project, versions):
    base, tuned, _ = versions
    admin, researcher = user_with_role("admin"), user_with_role("researcher")
    client.force_login(researcher)
    body = {"project": project.slug, "models": ["zeta-tuned", "zeta-base"], "prompts": {"mode": "typed", "typed": ["Name a colour."]},
            "sampling": {**SAMPLING, "temperature": 0}}
    assert client.post("/api/evaluations/", body, content_type="application/json").status_code == 403
    client.force_login(admin)
    created = client.post("/api/evaluations/", body, content_type="application/json")
    assert created.status_code == 201, created.content
    assert created.json()["models"] == ["zeta-tuned", "zeta-base"] and created.json()["judge"] is None
    evaluation = evaluations.evaluation_execute(created.json()["id"])
    assert evaluation.status == "succeeded" and evaluation.results == {} and evaluation.responses.count() == 2
    assert evaluation.prompts.get().prompt is None  # typed: no prompt was added to the project

    client.force_login(researcher)
    detail = client.get(f"/api/evaluations/{evaluation.pk}/").json()
    assert detail["judge_results"] is None and detail["status"] == "succeeded"
    page = client.get(reverse("evaluation_detail", args=[evaluation.pk])).content.decode()
    assert "Name a colour." in page and page.index("zeta-tuned</h3>") < page.index("zeta-base</h3>")
    assert "Send to labelers" not in page  # admins only
    rounds = client.get(reverse("project_rounds", args=[project.slug]))
    assert rounds.status_code == 200 and "No training run on this project yet." in rounds.content.decode()
    assert f'hx-get="{reverse("project_rounds", args=[project.slug])}"' in client.get(reverse("project_detail", args=[project.slug])).content.decode()
    assert client.get(reverse("evaluation_create", args=[project.slug])).status_code == 403
    bad = client.post("/api/evaluations/", {**body, "models": ["zeta-base"]}, content_type="application/json")
    assert bad.status_code == 403  # a researcher is refused before the body is read
    client.force_login(admin)
    bad = client.post("/api/evaluations/", {**body, "models": ["zeta-base", "nobody"]}, content_type="application/json")
    assert bad.status_code == 400 and "models" in bad.json()


def test_a_failed_or_cancelled_evaluation_says_so_and_keeps_what_it_saved(project, versions):
    base, tuned, judge = versions
    broken = ModelVersion.objects.create(name="zeta-broken", base_model="/nonexistent/model")
    evaluation = evaluations.evaluation_create(
        project=project, versions=[base, broken], judge=judge, prompt_selection={"mode": "heldout"}, sampling=SAMPLING,
        backend="transformers",
    )
    evaluation = evaluations.evaluation_execute(evaluation.pk)
    assert evaluation.status == "failed" and "/nonexistent/model" in evaluation.error
    assert evaluation.responses.filter(model_version=base).count() == 3  # the first version's answers are kept
    assert evaluation.results == {}

    queued = evaluations.evaluation_create(project=project, versions=[base, tuned], prompt_selection={"mode": "heldout"}, sampling=SAMPLING)
    assert job_cancel(job=queued).status == "cancelled"
    assert evaluations.evaluation_execute(queued.pk).status == "cancelled"
