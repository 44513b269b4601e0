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
    page.fill("input[name=epochs]", "8")
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
    assert loss_points(page) == 48  # every training step, drawn
    eval_points = page.get_attribute('[data-metric="rewards/margins"] polyline[data-series="eval"]', "points")
    assert len(eval_points.split()) >= 5  # evaluated along the way, not only at the end
    page.screenshot(path=str(output_dir / "3-run-done.png"), full_page=True)

    run = TrainingRun.objects.get()
    assert run.requested_by == admin and run.model_version.name in page.inner_text("#run-progress")
