"""Demonstrations in Chromium, keyboard only: a labeler writes answers; a labeler ranks an item, rewrites the best
response in the editor while its diff follows, and submits (the Demonstration and its pair "edited > original" exist);
an admin rejects one with a reason and the labeler reads it on their list. Every page fits a 1366x900 screen."""

import pytest

from annotation import demonstrating
from annotation.models import Demonstration, PreferencePair, Ranking
from annotation.roles import ADMIN, LABELER
from generation.models import Candidate
from tests.e2e.conftest import log_in
from tests.e2e.test_labeling_browser import LONG, active_element, letters_to_ids, within_viewport
from tests.factories import ProjectFactory, PromptFactory, make_item, user_with_role

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

VIEWPORT = {"width": 1366, "height": 900}
MODEL_NAME = "test-policy"  # make_item's model version


def open_as(page, live_server, username, path):
    user = user_with_role(LABELER, username)
    page.set_viewport_size(VIEWPORT)
    log_in(page, live_server.url, username, f"pw-{username}")
    page.goto(live_server.url + path)
    return user


def test_a_labeler_writes_answers_with_the_keyboard_alone(page, live_server, output_dir):
    project = ProjectFactory(slug="write-e2e", name="Write", demonstration_mode="write")
    first = PromptFactory(project=project, messages=[{"role": "user", "content": "How do I boil an egg?"}])
    second = PromptFactory(project=project, messages=[{"role": "user", "content": "Name a prime number."}])
    labeler = open_as(page, live_server, "writer", f"/projects/{project.slug}/write/")

    assert page.locator(".writer").get_attribute("data-prompt") == str(first.pk)
    focused = active_element(page)
    assert (focused["tag"], focused["name"]) == ("TEXTAREA", "text")  # the cursor is in the answer box at once
    page.keyboard.type("Simmer it for 8 minutes.")  # S and W land in the box while typing
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("Then cool it in cold water.")
    assert page.input_value("textarea[name=text]") == "Simmer it for 8 minutes.\nThen cool it in cold water."
    assert "Shift" in page.inner_text(".shortcuts") and "skip" in page.inner_text(".shortcuts")
    for selector in [".prompt-box", "textarea[name=text]", ".editbar", ".editbar .submit", ".shortcuts"]:
        assert within_viewport(page.locator(selector).bounding_box()), selector
    assert page.evaluate("document.documentElement.scrollHeight") <= VIEWPORT["height"]
    page.screenshot(path=str(output_dir / "1-write-typed-1366x900.png"))
    page.keyboard.press("Enter")

    page.wait_for_selector(f'.writer[data-prompt="{second.pk}"]')
    assert "Answer saved" in page.inner_text(".flash.success")
    demonstration = Demonstration.objects.get(labeler=labeler)
    assert demonstration.text == "Simmer it for 8 minutes.\nThen cool it in cold water."
    assert (demonstration.source, demonstration.status, demonstration.prompt_id) == ("written", "pending", first.pk)
    assert demonstration.time_spent_ms > 0
    # The next prompt's box takes the cursor once htmx has settled the swap (just after the new prompt is in the page).
    page.wait_for_function("() => document.activeElement && document.activeElement.name === 'text'", timeout=5_000)

    # Esc leaves the box, S skips the prompt; nothing is left then.
    page.keyboard.press("Escape")
    assert active_element(page)["tag"] == "BODY"
    page.keyboard.press("s")
    page.wait_for_selector(".empty-queue")
    assert "Nothing left to answer" in page.inner_text(".empty-queue")
    assert Demonstration.objects.count() == 1
    page.screenshot(path=str(output_dir / "2-write-nothing-left-1366x900.png"))


def test_a_labeler_ranks_then_edits_the_best_response_and_submits_with_enter(page, live_server, output_dir):
    project = ProjectFactory(slug="edit-e2e", name="Edit", demonstration_mode="edit_optional", responses_per_item=4)
    texts = [
        "The sky is blue because air scatters blue light more than red light.",
        "Because of the ocean.",
        "It is blue.",
        "Sunlight is scattered by the molecules of the air, and blue light is scattered the most.",
    ]
    first = make_item(project, texts=texts)
    second = make_item(project, texts=["Paris.", "Lyon.", "The capital of France is Paris.", "France."])
    labeler = open_as(page, live_server, "editor", f"/projects/{project.slug}/label/")
    ids = letters_to_ids(page, labeler)
    best = next(letter for letter, candidate in ids.items() if Candidate.objects.get(pk=candidate).text.startswith("Sunlight"))
    order = [best] + sorted(set(ids) - {best})
    for key in order:
        page.keyboard.press(key.lower())
    assert page.inner_text("[data-ranking-text]") == " > ".join(order)
    page.keyboard.press("Enter")

    # The editor replaces the item, starting from the response ranked best, the cursor at the end of its text.
    page.wait_for_selector(".editor")
    original = Candidate.objects.get(pk=ids[best])
    assert f"Saved: {' > '.join(order)}" in page.inner_text(".flash.success")
    assert page.input_value("textarea[name=text]") == original.text == texts[3]
    assert f"Rewrite response {best}" in page.inner_text(".edit-pane header")
    page.wait_for_function("() => document.activeElement && document.activeElement.name === 'text'", timeout=5_000)
    assert MODEL_NAME not in page.content()
    page.keyboard.type(" That is why sunsets look red.")
    page.keyboard.press("Control+Home")
    page.keyboard.press("Control+Shift+ArrowRight")
    page.keyboard.type("Daylight")  # replaces "Sunlight"
    edited = "Daylight is scattered by the molecules of the air, and blue light is scattered the most. That is why sunsets look red."
    assert page.input_value("textarea[name=text]") == edited
    page.wait_for_function("() => document.querySelectorAll('.editor .diff ins').length >= 2")
    assert page.locator(".editor .diff del").all_inner_texts() == ["Sunlight"]
    inserted = page.locator(".editor .diff ins").all_inner_texts()
    assert inserted[0] == "Daylight" and "That is why sunsets look red." in inserted[-1]
    assert page.inner_text("[data-diff-summary]") == "+7 / −1 words"
    for selector in [".prompt-box", "textarea[name=text]", ".editor .diff", ".editbar", ".editbar .submit", ".shortcuts"]:
        assert within_viewport(page.locator(selector).bounding_box()), selector
    assert page.evaluate("document.documentElement.scrollHeight") <= VIEWPORT["height"]
    page.screenshot(path=str(output_dir / "1-editor-with-diff-1366x900.png"))
    page.keyboard.press("Enter")

    page.wait_for_selector(f'.ranker[data-item="{second.pk}"]')
    assert "Edit saved" in page.inner_text(".flash.success")
    demonstration = Demonstration.objects.get(labeler=labeler)
    ranking = Ranking.objects.get(item=first)
    assert (demonstration.source, demonstration.text, demonstration.edited_from_id, demonstration.ranking) == ("edited", edited, ids[best], ranking)
    pair = PreferencePair.objects.get(source="edit")
    assert (pair.chosen.text, pair.rejected_id, pair.demonstration, pair.labeler) == (edited, ids[best], demonstration, labeler)
    assert pair.chosen.source == "edit" and pair.chosen.model_version is None

    # The second item: rank, change the text, then Esc twice skips the edit (once only warns).
    for key in ["c", "a", "b", "d"]:
        page.keyboard.press(key)
    page.keyboard.press("Enter")
    page.wait_for_selector(".editor")
    # htmx focuses the box once it has settled the swap: keys typed before land nowhere.
    page.wait_for_function("() => document.activeElement && document.activeElement.name === 'text'", timeout=5_000)
    page.keyboard.type(" Indeed.")
    page.keyboard.press("Escape")
    page.wait_for_function("() => document.querySelector('[data-hint]').innerText.includes('Esc again')", timeout=5_000)
    page.screenshot(path=str(output_dir / "2-editor-esc-once-1366x900.png"))
    page.keyboard.press("Escape")
    page.wait_for_selector(".empty-queue")
    assert "Edit skipped" in page.inner_text(".flash.success")
    assert Demonstration.objects.count() == 1 and Ranking.objects.count() == 2


def test_an_edit_required_project_brings_the_editor_back_until_the_edit_is_made(page, live_server, output_dir):
    project = ProjectFactory(slug="required-e2e", demonstration_mode="edit_required", responses_per_item=2)
    make_item(project, texts=["Yes.", "No, because it would hurt."])
    later = make_item(project)
    labeler = open_as(page, live_server, "required-editor", f"/projects/{project.slug}/label/")
    ids = letters_to_ids(page, labeler)
    best = next(letter for letter, candidate in ids.items() if Candidate.objects.get(pk=candidate).text.startswith("No"))
    page.keyboard.press(best.lower())
    page.keyboard.press("b" if best == "A" else "a")
    page.keyboard.press("Enter")
    page.wait_for_selector(".editor")
    assert page.locator(".skip-edit-form").count() == 0
    page.keyboard.press("Enter")  # unchanged: refused in the page, nothing sent
    assert "Change the response first" in page.inner_text("[data-hint]")
    page.reload()  # the editor comes back before any new item
    page.wait_for_selector(".editor")
    assert page.input_value("textarea[name=text]") == "No, because it would hurt."
    page.keyboard.type(" Be kind.")
    page.keyboard.press("Enter")
    page.wait_for_selector(f'.ranker[data-item="{later.pk}"]')
    assert Demonstration.objects.get().text == "No, because it would hurt. Be kind."


def test_an_admin_rejects_with_a_reason_and_the_labeler_reads_it(page, live_server, output_dir):
    project = ProjectFactory(slug="review-e2e", name="Review", demonstration_mode="write")
    labeler = user_with_role(LABELER, "reviewed-labeler")
    answers = ["Two plus two is five.", "The capital of Japan is Tokyo.", "Water freezes at 0 °C."]
    written = [
        demonstrating.demonstration_write(labeler=labeler, prompt=PromptFactory(project=project), text=text) for text in answers
    ]
    admin = user_with_role(ADMIN, "reviewing-admin")
    page.set_viewport_size(VIEWPORT)
    log_in(page, live_server.url, admin.username, "pw-reviewing-admin")
    page.goto(f"{live_server.url}/projects/{project.slug}/")
    page.click("text=Review demonstrations")
    page.wait_for_selector(".review-row.selected")
    assert page.locator(".review-row.selected").get_attribute("data-demonstration") == str(written[0].pk)

    page.keyboard.press("r")  # reject the first: the cursor goes to its reason box
    focused = active_element(page)
    assert (focused["tag"], focused["name"], focused["form"]) == ("INPUT", "reason", "reject-form")
    page.keyboard.type("Arithmetic is wrong: 2 + 2 = 4.")
    page.keyboard.press("Enter")
    page.wait_for_selector(f'#demonstration-{written[0].pk}.rejected')
    assert page.locator(".review-row.selected").get_attribute("data-demonstration") == str(written[1].pk)
    page.keyboard.press("a")  # accept the second; the third is selected next
    page.wait_for_selector(f'#demonstration-{written[1].pk}.accepted')
    assert page.locator(".review-row.selected").get_attribute("data-demonstration") == str(written[2].pk)
    page.keyboard.press("k")
    assert page.locator(".review-row.selected").get_attribute("data-demonstration") == str(written[1].pk)
    assert page.inner_text("#review-counts").startswith("1 awaiting review · 1 accepted · 1 rejected")
    page.screenshot(path=str(output_dir / "1-review-1366x900.png"))
    statuses = dict(Demonstration.objects.values_list("pk", "status"))
    assert [statuses[d.pk] for d in written] == ["rejected", "accepted", "pending"]
    assert Demonstration.objects.get(pk=written[0].pk).review_reason == "Arithmetic is wrong: 2 + 2 = 4."

    page.select_option("#filter-status", "rejected")
    page.click(".filters button")
    page.wait_for_selector(".review-row")
    assert page.locator(".review-row").count() == 1

    # The labeler reads the decision and the reason on their list.
    page.context.clear_cookies()
    log_in(page, live_server.url, labeler.username, "pw-reviewed-labeler")
    page.goto(f"{live_server.url}/projects/{project.slug}/my-demonstrations/")
    rejected_row = page.locator(f'tr[data-demonstration="{written[0].pk}"]')
    assert "Rejected" in rejected_row.inner_text() and "Arithmetic is wrong: 2 + 2 = 4." in rejected_row.inner_text()
    assert "Accepted" in page.locator(f'tr[data-demonstration="{written[1].pk}"]').inner_text()
    rejected_row.locator("summary").click()
    assert "Two plus two is five." in rejected_row.locator(".answer-text").inner_text()
    assert "reviewing-admin" not in page.content()
    page.screenshot(path=str(output_dir / "2-my-demonstrations-1366x900.png"), full_page=True)


def test_my_demonstrations_shows_an_edit_as_its_diff(page, live_server, output_dir):
    project = ProjectFactory(slug="diff-e2e", demonstration_mode="edit_optional", responses_per_item=2)
    item = make_item(project, texts=["Cats sleep a lot.", "Dogs bark."])
    labeler = user_with_role(LABELER, "diff-labeler")
    from annotation import labeling

    labeling.assignment_next(labeler=labeler, project=project)
    ids = list(item.candidates.order_by("id").values_list("id", flat=True))
    ranking = labeling.ranking_submit(labeler=labeler, item_id=item.pk, tiers=[[ids[0]], [ids[1]]])
    demonstrating.demonstration_edit(labeler=labeler, ranking=ranking, text="Cats sleep sixteen hours daily.")
    page.set_viewport_size(VIEWPORT)
    log_in(page, live_server.url, labeler.username, "pw-diff-labeler")
    page.goto(f"{live_server.url}/projects/{project.slug}/my-demonstrations/")
    page.click("tbody summary")
    assert page.locator("tbody .diff del").all_inner_texts() == ["a lot."]
    assert page.locator("tbody .diff ins").all_inner_texts() == ["sixteen hours daily."]
    assert MODEL_NAME not in page.content()
    page.screenshot(path=str(output_dir / "my-demonstrations-diff-1366x900.png"), full_page=True)


def test_the_editor_fits_one_screen_with_a_long_prompt_and_a_long_response(page, live_server, output_dir):
    project = ProjectFactory(slug="long-edit", demonstration_mode="edit_required", responses_per_item=2)
    item = make_item(project, texts=[f"A long answer. {LONG}", "Short."])
    item.prompt.messages = [{"role": "user", "content": LONG}, {"role": "assistant", "content": "Earlier."}, {"role": "user", "content": "And now? " + LONG}]
    item.prompt.save(update_fields=["messages"])
    labeler = open_as(page, live_server, "long-editor", f"/projects/{project.slug}/label/")
    ids = letters_to_ids(page, labeler)
    best = next(letter for letter, candidate in ids.items() if Candidate.objects.get(pk=candidate).text.startswith("A long"))
    page.keyboard.press(best.lower())
    page.keyboard.press("b" if best == "A" else "a")
    page.keyboard.press("Enter")
    page.wait_for_selector(".editor")
    page.keyboard.type(" One more line.")
    page.wait_for_function("() => document.querySelectorAll('.editor .diff ins').length === 1")
    assert page.evaluate("window.scrollY") == 0
    assert page.evaluate("document.documentElement.scrollHeight") <= VIEWPORT["height"]
    for selector in [".prompt-box", "textarea[name=text]", ".editor .diff", ".editbar", ".editbar .submit", ".shortcuts"]:
        assert within_viewport(page.locator(selector).bounding_box()), selector
    assert page.locator("textarea[name=text]").bounding_box()["height"] > 250
    assert within_viewport(page.locator(".editor .diff ins").bounding_box())  # the diff pane follows the change
    page.screenshot(path=str(output_dir / "long-editor-1366x900.png"))
