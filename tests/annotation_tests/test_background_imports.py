"""Large uploads are imported by a background job (issue 12, item 10): the request answers at once with the job,
every row is checked before any is written, the rows are then written a chunk per transaction, and a failure,
cancel or dead worker leaves nothing of the file. Upload size threshold lowered so that small files go this way."""

import json
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from annotation import imports, services
from annotation.importing import parse_file
from annotation.models import ImportJob, PreferencePair, Prompt
from config.jobs import reap_dead_jobs
from generation.models import Candidate
from tests.worker import Worker, wait_until

ROWS = 5000  # more than one chunk (services.BATCH_SIZE)


def jsonl(rows: int, broken_line: int | None = None) -> bytes:
    lines = []
    for n in range(1, rows + 1):
        if n == broken_line:
            lines.append('{"prompt": ')
        elif n % 10 == 0:
            lines.append(json.dumps({"prompt": f"Which is kinder, number {n}?", "chosen": f"Kind {n}.", "rejected": f"Rude {n}."}))
        else:
            lines.append(json.dumps({"prompt": f"Question number {n}: tell me something true."}))
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def background(settings, tmp_path):
    settings.PREFLOOP_IMPORT_IN_REQUEST_BYTES = 1024
    settings.IMPORTS_DIR = tmp_path / "imports"


def upload(data: bytes, name: str = "big.jsonl") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="application/octet-stream")


@pytest.mark.django_db
def test_a_large_upload_answers_with_a_job_whose_page_shows_it_through(client, admin_user, project, background):
    client.force_login(admin_user)
    response = client.post(reverse("prompts_import", args=[project.slug]), {"file": upload(jsonl(ROWS))}, headers={"HX-Request": "true"})
    assert response.status_code == 200 and b'id="import-progress"' in response.content
    job = ImportJob.objects.get()
    assert job.status == "queued" and job.filename == "big.jsonl" and not Prompt.objects.exists()
    assert job.file_is_upload and (job.kb_total // 2) >= len(jsonl(ROWS)) // 1024

    job = imports.import_run(job.pk)
    assert job.status == "succeeded", job.error
    assert (job.rows_total, job.rows_written, job.prompts_created, job.pairs_created) == (ROWS, ROWS, ROWS, ROWS // 10)
    assert job.kb_done == job.kb_total and Prompt.objects.filter(project=project, import_job=job).count() == ROWS
    assert not Path(job.file_path).parent.exists()  # the upload is gone once imported
    page = client.get(reverse("import_detail", args=[job.pk]))
    assert f"Imported: {ROWS} rows, {ROWS} new prompts, {ROWS // 10} new preference pairs".encode() in page.content
    assert b"hx-trigger" not in page.content  # finished: no more polling


@pytest.mark.django_db
def test_the_api_answers_202_and_the_same_file_in_a_request_gives_the_same_counts(api_client, admin_user, project, background, settings):
    api_client.force_authenticate(admin_user)
    response = api_client.post(f"/api/projects/{project.slug}/prompts/import/", {"file": upload(jsonl(ROWS))}, format="multipart")
    assert response.status_code == 202 and response.json()["status"] == "queued", response.content[:300]
    job = imports.import_run(response.json()["id"])
    body = api_client.get(f"/api/imports/{job.pk}/").json()
    assert (body["status"], body["rows_written"], body["prompts_created"], body["progress"]["percent"]) == ("succeeded", ROWS, ROWS, 100)

    settings.PREFLOOP_IMPORT_IN_REQUEST_BYTES = 10**9  # the same file within the request, into another project
    other = services.project_create(name="Other", slug="other", responses_per_item=4)
    in_request = api_client.post(f"/api/projects/{other.slug}/prompts/import/", {"file": upload(jsonl(ROWS))}, format="multipart")
    assert in_request.status_code == 201 and in_request.json()["prompts_created"] == ROWS


@pytest.mark.django_db
def test_a_broken_row_fails_the_job_with_its_line_and_writes_nothing(client, admin_user, project, background):
    client.force_login(admin_user)
    client.post(reverse("prompts_import", args=[project.slug]), {"file": upload(jsonl(ROWS, broken_line=4321))})
    job = imports.import_run(ImportJob.objects.get().pk)
    assert job.status == "failed" and job.error_line == 4321 and job.problem.startswith("line 4321:")
    assert job.rows_written == 0 and not Prompt.objects.exists()
    page = client.get(reverse("import_detail", args=[job.pk]))
    assert b"Nothing was imported. big.jsonl, line 4321:" in page.content


@pytest.mark.django_db
def test_an_import_whose_worker_died_midway_is_undone_by_the_reaper(project, settings, tmp_path):
    """Rows written by the first chunks of an import, then its worker dies: the reaper fails it and removes them."""
    path = tmp_path / "rows.jsonl"
    path.write_bytes(jsonl(100))
    job = imports.import_job_for_file(project=project, path=path)
    rows = parse_file(open(path, "rb"), "rows.jsonl")
    services.import_chunk(project, rows[:50], "rows.jsonl", 0.0, import_job=job)
    kept = services.prompts_import(project=project, rows=rows[50:60], source="earlier")  # not this job's: kept
    assert Prompt.objects.filter(import_job=job).count() == 50 and PreferencePair.objects.filter(import_job=job).count() == 5
    silent = timezone.now() - timezone.timedelta(seconds=settings.JOB_DEAD_AFTER_SECONDS + 5)
    ImportJob.objects.filter(pk=job.pk).update(status="running", heartbeat_at=silent)

    assert reap_dead_jobs() == 1
    job.refresh_from_db()
    assert job.status == "failed" and job.error == ImportJob.dead_worker_message
    assert not Prompt.objects.filter(import_job=job).exists() and not Candidate.objects.filter(import_job=job).exists()
    assert not PreferencePair.objects.filter(import_job=job).exists()
    assert Prompt.objects.count() == kept.prompts_created == 10 and path.exists()  # the user's own file stays


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_cancel_during_the_write_pass_leaves_nothing_on_a_real_worker(api_client, admin_user, project, background):
    rows = 60_000
    api_client.force_authenticate(admin_user)
    worker = Worker("default")
    try:
        response = api_client.post(f"/api/projects/{project.slug}/prompts/import/", {"file": upload(jsonl(rows))}, format="multipart")
        assert response.status_code == 202
        pk = response.json()["id"]
        wait_until(lambda: ImportJob.objects.get(pk=pk).rows_written > 0 or ImportJob.objects.get(pk=pk).status != "running"
                   and ImportJob.objects.get(pk=pk).status != "queued", 180, f"for the write pass:\n{worker.log[-2000:]}")
        job = ImportJob.objects.get(pk=pk)
        assert job.status == "running" and job.phase == "writing" and job.rows_total == rows, (job.status, job.error)
        assert api_client.post(f"/api/imports/{pk}/cancel/").status_code == 200
        wait_until(lambda: ImportJob.objects.get(pk=pk).status != "running", 120, f"for the cancel:\n{worker.log[-2000:]}")
    finally:
        worker.stop()
    job = ImportJob.objects.get(pk=pk)
    assert job.status == "cancelled" and 0 < job.rows_written < rows
    assert not Prompt.objects.exists() and not Candidate.objects.exists() and not PreferencePair.objects.exists()


@pytest.mark.django_db
def test_who_may_import_follow_and_cancel(client, api_client, users, project, background):
    labeler, researcher = users["labeler"], users["researcher"]
    api_client.force_authenticate(labeler)
    assert api_client.post(f"/api/projects/{project.slug}/prompts/import/", {"file": upload(jsonl(100))}, format="multipart").status_code == 403
    api_client.force_authenticate(researcher)
    assert api_client.post(f"/api/projects/{project.slug}/prompts/import/", {"file": upload(jsonl(100))}, format="multipart").status_code == 403
    assert not ImportJob.objects.exists()

    api_client.force_authenticate(users["admin"])
    job = ImportJob.objects.get(pk=api_client.post(f"/api/projects/{project.slug}/prompts/import/", {"file": upload(jsonl(100))}, format="multipart").json()["id"])
    api_client.force_authenticate(researcher)
    assert api_client.get(f"/api/imports/{job.pk}/").status_code == 200  # researchers follow, as on the Jobs page
    assert api_client.post(f"/api/imports/{job.pk}/cancel/").status_code == 403
    client.force_login(researcher)
    page = client.get(reverse("import_detail", args=[job.pk]))
    assert page.status_code == 200 and b"Cancel import" not in page.content
    assert client.post(reverse("import_cancel", args=[job.pk])).status_code == 403
    api_client.force_authenticate(labeler)
    assert api_client.get(f"/api/imports/{job.pk}/").status_code == 403
    client.force_login(labeler)
    assert client.get(reverse("import_detail", args=[job.pk])).status_code == 403
    job.refresh_from_db()
    assert job.status == "queued"
