"""A labeler ranks two items in Chromium: one with the keyboard alone, one with drag and drop (with a tie)."""

import pytest

from annotation.models import Assignment, ItemFlag, PreferencePair, Ranking
from annotation.roles import LABELER
from tests.e2e.conftest import log_in
from tests.factories import ProjectFactory, make_item, user_with_role

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def letters_to_ids(page, labeler) -> dict[str, int]:
    """Which candidate each letter on screen is: known to the server (the labeler's display order), never to the page."""
    from annotation.models import RankingItem
    from annotation.ranking import display_order, letters_for

    item_id = int(page.locator(".ranker").get_attribute("data-item"))
    assert page.locator(".ranker [data-id]").count() == 0  # no candidate id on the page
    candidates = list(RankingItem.objects.get(pk=item_id).candidates.values_list("id", flat=True))
    letters = letters_for(display_order(candidates, labeler_id=labeler.pk, item_id=item_id))
    cards = page.locator(".ranker .response")
    assert sorted(cards.nth(i).get_attribute("data-letter") for i in range(cards.count())) == sorted(letters.values())
    return {letter: candidate for candidate, letter in letters.items()}


def test_labeler_ranks_with_keyboard_and_with_drag_and_drop(page, live_server, output_dir):
    project = ProjectFactory(slug="e2e", name="E2E project", responses_per_item=4)
    first, second = make_item(project), make_item(project)
    labeler = user_with_role(LABELER, "browser-labeler")
    log_in(page, live_server.url, labeler.username, "pw-browser-labeler")
    page.goto(f"{live_server.url}/projects/e2e/label/")

    # Item 1, keyboard only: D > C > A = B.
    ids = letters_to_ids(page, labeler)
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
    ids = letters_to_ids(page, labeler)
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


# --- issue 11: what a new labeler hit ---------------------------------------------------------------------------------

VIEWPORT = {"width": 1366, "height": 900}
LONG = "\n\n".join(
    f"Paragraph {n}: a long answer that goes on about the question in some detail, with enough words to wrap a few "
    "times in a narrow card and push the page far below the fold if nothing bounded it." for n in range(14)
)


def open_label_page(page, live_server, project, username):
    labeler = user_with_role(LABELER, username)
    page.set_viewport_size(VIEWPORT)
    log_in(page, live_server.url, labeler.username, f"pw-{username}")
    page.goto(f"{live_server.url}/projects/{project.slug}/label/")
    return labeler


def active_element(page) -> dict:
    return page.evaluate(
        """() => { const e = document.activeElement; const r = e.getBoundingClientRect();
        return {tag: e.tagName, name: e.getAttribute("name"), type: e.type, form: e.form ? e.form.className : null,
                top: r.top, bottom: r.bottom, visible: r.width > 0 && r.height > 0}; }"""
    )


def within_viewport(box) -> bool:
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= VIEWPORT["height"] and box["x"] >= 0 and box["x"] + box["width"] <= VIEWPORT["width"]


def test_s_and_f_put_the_cursor_in_the_reason_box_and_enter_sends_it(page, live_server, output_dir):
    project = ProjectFactory(slug="skip-flag", responses_per_item=4)
    first, second, third = make_item(project), make_item(project), make_item(project)
    labeler = open_label_page(page, live_server, project, "keyboard-skipper")

    page.keyboard.press("s")
    focused = active_element(page)
    assert (focused["tag"], focused["name"], focused["form"]) == ("INPUT", "reason", "skip-form")
    assert focused["visible"] and 0 <= focused["top"] and focused["bottom"] <= VIEWPORT["height"]
    page.keyboard.type("Cannot judge chemistry")  # C and A are response letters: they must land in the box
    assert page.inner_text("[data-ranking-text]") == "—"
    page.screenshot(path=str(output_dir / "skip-form-open.png"))
    page.keyboard.press("Enter")
    page.wait_for_selector(f'.ranker[data-item="{second.pk}"]')
    assert "Skipped." in page.inner_text(".flash.success")
    skipped = Assignment.objects.get(item=first, labeler=labeler)
    assert (skipped.status, skipped.skip_reason) == ("skipped", "Cannot judge chemistry")
    assert not Ranking.objects.exists()

    page.keyboard.press("f")
    focused = active_element(page)
    assert (focused["tag"], focused["name"], focused["form"]) == ("SELECT", "reason", "flag-form")
    assert focused["visible"] and focused["bottom"] <= VIEWPORT["height"]
    page.keyboard.press("ArrowDown")  # the second reason
    page.keyboard.press("Enter")
    page.wait_for_selector(f'.ranker[data-item="{third.pk}"]')
    flag = ItemFlag.objects.get(item=second)
    assert flag.reason == ItemFlag.Reason.values[1] and flag.labeler == labeler
    assert not Ranking.objects.exists()

    # Escape closes the form again and the letters rank once more.
    page.keyboard.press("s")
    page.keyboard.press("Escape")
    assert page.locator(".skip-form").is_hidden()
    page.keyboard.press("b")
    assert page.inner_text("[data-ranking-text]") == "B"


def test_with_a_response_f_shift_f_flags_and_f_ranks(page, live_server):
    project = ProjectFactory(slug="six", responses_per_item=6)
    make_item(project)
    open_label_page(page, live_server, project, "six-labeler")
    assert "Shift" in page.inner_text(".shortcuts") and "F ranks response F" in page.inner_text(".shortcuts")
    page.keyboard.press("f")
    assert page.inner_text("[data-ranking-text]") == "F"
    assert page.locator(".flag-form").is_hidden()
    page.keyboard.press("Shift+F")
    assert active_element(page)["form"] == "flag-form"
    assert page.inner_text("[data-ranking-text]") == "F"


@pytest.mark.parametrize("k", [2, 4, 8])
def test_one_item_fits_the_screen_with_the_ranking_bar_always_visible(page, live_server, k):
    from tests.e2e.conftest import OUTPUT

    project = ProjectFactory(slug=f"fit-{k}", responses_per_item=k)
    texts = [f"Response {n}. {LONG}" if n % 2 == 0 else f"Short answer {n}." for n in range(k)]
    item = make_item(project, texts=texts)
    long_prompt = [{"role": "user", "content": LONG}, {"role": "assistant", "content": "Earlier answer."}, {"role": "user", "content": "And now? " + LONG}]
    item.prompt.messages = long_prompt
    item.prompt.save(update_fields=["messages"])
    open_label_page(page, live_server, project, f"fit-labeler-{k}")

    letters = [chr(ord("A") + n) for n in range(k)]
    assert page.evaluate("window.scrollY") == 0
    for selector in [".builder", ".rank-form .submit", ".pool", ".rankbar", ".shortcuts", ".prompt-box"]:
        assert within_viewport(page.locator(selector).bounding_box()), selector
    bar_top = page.locator(".rankbar").bounding_box()["y"]
    cards = page.locator(".ranker .response")
    heights = set()
    for n in range(k):
        box = cards.nth(n).bounding_box()
        assert within_viewport(box) and box["y"] + box["height"] <= bar_top + 1, letters[n]
        heights.add(round(box["height"]))
    assert len(heights) == 1, heights  # equal heights; the long ones scroll inside
    rows = {round(cards.nth(n).bounding_box()["y"]) for n in range(k)}
    assert len(rows) == (1 if k <= 3 else 2)
    assert page.locator(".pool .chip").all_inner_texts() == letters  # letter order, not id order
    shots = OUTPUT / "labeling-layout"
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / f"label-k{k}-1366x900.png"))

    for key in letters[::-1]:
        page.keyboard.press(key.lower())
    assert page.is_enabled(".rank-form .submit")
    page.keyboard.press("s")
    for selector in [".rankbar", ".rank-form .submit", ".skip-form input[name=reason]"]:
        assert within_viewport(page.locator(selector).bounding_box()), selector
    assert page.evaluate("window.scrollY") == 0
    page.screenshot(path=str(shots / f"label-k{k}-ranked-skip-open-1366x900.png"))

    # On a shorter window the page scrolls, and the ranking bar sticks to the bottom of the window all the way.
    page.set_viewport_size({"width": 1366, "height": 560})
    assert page.evaluate("document.documentElement.scrollHeight") > 560
    for scroll in ["0", "document.documentElement.scrollHeight"]:
        page.evaluate(f"window.scrollTo(0, {scroll})")
        bar = page.locator(".rankbar").bounding_box()
        assert bar["y"] >= 0 and abs(bar["y"] + bar["height"] - 560) < 2, (scroll, bar)


def test_revising_a_ranking_by_keyboard(page, live_server, output_dir):
    from annotation import labeling, selectors

    project = ProjectFactory(slug="revise", responses_per_item=4)
    item = make_item(project)
    labeler = user_with_role(LABELER, "reviser")
    assignment = labeling.assignment_next(labeler=labeler, project=project)
    ids = {response.letter: response.id for response in selectors.item_for_labeler(assignment).responses}
    ranking = labeling.ranking_submit(labeler=labeler, item_id=item.pk, tiers=[[ids["A"]], [ids["B"]], [ids["C"], ids["D"]]], rationale="first go")
    page.set_viewport_size(VIEWPORT)
    log_in(page, live_server.url, labeler.username, "pw-reviser")
    revise_url = f"{live_server.url}/projects/revise/my-rankings/{ranking.pk}/"

    # Enter on the saved ranking changes nothing, and the page says so.
    page.goto(revise_url)
    assert page.inner_text("[data-ranking-text]") == "A > B > C = D"
    assert "Delete" in page.inner_text(".shortcuts")  # the labeling page's keyboard help
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server.url}/projects/revise/my-rankings/")
    assert "Ranking unchanged" in page.inner_text("main")
    unchanged = Ranking.objects.get(pk=ranking.pk)
    assert (unchanged.tiers, unchanged.updated_at) == (ranking.tiers, ranking.updated_at)

    page.goto(revise_url)
    page.keyboard.press("c")  # already placed: ignored, with a hint
    assert page.inner_text("[data-ranking-text]") == "A > B > C = D"
    page.wait_for_function("() => document.querySelector('[data-hint]').textContent.includes('already placed')")
    page.keyboard.press("Backspace")  # takes back the saved letters one by one, worst first
    page.keyboard.press("Backspace")
    assert page.inner_text("[data-ranking-text]") == "A > B"
    for key in ["d", "c"]:
        page.keyboard.press(key)
    assert page.inner_text("[data-ranking-text]") == "A > B > D > C"
    page.keyboard.press("Delete")  # clears; one Backspace brings it back
    assert page.inner_text("[data-ranking-text]") == "—"
    assert page.is_disabled(".rank-form .submit")
    page.keyboard.press("Backspace")
    assert page.inner_text("[data-ranking-text]") == "A > B > D > C"
    page.keyboard.press("Delete")
    for key in ["b", "a", "=", "d", "c"]:
        page.keyboard.press(key)
    assert page.inner_text("[data-ranking-text]") == "B > A = D > C"
    page.screenshot(path=str(output_dir / "revised.png"))
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server.url}/projects/revise/my-rankings/")
    assert "Ranking revised: B > A = D > C" in page.inner_text("main")
    revised = Ranking.objects.get(pk=ranking.pk)
    assert revised.tiers == [[ids["B"]], [ids["A"], ids["D"]], [ids["C"]]] and revised.rationale == "first go"
    assert revised.pairs.count() == 5


def test_the_empty_queue_waits_for_a_running_generation_job(page, live_server):
    from generation.models import GenerationJob

    project = ProjectFactory(slug="waiting", responses_per_item=2)
    done, total = GenerationJob.progress_fields
    job = GenerationJob.objects.create(project=project, status="running", **{done: 2, total: 5})
    open_label_page(page, live_server, project, "waiting-labeler")
    message = page.inner_text(".empty-queue")
    assert f"Generation job {job.pk} is still producing candidates for this project (40%)" in message
    assert "new items will appear here automatically" in message
    item = make_item(project)
    page.wait_for_selector(f'.ranker[data-item="{item.pk}"]', timeout=15_000)  # swapped in by the page's own polling
    page.keyboard.press("b")
    page.keyboard.press("a")
    page.keyboard.press("Enter")
    page.wait_for_selector(".empty-queue")
    assert Ranking.objects.filter(item=item).count() == 1
