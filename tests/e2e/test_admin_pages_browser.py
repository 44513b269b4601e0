"""What a new admin ran into on the smaller pages, in Chromium at 1366x900: cancel asks first, the model registry
fits the screen, the API docs are one click away, sampling settings read as words and the search box has a label."""

import pytest

from annotation.roles import ADMIN
from generation.models import Candidate, GenerationJob, GenerationJobModel, ModelVersion
from tests.e2e.conftest import log_in
from tests.factories import ProjectFactory, PromptFactory, user_with_role

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def admin_page(page, live_server):
    page.set_viewport_size({"width": 1366, "height": 900})
    admin = user_with_role(ADMIN, "ada-admin")
    log_in(page, live_server.url, admin.username, "pw-ada-admin")
    return page


def queued_job(project):
    policy, _ = ModelVersion.objects.get_or_create(name="smollm2-135m-instruct", defaults={"base_model": "org/policy"})
    job = GenerationJob.objects.create(project=project, prompts_total=24)
    GenerationJobModel.objects.create(job=job, model_version=policy, n=2)
    return job


def test_cancel_asks_first_and_dismissing_keeps_the_job(admin_page, live_server, output_dir):
    job = queued_job(ProjectFactory())
    admin_page.goto(f"{live_server.url}/jobs/generation/{job.pk}/")
    questions = []

    def answer(dialog, accept):
        questions.append(dialog.message)
        dialog.accept() if accept else dialog.dismiss()

    admin_page.once("dialog", lambda dialog: answer(dialog, accept=False))
    admin_page.click("text=Cancel job")
    admin_page.wait_for_timeout(300)
    job.refresh_from_db()
    assert job.status == "queued" and questions == ["Cancel this job? It stops at its next step and cannot be resumed."]

    admin_page.once("dialog", lambda dialog: answer(dialog, accept=True))
    admin_page.click("text=Cancel job")
    admin_page.wait_for_load_state()
    admin_page.wait_for_function("() => !document.body.innerText.includes('Cancel job')")
    job.refresh_from_db()
    assert job.status == "cancelled" and len(questions) == 2
    admin_page.screenshot(path=str(output_dir / "cancelled.png"))


def test_model_registry_fits_the_screen_with_long_adapter_paths(admin_page, live_server, output_dir):
    long_path = "/srv/prefloop/var/data/artifacts/runs/" + "round-7-reward-model-with-a-long-name/" * 3 + "adapter"
    ModelVersion.objects.create(name="smollm2-135m-instruct", base_model="HuggingFaceTB/SmolLM2-135M-Instruct")
    ModelVersion.objects.create(name="round7-reward", kind="reward", base_model="HuggingFaceTB/SmolLM2-135M-Instruct", adapter_path=long_path)
    admin_page.goto(live_server.url + "/models/")
    assert long_path in admin_page.locator("table").inner_text().replace("\n", "")
    width = admin_page.evaluate("() => document.documentElement.scrollWidth")
    admin_page.screenshot(path=str(output_dir / "models.png"), full_page=True)
    assert width <= 1366, f"the registry is {width} px wide at 1366"


def test_api_docs_link_sampling_in_words_and_a_labelled_search_box(admin_page, live_server):
    project = ProjectFactory()
    prompt = PromptFactory(project=project)
    Candidate.objects.create(
        prompt=prompt, text="Paris.", text_hash="h", source="generated", model_version=queued_job(project).model_plan.get().model_version,
        sampling={"temperature": 0.7, "top_p": 0.95, "max_new_tokens": 256, "seed": 3, "stop": None},
    )
    admin_page.goto(f"{live_server.url}/projects/{project.slug}/prompts/{prompt.pk}/")
    assert "temperature 0.7 · top_p 0.95 · up to 256 new tokens · seed 3" in admin_page.inner_text("main")
    assert "{" not in admin_page.locator("main .meta").all_inner_texts()[-1]

    admin_page.goto(f"{live_server.url}/projects/{project.slug}/prompts/")
    admin_page.get_by_label("Search").fill("zzz-nothing")
    admin_page.wait_for_function("() => location.search.includes('zzz-nothing')")

    admin_page.click("nav >> text=API")
    admin_page.wait_for_selector(".swagger-ui")
    assert "/api/docs/" in admin_page.url


def test_a_large_upload_shows_its_import_progress_until_done(admin_page, live_server, output_dir, settings, tmp_path):
    """The form answers at once with the import's progress; the panel polls until the import is written."""
    import json
    import threading

    from django.db import connection

    from annotation import imports
    from annotation.models import ImportJob, Prompt

    settings.PREFLOOP_IMPORT_IN_REQUEST_BYTES = 1024
    settings.IMPORTS_DIR = tmp_path / "imports"
    project = ProjectFactory()
    data = tmp_path / "big.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Question {n}: what is true?"}) + "\n" for n in range(3000)))
    admin_page.goto(f"{live_server.url}/projects/{project.slug}/import/")
    admin_page.set_input_files("input[type=file]", str(data))
    admin_page.click("button:has-text('Import')")
    admin_page.wait_for_selector("#import-progress")
    assert "Queued" in admin_page.inner_text("#import-progress")
    admin_page.screenshot(path=str(output_dir / "import-queued.png"))

    job = ImportJob.objects.get()

    def run_as_the_default_worker():
        try:
            imports.import_run(job.pk)
        finally:
            connection.close()

    worker = threading.Thread(target=run_as_the_default_worker)
    worker.start()
    worker.join(timeout=120)
    admin_page.wait_for_function("() => document.querySelector('#import-progress').innerText.includes('Imported: 3000 rows')", timeout=15000)
    assert Prompt.objects.filter(project=project).count() == 3000
    admin_page.screenshot(path=str(output_dir / "import-done.png"))
