"""Export requests from the browser and the API: permissions, small exports at once, large ones in the background."""

import json

import pytest
from django.urls import reverse

from annotation import exports
from annotation.models import Export
from tests.annotation_tests.test_exporting import project  # noqa: F401 - fixture
from tests.training_tests.conftest import ranked_project, tiny_version  # noqa: F401 - fixtures


def test_a_researcher_exports_from_the_browser_and_downloads_data_and_card(client, researcher, project):  # noqa: F811
    client.force_login(researcher)
    assert client.get(reverse("export_create", args=[project.slug])).status_code == 200
    response = client.post(reverse("export_create", args=[project.slug]), {
        "projects": [project.slug], "export_format": "jsonl", "sources": ["human"], "exclude_flagged": "on", "eval_fraction": "0.1",
    })
    assert response.status_code == 302, response.context["form"].errors
    export = Export.objects.get()
    assert response.url == reverse("export_detail", args=[export.pk])
    assert export.status == "succeeded" and export.rows_done == export.rows_total == 18 and export.requested_by == researcher
    page = client.get(reverse("export_detail", args=[export.pk])).content.decode()
    assert "Download data" in page and export.sha256 in page
    data = b"".join(client.get(reverse("export_data", args=[export.pk])).streaming_content)
    assert len(data.splitlines()) == 18 and json.loads(data.splitlines()[0])["source"] == "human"
    card = b"".join(client.get(reverse("export_card", args=[export.pk])).streaming_content).decode()
    assert export.sha256 in card


def test_bad_filters_are_shown_on_the_form(client, researcher, project):  # noqa: F811
    client.force_login(researcher)
    response = client.post(reverse("export_create", args=[project.slug]), {"projects": [project.slug], "export_format": "jsonl", "sources": ["human"], "created_from": "2026-11-30", "created_to": "2026-11-01"})
    assert response.status_code == 422 and "before the start date" in response.content.decode()
    assert not Export.objects.exists()


def test_labelers_cannot_export(client, api_client, labeler, project):  # noqa: F811
    client.force_login(labeler)
    assert client.get(reverse("export_create", args=[project.slug])).status_code == 403
    assert client.post(reverse("export_create", args=[project.slug]), {"projects": [project.slug], "export_format": "jsonl"}).status_code == 403
    api_client.force_authenticate(labeler)
    assert api_client.post("/api/exports/", {"projects": [project.slug]}, format="json").status_code == 403
    assert api_client.get("/api/exports/").status_code == 403
    assert not Export.objects.exists()


def test_the_api_exports_and_downloads(api_client, researcher, project):  # noqa: F811
    api_client.force_authenticate(researcher)
    response = api_client.post("/api/exports/", {"projects": [project.slug], "format": "parquet", "pair_filter": {"sources": ["import"]}}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["status"], body["rows_done"], body["format"]) == ("succeeded", 1, "parquet")
    download = api_client.get(body["data_url"])
    assert download.status_code == 200 and b"".join(download.streaming_content)[:4] == b"PAR1"
    assert api_client.get(f"/api/exports/{body['id']}/").json()["sha256"] == body["sha256"]
    bad = api_client.post("/api/exports/", {"projects": ["nope"], "format": "csv", "pair_filter": {"min_agreement": 3}}, format="json")
    assert bad.status_code == 400 and {"projects", "format"} <= set(bad.json())
    bad = api_client.post("/api/exports/", {"projects": [project.slug], "pair_filter": {"min_agreement": 3}}, format="json")
    assert bad.status_code == 400 and "min_agreement" in bad.json()


def test_large_exports_are_queued_and_written_by_the_job(project, monkeypatch):  # noqa: F811
    monkeypatch.setattr(exports, "SYNC_ROWS", 5)
    export = exports.export_create(projects=[project], export_format="hf")
    assert export.status == "queued" and export.rows_total == 19  # the task is sent when the transaction commits
    export = exports.export_run(export.pk)
    assert export.status == "succeeded" and export.rows_done == 19 and export.data_path.endswith(".zip")
    assert exports.export_run(export.pk).status == "succeeded"  # delivered twice: nothing happens
