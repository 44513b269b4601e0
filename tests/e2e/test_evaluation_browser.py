"""An evaluation seen in Chromium: an admin launches it from the page and reads the side-by-side, sends blind
comparisons to a K=2 project, a labeler answers them with the keyboard (never seeing a model name), and the
evaluation page then shows the human win rate beside the judge's."""

import re

import pytest

from generation.models import ModelVersion
from tests.e2e.conftest import log_in
from tests.factories import ProjectFactory, PromptFactory, user_with_role
from tests.tiny_models import build_reward_adapter
from training import evaluation as evaluations
from training.models import Evaluation, HumanComparison

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_an_admin_evaluates_a_labeler_compares_blind_and_the_page_shows_the_human_win_rate(
    browser, page, live_server, output_dir, tiny_model, tiny_adapter, tmp_path
):
    project = ProjectFactory(slug="eval-e2e", name="Evaluated")
    for n in range(3):
        PromptFactory(project=project, split="heldout", messages=[{"role": "user", "content": f"Held-out question {n}?"}])
    ProjectFactory(slug="blind-e2e", name="Blind comparisons", responses_per_item=2)
    ModelVersion.objects.create(name="ev-base", base_model=tiny_model)
    ModelVersion.objects.create(name="ev-tuned", base_model=tiny_model, adapter_path=tiny_adapter)
    ModelVersion.objects.create(name="ev-judge", base_model=tiny_model, adapter_path=str(build_reward_adapter(tiny_model, tmp_path / "j")), kind="reward")
    admin = user_with_role("admin", "eval-admin")
    labeler = user_with_role("labeler", "eval-labeler")

    # The admin launches it from the form (the only reward model is preselected as the judge).
    page.set_viewport_size({"width": 1366, "height": 900})
    log_in(page, live_server.url, admin.username, "pw-eval-admin")
    page.goto(f"{live_server.url}/projects/eval-e2e/evaluations/new/")
    assert page.locator("#id_judge").input_value() == "ev-judge"
    page.check("input[name=versions][value=ev-tuned]")
    page.check("input[name=versions][value=ev-base]")
    page.fill("#id_max_new_tokens", "6")
    page.fill("#id_temperature", "1.0")
    page.select_option("#id_backend", "transformers")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/evaluations/\d+/$"))
    evaluation = Evaluation.objects.get()
    evaluations.evaluation_execute(evaluation.pk)  # the worker's part, in this process
    page.reload()
    assert "ev-tuned over ev-base" in page.inner_text("#judge-results")
    assert page.locator(".comparison").count() == 3 and page.locator(".comparison-column h3").first.inner_text() == "ev-tuned"
    page.screenshot(path=str(output_dir / "1-evaluation.png"))

    page.select_option("#id_project", "blind-e2e")
    page.click("text=Send to labelers")
    assert "blind comparisons sent to the labelers of Blind comparisons" in page.inner_text(".flash.success")
    sent = HumanComparison.objects.count()
    assert sent >= 1

    # The labeler answers every comparison from the keyboard, always preferring A.
    labeler_page = browser.new_context(viewport={"width": 1366, "height": 900}).new_page()
    log_in(labeler_page, live_server.url, labeler.username, "pw-eval-labeler")
    labeler_page.goto(f"{live_server.url}/projects/blind-e2e/label/")
    for n in range(sent):
        labeler_page.wait_for_selector(".ranker")
        text = labeler_page.inner_text("body")
        assert "ev-" not in text and "valuation" not in text
        if n == 0:
            labeler_page.screenshot(path=str(output_dir / "2-blind-item.png"))
        item = labeler_page.locator(".ranker").get_attribute("data-item")
        for key in ["a", "b", "Enter"]:
            labeler_page.keyboard.press(key)
        labeler_page.wait_for_function(
            "item => !document.querySelector('.ranker') || document.querySelector('.ranker').dataset.item !== item", arg=item
        )
    labeler_page.context.close()

    page.goto(f"{live_server.url}/evaluations/{evaluation.pk}/")
    human = page.inner_text("#human-results")
    assert "ev-tuned over ev-base" in human
    (pair,) = evaluations.human_results(evaluation)["pairs"]
    assert pair["verdicts"] == sent
    assert page.locator("[data-human-win-rate]").inner_text() == f"{pair['win_rate']['value']:.3f} [{pair['win_rate']['low']:.3f}, {pair['win_rate']['high']:.3f}] ({pair['win_rate']['count']})"
    page.screenshot(path=str(output_dir / "3-human-win-rate.png"), full_page=True)
