"""An admin launches a GRPO run in Chromium: choosing GRPO swaps the pair filter for the prompts and the reward model
and shows the online settings; the run trains in a real worker, charts its reward, KL and completion length, and shows
the best and worst completions with their rewards, which a researcher does not see."""

import pytest

from annotation.roles import ADMIN, RESEARCHER
from tests.e2e.conftest import log_in
from tests.factories import user_with_role
from tests.training_tests.conftest import prompted_project, reward_adapter, reward_version, tiny_version  # noqa: F401 - fixtures
from training.models import TrainingRun

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_admin_launches_a_grpo_run_and_reads_its_samples(page, live_server, celery_worker, prompted_project, tiny_version, reward_version, output_dir):
    admin = user_with_role(ADMIN, "rl-trainer")
    log_in(page, live_server.url, admin.username, "pw-rl-trainer")
    page.goto(f"{live_server.url}/training/new/?project={prompted_project.slug}")

    assert not page.is_visible("[data-prompt-selection]") and not page.is_visible("select[name=reward_version]")
    page.check("input[name=kind][value=grpo]")
    assert page.is_visible("[data-prompt-selection]") and page.is_visible("select[name=reward_version]")
    assert not page.is_visible("[data-pair-filter]") and not page.is_visible("[data-demonstration-filter]")
    for name in ("num_generations", "max_completion_length", "temperature", "length_penalty", "beta"):
        assert page.is_visible(f"input[name={name}]"), name
    assert not page.is_visible("input[name=use_margin]") and not page.is_visible("select[name=too_long]")

    page.select_option("select[name=reward_version]", "tiny-reward")
    for name, value in (("lora_rank", "8"), ("target_modules", "q_proj, v_proj"), ("batch_size", "4"), ("max_length", "128"),
                        ("max_completion_length", "12"), ("max_steps", "3"), ("length_penalty", "0.5")):
        page.fill(f"input[name={name}]", value)
    page.get_by_role("button", name="Check prompts").click()
    page.wait_for_function("() => (document.querySelector('[data-used]') || {}).textContent === '8 / 0'")
    assert "Selected: 8 prompts, none held out." in page.inner_text("#run-check")
    page.screenshot(path=str(output_dir / "1-grpo-form.png"), full_page=True)

    page.click("text=Launch training")
    page.wait_for_url(f"{live_server.url}/training/*/")
    assert "against reward model tiny-reward" in page.inner_text("main")
    page.wait_for_selector("#run-progress .status.succeeded", timeout=240_000)
    for metric in ("reward", "reward_std", "kl", "completions/mean_length", "rewards/length_penalty/mean"):
        points = page.get_attribute(f'[data-metric="{metric}"] polyline[data-series="train"]', "points")
        assert len(points.split()) == 3, metric
    assert page.locator("[data-samples] tbody tr").count() == 4
    rewards = [float(text) for text in page.locator("[data-samples] [data-reward]").all_inner_texts()]
    assert rewards == sorted(rewards, reverse=True)
    page.screenshot(path=str(output_dir / "2-grpo-run-done.png"), full_page=True)
    run = TrainingRun.objects.get()
    assert run.kind == "grpo" and run.model_version.name in page.inner_text("#run-progress") and run.config["length_penalty"] == 0.5

    researcher = user_with_role(RESEARCHER, "rl-reader")
    page.context.clear_cookies()
    log_in(page, live_server.url, researcher.username, "pw-rl-reader")
    page.goto(f"{live_server.url}/training/{run.pk}/")
    assert page.is_visible('[data-metric="reward"]') and page.locator("[data-samples]").count() == 0
