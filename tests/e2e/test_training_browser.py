"""An admin launches a QLoRA DPO run in Chromium and watches its charts grow while a real worker trains."""

import pytest

from annotation.roles import ADMIN
from tests.e2e.conftest import log_in
from tests.factories import user_with_role
from training.models import TrainingRun

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def loss_points(page) -> int:
    """Points on the training-loss line as drawn in the page right now."""
    points = page.get_attribute('[data-metric="loss"] polyline[data-series="train"]', "points")
    return len(points.split()) if points else 0


def test_admin_launches_a_run_and_watches_its_chart_update(page, live_server, celery_worker, ranked_project, tiny_version, output_dir):
    admin = user_with_role(ADMIN, "browser-trainer")
    log_in(page, live_server.url, admin.username, "pw-browser-trainer")

    page.goto(f"{live_server.url}/projects/{ranked_project.slug}/")
    page.get_by_role("link", name="Train", exact=True).click()
    page.check("input[name=kind][value=dpo]")
    page.fill("input[name=lora_rank]", "8")
    page.fill("input[name=target_modules]", "q_proj, v_proj")
    page.fill("input[name=batch_size]", "2")
    page.fill("input[name=max_length]", "128")
    page.fill("input[name=epochs]", "4")
    page.screenshot(path=str(output_dir / "1-launch-form.png"), full_page=True)
    page.click("text=Launch training")
    page.wait_for_url(f"{live_server.url}/training/*/")
    page.evaluate("window.sameDocument = true")  # gone if the page reloads: the chart must come by htmx swaps

    page.wait_for_selector('[data-metric="loss"] polyline[data-series="train"]', timeout=180_000)
    first = loss_points(page)
    page.wait_for_function(
        f"""() => {{
            const line = document.querySelector('[data-metric="loss"] polyline[data-series="train"]');
            return line && line.getAttribute("points").trim().split(/\\s+/).length > {first};
        }}""",
        timeout=120_000,
    )
    page.screenshot(path=str(output_dir / "2-chart-growing.png"), full_page=True)
    page.wait_for_selector("#run-progress .status.succeeded", timeout=240_000)
    assert page.evaluate("window.sameDocument") is True
    assert loss_points(page) == 24  # every training step, drawn
    eval_points = page.get_attribute('[data-metric="rewards/margins"] polyline[data-series="eval"]', "points")
    assert len(eval_points.split()) >= 5  # evaluated along the way, not only at the end
    page.screenshot(path=str(output_dir / "3-run-done.png"), full_page=True)

    run = TrainingRun.objects.get()
    assert run.requested_by == admin and run.model_version.name in page.inner_text("#run-progress")


def test_the_form_checks_pair_lengths_and_the_run_page_shows_the_pairs_used(page, live_server, celery_worker, ranked_project, tiny_version, output_dir):
    from tests.training_tests.test_pair_lengths import lengthen

    lengthen(ranked_project, prompts=2, heldout=1)  # 4 of 12 train and 2 of 6 eval pairs are over 128 tokens
    page.set_viewport_size({"width": 1366, "height": 900})
    admin = user_with_role(ADMIN, "length-checker")
    log_in(page, live_server.url, admin.username, "pw-length-checker")

    page.goto(f"{live_server.url}/training/new/?project={ranked_project.slug}")
    assert "tiny-policy" in page.inner_text("[data-lineage]")
    page.check("input[name=kind][value=reward]")
    page.fill("input[name=lora_rank]", "8")
    page.fill("input[name=target_modules]", "q_proj, v_proj")
    page.fill("input[name=batch_size]", "2")
    page.fill("input[name=max_length]", "128")
    page.select_option("select[name=too_long]", "drop")
    page.click("text=Check pairs")
    page.wait_for_function("() => (document.querySelector('[data-used]') || {}).textContent === '8 / 4'")
    check = page.inner_text("#run-check")
    assert "Selected: 12 train / 6 eval pairs" in check and "(6 dropped)" in check and "Set max length to" in check
    page.screenshot(path=str(output_dir / "1-pair-check.png"), full_page=True)

    page.click("text=Launch training")
    page.wait_for_url(f"{live_server.url}/training/*/")
    page.wait_for_selector("#run-progress .status.succeeded", timeout=240_000)
    assert page.inner_text("[data-pairs-used]") == "8 / 4"
    note = page.inner_text("[data-pairs-note]")
    assert "Trained on 8 of 12 selected training pairs, evaluated on 4 of 6 held-out pairs. Longer than 128 tokens: 6 dropped." in note
    page.screenshot(path=str(output_dir / "2-run-pairs-used.png"), full_page=True)
    run = TrainingRun.objects.get()
    assert (run.train_pairs_used, run.eval_pairs_used, run.pairs_dropped) == (8, 4, 6)
