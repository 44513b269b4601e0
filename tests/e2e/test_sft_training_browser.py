"""An admin launches a QLoRA SFT run in Chromium: choosing SFT swaps the pair filter for the demonstration filter and
hides the DPO and reward settings; the run trains in a real worker and charts its loss and token accuracy."""

import pytest

from annotation.roles import ADMIN
from tests.e2e.conftest import log_in
from tests.factories import user_with_role
from tests.training_tests.conftest import demonstrated_project, tiny_version  # noqa: F401 - fixtures
from training.models import TrainingRun

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_admin_launches_an_sft_run_from_the_form(page, live_server, celery_worker, demonstrated_project, tiny_version, output_dir):
    admin = user_with_role(ADMIN, "sft-trainer")
    log_in(page, live_server.url, admin.username, "pw-sft-trainer")
    page.goto(f"{live_server.url}/training/new/?project={demonstrated_project.slug}")

    # DPO first (the default): the pair filter and DPO's settings; no demonstration filter.
    assert page.is_visible("[data-pair-filter]") and not page.is_visible("[data-demonstration-filter]")
    assert page.is_visible("input[name=beta]") and not page.is_visible("input[name=use_margin]")
    page.check("input[name=kind][value=sft]")
    assert page.is_visible("[data-demonstration-filter]") and not page.is_visible("[data-pair-filter]")
    for name in ("beta", "label_smoothing", "use_margin"):
        assert not page.is_visible(f"input[name={name}]"), name
    assert not page.is_visible("select[name=loss_type]")
    assert page.is_visible("input[name=demo_rejection_jobs]") and page.is_checked("input[name=demo_statuses][value=accepted]")

    page.fill("input[name=lora_rank]", "8")
    page.fill("input[name=target_modules]", "q_proj, v_proj")
    page.fill("input[name=batch_size]", "2")
    page.fill("input[name=max_length]", "128")
    page.fill("input[name=epochs]", "2")
    page.get_by_role("button", name="Check demonstrations").click()
    page.wait_for_function("() => (document.querySelector('[data-used]') || {}).textContent === '8 / 4'")
    assert "Selected: 8 train / 4 eval demonstrations" in page.inner_text("#run-check")
    page.screenshot(path=str(output_dir / "1-sft-form.png"), full_page=True)

    page.click("text=Launch training")
    page.wait_for_url(f"{live_server.url}/training/*/")
    page.wait_for_selector("#run-progress .status.succeeded", timeout=240_000)
    assert page.inner_text("[data-pairs-used]") == "8 / 4"
    for metric in ("loss", "mean_token_accuracy"):  # a line per split, a point per training step
        points = page.get_attribute(f'[data-metric="{metric}"] polyline[data-series="train"]', "points")
        assert len(points.split()) == 8, metric
        assert page.get_attribute(f'[data-metric="{metric}"] polyline[data-series="eval"]', "points"), metric
    page.screenshot(path=str(output_dir / "2-sft-run-done.png"), full_page=True)
    run = TrainingRun.objects.get()
    assert run.kind == "sft" and run.requested_by == admin and run.model_version.name in page.inner_text("#run-progress")
    assert "beta" not in run.config and run.pair_filter["statuses"] == ["accepted"]
