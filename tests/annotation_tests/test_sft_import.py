"""SFT rows (demonstrations) imported from the same paths as prompts: the formats people have, broken rows
rejecting the file whole with their line, duplicates, and a failed background import leaving nothing."""

import io
import json

import pytest
from django.utils import timezone

from annotation import imports, services
from annotation.importing import ImportFileError, parse_file
from annotation.models import Demonstration, ImportJob, Prompt
from config.jobs import reap_dead_jobs

pytestmark = pytest.mark.django_db

CONVERSATION = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ]
}
PROMPT_COMPLETION_STRINGS = {"prompt": "Two plus two?", "completion": "Four.", "id": "pc-1"}
PROMPT_COMPLETION_LISTS = {
    "prompt": [{"role": "user", "content": "Say hi."}],
    "completion": [{"role": "assistant", "content": "Hi!"}],
}


def jsonl(*rows) -> bytes:
    return "".join(row if isinstance(row, str) else json.dumps(row) + "\n" for row in rows).encode()


def import_rows(project, *rows):
    return services.prompts_import_file(project=project, stream=io.BytesIO(jsonl(*rows)), filename="sft.jsonl")


def test_each_sft_format_parses_into_a_prompt_and_its_answer():
    rows = parse_file(io.BytesIO(jsonl(CONVERSATION, PROMPT_COMPLETION_STRINGS, PROMPT_COMPLETION_LISTS)), "sft.jsonl")
    assert [row.messages for row in rows] == [
        CONVERSATION["messages"][:2],
        [{"role": "user", "content": "Two plus two?"}],
        PROMPT_COMPLETION_LISTS["prompt"],
    ]
    assert [row.completion for row in rows] == ["Paris.", "Four.", "Hi!"]
    assert all(row.is_demonstration and not row.is_preference and not row.is_prompt_only for row in rows)
    assert rows[1].external_id == "pc-1"


@pytest.mark.parametrize(
    "broken, reason",
    [
        ({"completion": "Orphan."}, "needs its `prompt`"),
        ({"prompt": "Q?", "completion": "   "}, "`completion` is empty"),
        ({"prompt": "Q?", "completion": [{"role": "user", "content": "not an answer"}]}, "must end with an assistant message"),
        ({"prompt": "Q?", "completion": "A.", "chosen": "x", "rejected": "y"}, "not both"),
        ({"messages": [{"role": "assistant", "content": "Hello?"}]}, "needs the user turn before it"),
        ({"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": ""}]}, "`messages` is empty"),
        ({"prompt": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A"}], "completion": "B"}, "must end with a user turn"),
    ],
)
def test_a_broken_sft_row_rejects_the_file_whole_with_its_line(project, broken, reason):
    with pytest.raises(ImportFileError) as error:
        import_rows(project, CONVERSATION, PROMPT_COMPLETION_STRINGS, broken)
    assert error.value.line == 3 and reason in error.value.reason
    assert not Prompt.objects.exists() and not Demonstration.objects.exists()


def test_imported_demonstrations_are_accepted_with_their_provenance(project):
    report = import_rows(project, CONVERSATION, PROMPT_COMPLETION_STRINGS, {"prompt": "Plain prompt?"})
    assert (report.rows, report.prompts_created, report.demonstrations_created, report.duplicates_skipped) == (3, 3, 2, 0)
    assert "2 new demonstrations" in report.summary()
    demonstration = Demonstration.objects.get(text="Four.")
    assert demonstration.source == Demonstration.Source.IMPORT and demonstration.status == Demonstration.Status.ACCEPTED
    assert demonstration.labeler is None and demonstration.project == project
    assert demonstration.prompt.messages == [{"role": "user", "content": "Two plus two?"}]
    assert demonstration.metadata == {"file": "sft.jsonl", "line": 2, "external_id": "pc-1"}


def test_the_same_answer_to_the_same_prompt_is_a_duplicate_but_another_answer_is_kept(project):
    import_rows(project, PROMPT_COMPLETION_STRINGS)
    again = import_rows(project, PROMPT_COMPLETION_STRINGS, {"prompt": "Two plus two?", "completion": "4"})
    assert (again.prompts_created, again.demonstrations_created, again.duplicates_skipped) == (0, 1, 1)
    assert sorted(Demonstration.objects.values_list("text", flat=True)) == ["4", "Four."]
    assert Prompt.objects.count() == 1


def test_a_prompt_that_exists_gets_the_demonstration_without_a_second_prompt(project):
    import_rows(project, {"prompt": "Two plus two?"})
    report = import_rows(project, PROMPT_COMPLETION_STRINGS)
    assert (report.prompts_created, report.demonstrations_created) == (0, 1)
    assert Demonstration.objects.get().prompt == Prompt.objects.get()


def test_the_api_imports_sft_rows_and_counts_them(api_client, admin_user, project):
    api_client.force_authenticate(admin_user)
    response = api_client.post(
        f"/api/projects/{project.slug}/prompts/import/", {"rows": [CONVERSATION, PROMPT_COMPLETION_LISTS]}, format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["demonstrations_created"] == 2
    assert Demonstration.objects.filter(status="accepted", source="import").count() == 2


def test_the_command_imports_sft_rows(project, tmp_path):
    from django.core.management import call_command

    path = tmp_path / "sft.jsonl"
    path.write_bytes(jsonl(CONVERSATION, PROMPT_COMPLETION_STRINGS))
    out = io.StringIO()
    call_command("import_prompts", project.slug, str(path), stdout=out)
    assert "2 new demonstrations" in out.getvalue()
    assert Demonstration.objects.count() == 2


def test_a_failed_background_import_removes_its_demonstrations(project, settings, tmp_path):
    path = tmp_path / "sft.jsonl"
    path.write_bytes(jsonl(*({"prompt": f"Question {n}?", "completion": f"Answer {n}."} for n in range(20))))
    job = imports.import_job_for_file(project=project, path=path)
    services.import_chunk(project, parse_file(open(path, "rb"), "sft.jsonl")[:10], "sft.jsonl", 0.0, import_job=job)
    assert Demonstration.objects.filter(import_job=job).count() == 10
    silent = timezone.now() - timezone.timedelta(seconds=settings.JOB_DEAD_AFTER_SECONDS + 5)
    ImportJob.objects.filter(pk=job.pk).update(status="running", heartbeat_at=silent)

    assert reap_dead_jobs() == 1
    assert not Demonstration.objects.exists() and not Prompt.objects.exists()
