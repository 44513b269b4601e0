"""A labeler ranks two items in Chromium: one with the keyboard alone, one with drag and drop (with a tie)."""

import pytest

from annotation.models import PreferencePair, Ranking
from annotation.roles import LABELER
from tests.e2e.conftest import log_in
from tests.factories import ProjectFactory, make_item, user_with_role

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def letters_to_ids(page) -> dict[str, int]:
    cards = page.locator(".ranker .response")
    return {cards.nth(i).get_attribute("data-letter"): int(cards.nth(i).get_attribute("data-id")) for i in range(cards.count())}


def test_labeler_ranks_with_keyboard_and_with_drag_and_drop(page, live_server, output_dir):
    project = ProjectFactory(slug="e2e", name="E2E project", responses_per_item=4)
    first, second = make_item(project), make_item(project)
    labeler = user_with_role(LABELER, "browser-labeler")
    log_in(page, live_server.url, labeler.username, "pw-browser-labeler")
    page.goto(f"{live_server.url}/projects/e2e/label/")

    # Item 1, keyboard only: D > C > A = B.
    ids = letters_to_ids(page)
    assert int(page.locator(".ranker").get_attribute("data-item")) == first.pk
    for key in ["d", "c", "a", "=", "b"]:
        page.keyboard.press(key)
    assert page.inner_text("[data-ranking-text]") == "D > C > A = B"
    page.keyboard.press("Backspace")
    assert page.inner_text("[data-ranking-text]") == "D > C > A"
    page.keyboard.press("=")
    page.keyboard.press("b")
    page.screenshot(path=str(output_dir / "1-keyboard-ranked.png"), full_page=True)
    page.keyboard.press("Enter")
    page.wait_for_selector(f'.ranker[data-item="{second.pk}"]')
    assert "Saved: D > C > A = B" in page.inner_text(".flash.success")
    keyboard_ranking = Ranking.objects.get(item=first)
    assert keyboard_ranking.tiers == [[ids["D"]], [ids["C"]], [ids["A"], ids["B"]]]
    assert set(PreferencePair.objects.filter(ranking=keyboard_ranking).values_list("chosen_id", "rejected_id", "margin")) == {
        (ids["D"], ids["C"], 1.0), (ids["D"], ids["A"], 2.0), (ids["D"], ids["B"], 2.0), (ids["C"], ids["A"], 1.0), (ids["C"], ids["B"], 1.0),
    }

    # Item 2, mouse only: B first, A dropped on B's tier (a tie), D in a new tier below, then C below D.
    ids = letters_to_ids(page)
    page.drag_and_drop('.ranker .response[data-letter="B"]', "[data-gap='0']")
    page.drag_and_drop('.ranker .response[data-letter="A"]', "[data-tier='0']")
    page.drag_and_drop('.ranker .response[data-letter="D"]', "[data-gap='1']")
    page.drag_and_drop('.ranker .response[data-letter="C"]', "[data-gap='2']")
    assert page.inner_text("[data-ranking-text]") == "A = B > D > C"
    page.fill("textarea[name=rationale]", "A and B are equally good")
    page.screenshot(path=str(output_dir / "2-dragged.png"), full_page=True)
    page.click(".rank-form .submit")
    page.wait_for_selector(".empty-queue")
    page.screenshot(path=str(output_dir / "3-queue-empty.png"), full_page=True)
    dragged = Ranking.objects.get(item=second)
    assert dragged.tiers == [[ids["B"], ids["A"]], [ids["D"]], [ids["C"]]]
    assert dragged.rationale == "A and B are equally good"
    assert dragged.time_spent_ms > 0
    assert set(PreferencePair.objects.filter(ranking=dragged).values_list("chosen_id", "rejected_id", "chosen_rank", "rejected_rank")) == {
        (ids["B"], ids["D"], 1, 2), (ids["A"], ids["D"], 1, 2), (ids["B"], ids["C"], 1, 3), (ids["A"], ids["C"], 1, 3), (ids["D"], ids["C"], 2, 3),
    }
    assert "test-policy" not in page.content()

    page.goto(f"{live_server.url}/projects/e2e/my-rankings/")
    assert "A = B > D > C" in page.inner_text("table")
    page.screenshot(path=str(output_dir / "4-my-rankings.png"), full_page=True)
