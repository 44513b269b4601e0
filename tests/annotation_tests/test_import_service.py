"""Importing into the database: prompts, imported pairs, duplicates, splits, and all-or-nothing."""

import io
import json

import pytest

from annotation import services
from annotation.importing import ImportFileError
from annotation.models import PreferencePair, Prompt
from generation.models import Candidate
from tests.annotation_tests.test_importing import HH_FILE, needs_hh_file

pytestmark = pytest.mark.django_db


def import_rows(project, *rows, **kwargs):
    data = "".join(json.dumps(row) + "\n" for row in rows).encode()
    return services.prompts_import_file(project=project, stream=io.BytesIO(data), filename="rows.jsonl", **kwargs)


def test_prompts_are_created_with_their_fields(project):
    report = import_rows(project, {"prompt": "One?", "id": "x1", "lang": "en"}, {"messages": [{"role": "user", "content": "Two?"}]})
    assert (report.rows, report.prompts_created, report.duplicates_skipped) == (2, 2, 0)
    first = Prompt.objects.get(external_id="x1")
    assert first.project == project
    assert first.messages == [{"role": "user", "content": "One?"}]
    assert first.metadata == {"lang": "en"}
    assert first.source == "rows.jsonl"
    assert first.split == Prompt.Split.TRAIN
    assert len(first.content_hash) == 64


def test_duplicates_within_a_file_and_across_imports_are_skipped_and_counted(project):
    report = import_rows(project, {"prompt": "Same?"}, {"prompt": "Same?"}, {"prompt": "Other?"})
    assert (report.prompts_created, report.duplicates_skipped) == (2, 1)
    again = import_rows(project, {"prompt": "Same?"}, {"prompt": "New?"})
    assert (again.prompts_created, again.duplicates_skipped) == (1, 1)
    assert project.prompts.count() == 3


def test_the_same_prompt_may_live_in_two_projects(project):
    from tests.factories import ProjectFactory

    other = ProjectFactory()
    import_rows(project, {"prompt": "Shared?"})
    assert import_rows(other, {"prompt": "Shared?"}).prompts_created == 1


def test_preference_rows_become_imported_pairs_with_candidates(project):
    report = import_rows(
        project,
        {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
        {"prompt": "2+2?", "chosen": "4", "rejected": "22"},
        {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
    )
    assert (report.prompts_created, report.pairs_created, report.duplicates_skipped) == (1, 2, 1)
    prompt = project.prompts.get()
    assert sorted(prompt.candidates.values_list("text", flat=True)) == ["22", "4", "5"]
    assert set(prompt.candidates.values_list("source", flat=True)) == {Candidate.Source.IMPORT}
    pair = PreferencePair.objects.get(rejected__text="5")
    assert (pair.chosen.text, pair.source, pair.margin, pair.ranking, pair.project) == ("4", "import", 1.0, None, project)


def test_identical_chosen_and_rejected_are_skipped_and_reported(project):
    report = import_rows(project, {"prompt": "q", "chosen": "same", "rejected": "same"})
    assert (report.pairs_created, report.identical_pairs_skipped) == (0, 1)
    assert "identical" in report.summary()


@needs_hh_file
def test_the_real_hh_file_imports_and_reimports_as_duplicates(project):
    with open(HH_FILE, "rb") as stream:
        report = services.prompts_import_file(project=project, stream=stream, filename=HH_FILE.name)
    assert report.rows == 2312
    assert report.pairs_created + report.duplicates_skipped == 2312
    assert report.pairs_created > 2200
    assert project.pairs.filter(source="import").count() == report.pairs_created
    assert project.prompts.count() == report.prompts_created
    with open(HH_FILE, "rb") as stream:
        again = services.prompts_import_file(project=project, stream=stream, filename=HH_FILE.name)
    assert (again.prompts_created, again.pairs_created, again.duplicates_skipped) == (0, 0, 2312)


def test_a_broken_line_rejects_the_whole_file(project):
    import_rows(project, {"prompt": "Existing?"})
    data = b'{"prompt": "New 1"}\n{"prompt": "q", "chosen": "a", "rejected": "b"}\n{"prompt": \n'
    with pytest.raises(ImportFileError, match="line 3"):
        services.prompts_import_file(project=project, stream=io.BytesIO(data), filename="bad.jsonl")
    assert project.prompts.count() == 1
    assert not PreferencePair.objects.exists()
    assert not Candidate.objects.exists()


def test_heldout_fraction_is_deterministic_by_content(project):
    rows = [{"prompt": f"Prompt {n}?"} for n in range(400)]
    import_rows(project, *rows, heldout_fraction=0.25)
    heldout = set(project.prompts.filter(split="heldout").values_list("content_hash", flat=True))
    assert 60 < len(heldout) < 140
    project.prompts.all().delete()
    import_rows(project, *rows, heldout_fraction=0.25)
    assert set(project.prompts.filter(split="heldout").values_list("content_hash", flat=True)) == heldout


def test_an_explicit_split_wins_over_the_fraction(project):
    import_rows(project, {"prompt": "a", "split": "heldout"}, {"prompt": "b", "split": "train"}, heldout_fraction=0.0)
    assert dict(project.prompts.values_list("messages__0__content", "split")) == {"a": "heldout", "b": "train"}


def test_a_bad_heldout_fraction_is_refused(project):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        import_rows(project, {"prompt": "a"}, heldout_fraction=1.5)


def test_large_files_are_imported_in_chunks_all_or_nothing(project):
    assert services.BATCH_SIZE < 2500
    rows = [{"prompt": f"Prompt {n}?"} for n in range(2500)] + [{"prompt": "Prompt 1?"}]
    report = import_rows(project, *rows)
    assert (report.rows, report.prompts_created, report.duplicates_skipped) == (2501, 2500, 1)
    broken = b"".join(json.dumps({"prompt": f"Other {n}"}).encode() + b"\n" for n in range(2500)) + b'{"prompt": 1}\n'
    with pytest.raises(ImportFileError, match="line 2501"):
        services.prompts_import_file(project=project, stream=io.BytesIO(broken), filename="big.jsonl")
    assert project.prompts.count() == 2500
