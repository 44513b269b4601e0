"""Issue 11, points 5-7: a run says how many pairs fit its max length before launch and how many it used after; too
few is refused with the reason; the form defaults to a sensible base and shows its lineage; small page fixes."""

import json
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from generation.models import Candidate, GenerationJob, GenerationJobModel, ModelVersion
from generation.services import model_version_register
from tests.training_tests.conftest import SMALL_RUN
from tests.training_tests.test_api import authenticated
from tests.training_tests.test_pages import form_data, login
from training import services
from training.models import TrainingRun

@pytest.fixture
def admin_api(api_client, admin_user):
    return authenticated(api_client, admin_user)


LONG_TEXT = "You are wonderful, truly and deeply. " * 40  # several hundred tokens: far over max_length 128


def lengthen(project, prompts: int, heldout: int = 0) -> None:
    """Make the best candidate of the first ``prompts`` training prompts (and ``heldout`` held-out ones) too long for
    128 tokens: each such prompt has 2 pairs with it as the chosen response (ranked above the two others)."""
    chosen = []
    for split, n in (("train", prompts), ("heldout", heldout)):
        for prompt in project.prompts.filter(split=split).order_by("pk")[:n]:
            chosen.append(prompt.candidates.get(text__startswith="You are wonderful"))
    Candidate.objects.filter(pk__in=[c.pk for c in chosen]).update(text=LONG_TEXT)


def check_body(project, version, **settings):
    return {"kind": "reward", "base_version": version.name, "projects": [project.slug], "settings": {**SMALL_RUN, **settings}}


def test_the_check_tells_how_many_pairs_fit_and_the_run_records_what_it_used(admin_api, client, admin_user, ranked_project, tiny_version):
    lengthen(ranked_project, prompts=2, heldout=1)  # 4 of 12 train and 2 of 6 eval pairs are too long

    check = admin_api.post(reverse("api_training_run_check"), check_body(ranked_project, tiny_version, too_long="drop"), format="json")
    assert check.status_code == 200, check.content
    data = check.json()
    assert data["pairs"] == {"train": 12, "eval": 6} and data["can_launch"] and data["refusal"] == ""
    lengths = data["lengths"]
    assert (lengths["train"]["fit"], lengths["train"]["used"], lengths["train"]["dropped"]) == (8, 8, 4)
    assert (lengths["eval"]["fit"], lengths["eval"]["used"], lengths["eval"]["dropped"]) == (4, 4, 2)
    assert not lengths["all_fit"] and lengths["longest"] == lengths["keep_all_max_length"] > 128 >= 0 < lengths["p95"]
    truncate = admin_api.post(reverse("api_training_run_check"), check_body(ranked_project, tiny_version), format="json").json()
    assert truncate["lengths"]["too_long"] == "truncate"  # the default
    assert (truncate["lengths"]["train"]["used"], truncate["lengths"]["train"]["truncated"]) == (12, 4)
    assert TrainingRun.objects.count() == 0  # a check queues nothing

    # With drop, the run trains on the 8 / 4 that fit and says so everywhere.
    run = services.training_run_create(
        kind="reward", base_version=tiny_version, projects=[ranked_project], settings={**SMALL_RUN, "too_long": "drop"}
    )
    assert run.dataset_manifest["lengths"]["train"]["used"] == 8
    run = services.training_run_execute(run.pk)
    assert run.status == "succeeded", run.error
    assert (run.train_pairs_used, run.eval_pairs_used, run.pairs_truncated, run.pairs_dropped) == (8, 4, 0, 6)
    version = run.model_version
    assert version.config["dataset_manifest"]["pairs_used"] == {"train": 8, "eval": 4, "truncated": 0, "dropped": 6}
    assert "on 8 pairs (4 held out" in version.notes
    on_disk = json.loads((Path(run.output_dir) / "manifest.json").read_text())
    assert on_disk["pairs_used"]["train"] == 8
    api = admin_api.get(reverse("api_training_run", args=[run.pk])).json()
    assert api["pairs_used"] == {"train": 8, "eval": 4, "truncated": 0, "dropped": 6}

    # With truncate (the default), every selected pair is used.
    full = services.training_run_execute(
        services.training_run_create(kind="reward", base_version=tiny_version, projects=[ranked_project], settings=SMALL_RUN).pk
    )
    assert full.status == "succeeded", full.error
    assert (full.train_pairs_used, full.eval_pairs_used, full.pairs_truncated, full.pairs_dropped) == (12, 6, 6, 0)

    login(client, admin_user)  # pages: the run page, the list and the comparison show the counts used
    page = client.get(reverse("run_detail", args=[run.pk])).content.decode()
    assert "Trained on 8 of 12 selected training pairs, evaluated on 4 of 6 held-out pairs" in page
    assert "Longer than 128 tokens: 6 dropped." in page
    listing = client.get(reverse("run_list")).content.decode()
    assert "8 / 4 <span class=\"meta\">of 12 / 6 selected</span>" in listing and "12 / 6 <span class=\"meta\">(6 truncated)</span>" in listing
    compare = client.get(reverse("run_compare") + f"?runs={run.pk}&runs={full.pk}").content.decode()
    assert "pairs used (train / eval)" in compare and "8 / 4" in compare


def test_too_few_pairs_left_is_refused_with_the_reason(admin_api, client, admin_user, ranked_project, tiny_version):
    lengthen(ranked_project, prompts=3)  # 6 of 12 train pairs too long: 6 left, under the minimum of 8
    body = check_body(ranked_project, tiny_version, too_long="drop")
    check = admin_api.post(reverse("api_training_run_check"), body, format="json").json()
    assert not check["can_launch"] and "Only 6 of 12 training pairs would be used" in check["refusal"]

    launch = admin_api.post(reverse("api_training_runs"), body, format="json")
    assert launch.status_code == 400
    reason = launch.json()["max_length"][0]
    assert "at least 8" in reason and "Set max length to" in reason and "truncate longer pairs" in reason
    assert TrainingRun.objects.count() == 0
    # Truncating keeps them all: the same selection launches.
    assert admin_api.post(reverse("api_training_runs"), check_body(ranked_project, tiny_version), format="json").status_code == 201

    # The form says so beside the max length, and its pair check says it before the launch.
    login(client, admin_user)
    data = form_data(ranked_project, tiny_version, kind="reward", too_long="drop", eval_fraction="0")
    page = client.post(reverse("run_create"), data)
    assert page.status_code == 422 and "Only 6 of 12 training pairs would be used" in page.content.decode()
    fragment = client.post(reverse("run_check"), data, HTTP_HX_REQUEST="true").content.decode()
    assert "Selected: <strong>12</strong> train" in fragment and "data-refusal" in fragment
    assert "Set max length to" in fragment


def test_the_form_defaults_to_the_base_not_the_newest_version_and_shows_its_lineage(client, admin_user, ranked_project, tiny_version, tiny_adapter):
    dpo = model_version_register(name="tiny-policy-dpo-round1", base_model=tiny_version.base_model, adapter_path=tiny_adapter, parent=tiny_version)
    model_version_register(name="only-reward", base_model=tiny_version.base_model, adapter_path=tiny_adapter, kind=ModelVersion.Kind.REWARD)
    login(client, admin_user)
    page = client.get(reverse("run_create")).content.decode()
    assert '<option value="tiny-policy" selected>' in page and '<option value="tiny-policy-dpo-round1" selected>' not in page
    assert "LoRA rank" in page and "Lora rank" not in page and "Pairs longer than max length" in page
    # A project whose last run trained on the DPO round gets that base back; its lineage shows beside it.
    run = services.training_run_create(kind="dpo", base_version=dpo, projects=[ranked_project], settings=SMALL_RUN)
    page = client.get(reverse("run_create") + f"?project={ranked_project.slug}").content.decode()
    assert '<option value="tiny-policy-dpo-round1" selected>' in page
    assert "<strong>tiny-policy-dpo-round1</strong> (adapter) ← <strong>tiny-policy</strong> (base model)" in page
    fragment = client.post(reverse("run_check"), form_data(ranked_project, tiny_version)).content.decode()
    assert "Lineage: <strong>tiny-policy</strong> (base model)" in fragment and "Would be used" in fragment
    assert 'id="base-lineage" class="meta" data-lineage hx-swap-oob="true"' in fragment  # updates the line beside the field

    # The scoring forms preselect the only reward model.
    rewards = client.get(reverse("reward_overview", args=[ranked_project.slug])).content.decode()
    assert rewards.count('<option value="only-reward" selected>') == 2
    assert run.pk


def test_a_queued_run_says_what_it_waits_for_and_a_cancelled_one_why_it_has_no_charts(client, admin_user, ranked_project, tiny_version):
    running = GenerationJob.objects.create(project=ranked_project, prompts_total=10, status="running", started_at=timezone.now())
    GenerationJobModel.objects.create(job=running, model_version=tiny_version, n=3)
    run = services.training_run_create(kind="dpo", base_version=tiny_version, projects=[ranked_project], settings=SMALL_RUN)
    login(client, admin_user)
    page = client.get(reverse("run_detail", args=[run.pk])).content.decode()
    assert f"1st in line on the gpu queue, behind generation job {running.pk}" in page
    assert "Charts appear with the first logged step." in page
    client.post(reverse("run_cancel", args=[run.pk]))
    page = client.get(reverse("run_detail", args=[run.pk])).content.decode()
    assert "Cancelled before the first logged step" in page and "Charts appear with the first logged step" not in page


def test_only_admins_check_a_launch(api_client, users, ranked_project, tiny_version, client):
    for role in ("researcher", "labeler"):
        api_client.force_authenticate(users[role])
        assert api_client.post(reverse("api_training_run_check"), check_body(ranked_project, tiny_version), format="json").status_code == 403
        login(client, users[role])
        assert client.post(reverse("run_check"), form_data(ranked_project, tiny_version)).status_code == 403


def test_a_base_whose_tokenizer_is_not_here_is_checked_by_the_worker(admin_api, ranked_project):
    remote = model_version_register(name="remote-base", base_model="org/not-downloaded-here")
    data = admin_api.post(reverse("api_training_run_check"), check_body(ranked_project, remote), format="json").json()
    assert data["lengths"] is None and "not available here" in data["tokenizer_error"] and data["can_launch"]
    assert data["pairs"] == {"train": 12, "eval": 6}
