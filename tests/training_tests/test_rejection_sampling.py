"""Rejection sampling in-process on tiny real models (generation with the transformers backend, scoring with a real
reward adapter): each rule's selection checked against the stored reward matrix, demonstrations and judge pairs with
their provenance, judge pairs left out of the default pair selection, the figures, refusals, cancel and failure
(nothing half-selected), the API and pages and who may use them. (The worker path and the command are in
test_rejection_sampling_worker.py; the rules on a hand-made matrix in test_selection.py.)"""

import statistics

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from annotation.models import Demonstration, PreferencePair, RankingItem
from annotation.pairs import pair_filter_from, selected_pairs
from config.jobs import job_cancel
from generation.models import Candidate, ModelVersion
from tests.factories import ProjectFactory, PromptFactory, user_with_role
from tests.tiny_models import build_reward_adapter
from training import rejection_sampling as service
from training import selection
from training.models import RejectionSample, RejectionSamplingJob, TrainingRun

SAMPLING = {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 6, "seed": 3}


@pytest.fixture(scope="session")
def judge_adapter(tiny_model, tmp_path_factory):
    return str(build_reward_adapter(tiny_model, tmp_path_factory.mktemp("rs-judge")))


@pytest.fixture
def versions(db, tiny_model, judge_adapter):
    policy = ModelVersion.objects.create(name="rs-policy", base_model=tiny_model)
    judge = ModelVersion.objects.create(name="rs-judge", base_model=tiny_model, adapter_path=judge_adapter, kind="reward")
    return policy, judge


@pytest.fixture
def project(db):
    project = ProjectFactory(slug="rs-project", responses_per_item=2)
    for n in range(3):
        PromptFactory(project=project, messages=[{"role": "user", "content": f"Train question {n}?"}])
    PromptFactory(project=project, split="heldout", messages=[{"role": "user", "content": "A held-out question?"}])
    return project


def sample(project, versions, **kwargs) -> RejectionSamplingJob:
    policy, judge = versions
    arguments = {"n": 4, "sampling": SAMPLING, "backend": "transformers", **kwargs}
    job = service.rejection_sampling_create(project=project, policy=policy, judge=judge, **arguments)
    job = service.rejection_sampling_execute(job.pk)
    assert job.status == "succeeded", job.error
    return job


def stored_matrix(job) -> dict[int, list[float | None]]:
    """The reward matrix as the test reads it from the rows: a response no rule may take (empty, or the text of a
    better one of its prompt) is None."""
    matrix, seen = {}, {}
    rows = sorted(job.samples.all(), key=lambda row: (-row.score, row.sample))
    for row in rows:
        matrix.setdefault(row.prompt_id, [None] * job.n)
        if row.text.strip() and row.text not in seen.setdefault(row.prompt_id, set()):
            matrix[row.prompt_id][row.sample] = row.score
        seen[row.prompt_id].add(row.text)
    return matrix


def selected_cells(job) -> set[tuple[int, int]]:
    return set(job.samples.filter(selected=True).values_list("prompt_id", "sample"))


def test_best_of_n_keeps_each_prompts_best_as_a_demonstration_and_makes_judge_pairs(project, versions):
    policy, judge = versions
    job = sample(project, versions, make_pairs=True)
    train = list(project.prompts.filter(split="train").order_by("id").values_list("pk", flat=True))
    assert job.prompts_total == 3 and job.work_done == job.work_total == 3 * 4 * 2  # generated, then scored
    assert job.phase == "selecting" and job.device == "cpu"
    rows = list(job.samples.all())
    assert len(rows) == 12 and sorted({row.prompt_id for row in rows}) == train  # the train split only
    assert all(row.score is not None for row in rows) and {row.sample for row in rows} == {0, 1, 2, 3}

    matrix = stored_matrix(job)
    assert selected_cells(job) == set(selection.best_of_n(matrix)) and job.selected_count == len(train)
    for prompt_id, row in matrix.items():  # the best selectable response of each prompt
        best = max(score for score in row if score is not None)
        assert RejectionSample.objects.get(job=job, prompt_id=prompt_id, selected=True).score == best

    demonstrations = Demonstration.objects.filter(source="rejection_sampling")
    assert demonstrations.count() == 3
    for demonstration in demonstrations:
        picked = demonstration.rejection_sample
        assert (picked.job, picked.selected, demonstration.text, demonstration.prompt_id) == (job, True, picked.text, picked.prompt_id)
        assert demonstration.status == "accepted" and demonstration.labeler is None and demonstration.project == project
        assert demonstration.metadata == {
            "job": job.pk, "policy": "rs-policy", "judge": "rs-judge", "selection": "best-of-n", "k": 1, "n": 4,
            "sampling": job.sampling, "sample": picked.sample, "score": picked.score,
        }

    # Judge pairs: each prompt's best over its worst, their responses stored as the policy's candidates.
    pairs = PreferencePair.objects.filter(source="judge")
    expected = selection.best_and_worst(matrix)
    assert job.pairs_created == pairs.count() == len(expected) > 0
    for pair in pairs.select_related("chosen", "rejected"):
        best, worst = expected[pair.prompt_id]
        assert pair.judge == judge and pair.ranking is None and pair.project == project
        assert pair.chosen.text == RejectionSample.objects.get(job=job, prompt_id=pair.prompt_id, sample=best).text
        assert pair.rejected.text == RejectionSample.objects.get(job=job, prompt_id=pair.prompt_id, sample=worst).text
        for candidate in (pair.chosen, pair.rejected):
            assert (candidate.source, candidate.model_version, candidate.sampling) == ("rejection_sampling", policy, job.sampling)
    assert not RankingItem.objects.exists()  # nothing reaches the labeling queue

    # Judge pairs never enter training or exports unless a filter names their source.
    assert not selected_pairs([project], pair_filter_from({})).exists()
    assert "judge" not in pair_filter_from({}).sources
    assert selected_pairs([project], pair_filter_from({"sources": ["judge"]})).count() == pairs.count()

    # The figures, worked out again from the stored scores.
    scores = [row.score for row in rows]
    picked = [row.score for row in rows if row.selected]
    results = job.results
    assert results["scores"]["count"] == 12 and results["scores"]["mean"] == pytest.approx(statistics.fmean(scores))
    assert results["scores"]["std"] == pytest.approx(statistics.pstdev(scores))
    assert (results["scores"]["min"], results["scores"]["max"]) == (min(scores), max(scores))
    assert sum(results["scores"]["histogram"]["counts"]) == 12 and sum(results["scores"]["histogram"]["selected"]) == 3
    assert results["selected"]["mean"] == pytest.approx(statistics.fmean(picked))
    assert results["gain"] == pytest.approx(statistics.fmean(picked) - statistics.fmean(scores)) and results["gain"] > 0
    assert results["per_prompt_spread"]["count"] == 3

    # Another job with the same judge does not duplicate its pairs.
    again = sample(project, versions, make_pairs=True)
    assert PreferencePair.objects.filter(source="judge").count() == pairs.count() + again.pairs_created
    assert again.pairs_created == 0  # same sampling and seed: the same responses, the same pairs


@pytest.mark.parametrize(("rule", "k"), [("top-k-per-prompt", 2), ("top-k-overall", 5)])
def test_the_top_k_rules_select_what_the_rule_says_over_the_stored_matrix(project, versions, rule, k):
    job = sample(project, versions, selection=rule, k=k, prompt_selection={"mode": "ids", "ids": list(project.prompts.values_list("pk", flat=True))})
    assert job.prompts_total == 4  # listed ids: the held-out prompt too
    matrix = stored_matrix(job)
    assert selected_cells(job) == set(selection.select(rule, matrix, k))
    assert job.selected_count == Demonstration.objects.filter(rejection_sample__job=job).count() == len(selected_cells(job))
    if rule == "top-k-per-prompt":
        per_prompt = {}
        for prompt_id, _ in selected_cells(job):
            per_prompt[prompt_id] = per_prompt.get(prompt_id, 0) + 1
        assert max(per_prompt.values()) == 2
    else:
        assert job.selected_count == 5
        cut = min(RejectionSample.objects.filter(job=job, selected=True).values_list("score", flat=True))
        assert all(score <= cut for score in RejectionSample.objects.filter(job=job, selected=False).values_list("score", flat=True))
    assert not PreferencePair.objects.exists()  # no pairs unless asked for


def test_refusals_name_the_problem(project, versions):
    policy, judge = versions
    cases = [
        ({"policy": judge}, "only a policy model"),
        ({"judge": policy}, "not a reward model"),
        ({"judge": None}, "Choose the reward model"),
        ({"n": 1}, "2 to 64"),
        ({"n": 65}, "2 to 64"),
        ({"n": 4, "sampling": {**SAMPLING, "temperature": 0}}, "Greedy"),
        ({"selection": "best-of-all"}, "Choose one of"),
        ({"selection": "best-of-n", "k": 2}, "Best of N keeps one"),
        ({"selection": "top-k-per-prompt", "k": 5}, "K may be 1 to 4"),
        ({"selection": "top-k-per-prompt", "k": 0}, "at least 1"),
        ({"selection": "top-k-overall", "k": 13}, "at most every response"),
        ({"prompt_selection": {"mode": "ids", "ids": [10**9]}}, "None of these prompts"),
        ({"prompt_selection": {"mode": "ids", "ids": []}}, "non-empty list"),
        ({"prompt_selection": {"mode": "heldout"}}, "train or ids"),
        ({"backend": "tpu"}, "Choose one of"),
        ({"sampling": {**SAMPLING, "top_p": 0}}, "top_p"),
    ]
    for change, message in cases:
        arguments = {"project": project, "policy": policy, "judge": judge, "n": 4, "sampling": SAMPLING, **change}
        with pytest.raises(ValidationError, match=message):
            service.rejection_sampling_create(**arguments)
    no_train = ProjectFactory()
    PromptFactory(project=no_train, split="heldout")
    with pytest.raises(ValidationError, match="no training prompts"):
        service.rejection_sampling_create(project=no_train, policy=policy, judge=judge, n=4, sampling=SAMPLING)
    with pytest.raises(ValidationError, match="at most 50,000 per job"):
        big = ProjectFactory()
        PromptFactory.create_batch(782, project=big)  # 782 x 64 = 50,048
        service.rejection_sampling_create(project=big, policy=policy, judge=judge, n=64, sampling=SAMPLING)
    assert not RejectionSamplingJob.objects.exists()  # nothing left behind by the refusals


def test_a_cancelled_job_keeps_its_responses_and_selects_nothing(project, versions):
    policy, judge = versions
    queued = service.rejection_sampling_create(project=project, policy=policy, judge=judge, n=4, sampling=SAMPLING)
    assert job_cancel(job=queued).status == "cancelled"
    assert service.rejection_sampling_execute(queued.pk).status == "cancelled"
    # A running job stops at its next batch: here the cancel is already asked for when the work starts.
    job = service.rejection_sampling_create(project=project, policy=policy, judge=judge, n=8, sampling=SAMPLING, backend="transformers")
    RejectionSamplingJob.objects.filter(pk=job.pk).update(cancel_requested=True)
    job = service.rejection_sampling_execute(job.pk)
    assert job.status == "cancelled" and job.phase == "generating"
    # It stopped in its first batch (transformers: 16 sequences, 2 prompts x 8): at the batch's end, keeping it, or
    # inside it (the in-batch progress checks the cancel too, every 1.5 s), keeping nothing.
    assert job.samples.count() in (0, 2 * 8)
    assert job.selected_count == 0 and not Demonstration.objects.exists() and not job.results


def test_a_failure_selects_nothing_not_even_half(project, versions, monkeypatch, tiny_model):
    policy, judge = versions
    broken = ModelVersion.objects.create(name="rs-broken-judge", base_model=tiny_model, adapter_path="/nonexistent/judge", kind="reward")
    job = service.rejection_sampling_create(project=project, policy=policy, judge=broken, n=2, sampling=SAMPLING, backend="transformers", make_pairs=True)
    job = service.rejection_sampling_execute(job.pk)
    assert job.status == "failed" and "/nonexistent/judge" in job.error
    assert job.samples.count() == 6 and job.phase == "scoring"  # the responses are kept, to read
    assert not Demonstration.objects.exists() and not PreferencePair.objects.exists()

    # A failure while writing the selection undoes what it had written: demonstrations, candidates and pairs.
    def broken_summary(*args, **kwargs):
        raise RuntimeError("the figures broke")

    monkeypatch.setattr(selection, "summary", broken_summary)
    job = service.rejection_sampling_create(project=project, policy=policy, judge=judge, n=2, sampling=SAMPLING, backend="transformers", make_pairs=True)
    job = service.rejection_sampling_execute(job.pk)
    assert job.status == "failed" and "the figures broke" in job.error
    assert job.samples.count() == 6 and all(score is not None for score in job.samples.values_list("score", flat=True))
    assert not job.samples.filter(selected=True).exists() and job.selected_count == 0
    assert not Demonstration.objects.exists() and not PreferencePair.objects.exists() and not Candidate.objects.exists()


def test_the_api_launches_lists_reads_pages_the_matrix_and_cancels(client, project, versions):
    admin, researcher, labeler = user_with_role("admin"), user_with_role("researcher"), user_with_role("labeler")
    body = {"project": project.slug, "policy": "rs-policy", "judge": "rs-judge", "n": 3, "selection": "top-k-per-prompt", "k": 2,
            "sampling": SAMPLING, "backend": "transformers", "make_pairs": True}
    client.force_login(researcher)
    assert client.post("/api/rejection-sampling/", body, content_type="application/json").status_code == 403
    client.force_login(admin)
    created = client.post("/api/rejection-sampling/", body, content_type="application/json")
    assert created.status_code == 201, created.content
    data = created.json()
    assert (data["policy"], data["judge"], data["n"], data["k"], data["status"]) == ("rs-policy", "rs-judge", 3, 2, "queued")
    assert data["prompt_selection"] == {"mode": "train"} and data["make_pairs"] is True and data["work_total"] == 18
    for bad, field in [({"n": 1}, "n"), ({"judge": "rs-policy"}, "judge"), ({"k": 4}, "k"), ({"selection": "all"}, "selection")]:
        refused = client.post("/api/rejection-sampling/", {**body, **bad}, content_type="application/json")
        assert refused.status_code == 400 and field in refused.json(), refused.content
    assert client.post("/api/rejection-sampling/", {**body, "project": "nope"}, content_type="application/json").status_code == 404
    job = service.rejection_sampling_execute(data["id"])
    assert job.status == "succeeded", job.error

    client.force_login(researcher)
    listed = client.get("/api/rejection-sampling/", {"project": project.slug}).json()
    assert [row["id"] for row in listed["results"]] == [job.pk]
    detail = client.get(f"/api/rejection-sampling/{job.pk}/").json()
    assert detail["selected_count"] == job.selected_count and detail["results"]["scores"]["count"] == 9
    assert detail["demonstration_filter"] == {"sources": ["rejection_sampling"], "rejection_jobs": [job.pk]}
    matrix = client.get(f"/api/rejection-sampling/{job.pk}/samples/").json()
    assert matrix["count"] == 3 and [row["prompt"] for row in matrix["results"]] == sorted(row["prompt"] for row in matrix["results"])
    first = matrix["results"][0]
    assert [s["sample"] for s in first["samples"]] == [0, 1, 2] and first["messages"][0]["content"] == "Train question 0?"
    stored = {(s.prompt_id, s.sample): s for s in job.samples.all()}
    for row in matrix["results"]:
        for cell in row["samples"]:
            assert (cell["score"], cell["selected"], cell["text"]) == (stored[(row["prompt"], cell["sample"])].score,
                                                                      stored[(row["prompt"], cell["sample"])].selected,
                                                                      stored[(row["prompt"], cell["sample"])].text)
    assert client.get(f"/api/rejection-sampling/{job.pk}/samples/", {"page": 2}).status_code == 404
    assert client.post(f"/api/rejection-sampling/{job.pk}/cancel/").status_code == 403
    client.force_login(admin)
    finished = client.post(f"/api/rejection-sampling/{job.pk}/cancel/")
    assert finished.status_code == 400 and "already succeeded" in str(finished.json())
    queued = client.post("/api/rejection-sampling/", body, content_type="application/json").json()
    assert client.post(f"/api/rejection-sampling/{queued['id']}/cancel/").json()["status"] == "cancelled"

    client.force_login(labeler)
    for url in ("/api/rejection-sampling/", f"/api/rejection-sampling/{job.pk}/", f"/api/rejection-sampling/{job.pk}/samples/"):
        assert client.get(url).status_code == 403
    assert client.post("/api/rejection-sampling/", body, content_type="application/json").status_code == 403
    assert client.post(f"/api/rejection-sampling/{job.pk}/train/", {}, content_type="application/json").status_code == 403


def test_the_pages_launch_follow_and_show_the_matrix_to_admins_and_researchers_only(client, project, versions):
    admin, researcher, labeler = user_with_role("admin"), user_with_role("researcher"), user_with_role("labeler")
    client.force_login(admin)
    form = client.get(reverse("rejection_sampling_create", args=[project.slug]))
    assert form.status_code == 200 and 'name="make_pairs"' in form.content.decode() and 'name="temperature"' in form.content.decode()
    fields = {"policy": "rs-policy", "judge": "rs-judge", "n": 3, "selection": "best-of-n", "k": 1, "prompts": "train",
              "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 6, "seed": 3, "backend": "transformers", "make_pairs": "on"}
    refused = client.post(reverse("rejection_sampling_create", args=[project.slug]), {**fields, "temperature": 0})
    assert refused.status_code == 422 and "Greedy" in refused.content.decode()
    launched = client.post(reverse("rejection_sampling_create", args=[project.slug]), fields)
    job = RejectionSamplingJob.objects.get()
    assert launched.status_code == 302 and launched["Location"] == reverse("rejection_sampling_detail", args=[job.pk])
    assert job.make_pairs and job.n == 3 and job.requested_by == admin
    queued_page = client.get(reverse("rejection_sampling_detail", args=[job.pk])).content.decode()
    assert 'hx-trigger="every 1s"' in queued_page and "Cancel" in queued_page
    job = service.rejection_sampling_execute(job.pk)
    poll = client.get(reverse("rejection_sampling_detail", args=[job.pk]), HTTP_HX_REQUEST="true")
    assert poll.headers.get("HX-Refresh") == "true"  # the job ended: the whole page reloads with its results

    client.force_login(researcher)
    page = client.get(reverse("rejection_sampling_detail", args=[job.pk])).content.decode()
    assert "rs-policy" in page and "rs-judge" in page and "<svg" in page and 'data-metric="Judge scores"' in page
    assert page.count("<tr class=\"selected\"") == 3 and "Train question 0?" in page
    assert "Train SFT on this selection" not in page  # admins only
    assert f"rejection_jobs={job.pk}" in page  # the export link, prefilled
    only = client.get(reverse("rejection_sampling_detail", args=[job.pk]), {"only": "selected"}).content.decode()
    assert only.count("data-sample=") == 3
    listing = client.get(reverse("rejection_sampling_list", args=[project.slug])).content.decode()
    assert reverse("rejection_sampling_detail", args=[job.pk]) in listing and "New rejection sampling" not in listing
    assert reverse("rejection_sampling_list", args=[project.slug]) in client.get(reverse("project_detail", args=[project.slug])).content.decode()
    assert client.get(reverse("rejection_sampling_create", args=[project.slug])).status_code == 403
    assert client.post(reverse("rejection_sampling_cancel", args=[job.pk])).status_code == 403
    jobs = client.get(reverse("jobs")).content.decode()  # the Jobs page lists it with every other kind
    assert reverse("rejection_sampling_detail", args=[job.pk]) in jobs and "rs-policy x3, judged by rs-judge" in jobs
    listed = client.get("/api/jobs/", {"kind": "rejection_sampling"}).json()
    assert [(row["id"], row["url"]) for row in listed] == [(job.pk, reverse("rejection_sampling_detail", args=[job.pk]))]

    client.force_login(labeler)
    for url in (reverse("rejection_sampling_list", args=[project.slug]), reverse("rejection_sampling_detail", args=[job.pk]),
                reverse("rejection_sampling_create", args=[project.slug])):
        assert client.get(url).status_code == 403
    assert client.post(reverse("rejection_sampling_train", args=[job.pk])).status_code == 403
    project_page = client.get(reverse("project_detail", args=[project.slug])).content.decode()
    assert "rs-policy" not in project_page and "rs-judge" not in project_page and "Rejection sampling" not in project_page


def test_the_selection_trains_an_sft_run_in_one_step(client, project, versions):
    """The page's button and the API queue an SFT run of the job's policy on exactly the job's demonstrations."""
    policy, judge = versions
    for n in range(7):
        PromptFactory(project=project, messages=[{"role": "user", "content": f"Another train question {n}?"}])
    job = sample(project, versions, n=2, selection="top-k-per-prompt", k=2)
    other = sample(project, versions, n=2)  # another job's demonstrations stay out of this job's run
    mine = set(Demonstration.objects.filter(rejection_sample__job=job).values_list("pk", flat=True))
    assert len(mine) == job.selected_count >= 8 and other.selected_count

    admin, researcher = user_with_role("admin"), user_with_role("researcher")
    client.force_login(admin)
    page = client.get(reverse("rejection_sampling_detail", args=[job.pk])).content.decode()
    assert "Train SFT on this selection" in page
    launched = client.post(reverse("rejection_sampling_train", args=[job.pk]), {"eval_fraction": "0"})
    run = TrainingRun.objects.get()
    assert launched.status_code == 302 and launched["Location"] == reverse("run_detail", args=[run.pk])
    assert (run.kind, run.base_version, list(run.projects.all()), run.requested_by) == ("sft", policy, [project], admin)
    assert run.pair_filter["sources"] == ["rejection_sampling"] and run.pair_filter["rejection_jobs"] == [job.pk]
    assert run.pair_filter["eval_fraction"] == 0
    assert set(run.run_demonstrations.values_list("demonstration_id", flat=True)) == mine
    # Provenance: from the run to the job, and from each demonstration to the policy, the judge and the sampling.
    job_ids = {d.rejection_sample.job_id for d in Demonstration.objects.filter(run_uses__run=run)}
    assert job_ids == {job.pk}
    assert {(d.metadata["policy"], d.metadata["judge"]) for d in Demonstration.objects.filter(run_uses__run=run)} == {("rs-policy", "rs-judge")}
    assert f'href="{reverse("run_detail", args=[run.pk])}"' in client.get(reverse("rejection_sampling_detail", args=[job.pk])).content.decode()

    api = client.post(f"/api/rejection-sampling/{job.pk}/train/", {"settings": {"epochs": 2}, "eval_fraction": 0}, content_type="application/json")
    assert api.status_code == 201, api.content
    assert api.json()["kind"] == "sft" and api.json()["base_version"] == "rs-policy" and api.json()["config"]["epochs"] == 2
    bad = client.post(f"/api/rejection-sampling/{job.pk}/train/", {"settings": {"epochs": -1}}, content_type="application/json")
    assert bad.status_code == 400, bad.content
    queued = service.rejection_sampling_create(project=project, policy=policy, judge=judge, n=2, sampling=SAMPLING)
    refused = client.post(f"/api/rejection-sampling/{queued.pk}/train/", {}, content_type="application/json")
    assert refused.status_code == 400 and "once the job has succeeded" in str(refused.json())
    page_refused = client.post(reverse("rejection_sampling_train", args=[queued.pk]), follow=True)
    assert "No SFT run was launched" in page_refused.content.decode()
    client.force_login(researcher)
    assert client.post(f"/api/rejection-sampling/{job.pk}/train/", {}, content_type="application/json").status_code == 403
    assert TrainingRun.objects.count() == 2
