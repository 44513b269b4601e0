"""The command line: create_project, import_prompts, add_user, register_model."""

import json

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from annotation.models import Project
from annotation.roles import can_label, can_manage
from generation.models import ModelVersion
from tests.annotation_tests.test_importing import HH_FILE, needs_hh_file

pytestmark = pytest.mark.django_db


def test_create_project(capsys):
    call_command("create_project", "chat", "--name", "Chat", "--k", "4", "--rankings-per-item", "2", "--guidelines", "Be *kind*")
    project = Project.objects.get(slug="chat")
    assert (project.name, project.responses_per_item, project.rankings_per_item, project.guidelines) == ("Chat", 4, 2, "Be *kind*")
    assert "Created project chat" in capsys.readouterr().out


def test_create_project_reads_guidelines_from_a_file(tmp_path):
    guidelines = tmp_path / "g.md"
    guidelines.write_text("# Rules\nBe brief.")
    call_command("create_project", "g", "--guidelines-file", str(guidelines))
    assert Project.objects.get(slug="g").guidelines == "# Rules\nBe brief."


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--k", "9"], "responses_per_item"),
        (["--k", "1"], "responses_per_item"),
        (["--rankings-per-item", "6"], "rankings_per_item"),
    ],
)
def test_create_project_refuses_bad_values(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("create_project", "bad", *args)
    assert not Project.objects.exists()


def test_create_project_refuses_a_taken_slug(project):
    with pytest.raises(CommandError, match="slug"):
        call_command("create_project", project.slug)


@needs_hh_file
def test_import_prompts_from_the_hh_file(project, capsys):
    call_command("import_prompts", project.slug, str(HH_FILE), "--heldout-fraction", "0.1")
    out = capsys.readouterr().out
    assert "Imported into demo-project: 2312 rows" in out
    assert project.pairs.count() > 2200
    assert 0 < project.prompts.filter(split="heldout").count() < project.prompts.count() / 5


def test_import_prompts_rejects_a_broken_file_with_its_line(project, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("prompt,split\nfine,train\nalso fine,sometimes\n")
    with pytest.raises(CommandError, match=r"Nothing was imported\. .*bad\.csv, line 3: `split` must be train or heldout"):
        call_command("import_prompts", project.slug, str(path))
    assert not project.prompts.exists()


def test_import_prompts_errors_are_clear(project, tmp_path):
    with pytest.raises(CommandError, match="No project with slug 'nope'"):
        call_command("import_prompts", "nope", str(HH_FILE))
    with pytest.raises(CommandError, match="Cannot read"):
        call_command("import_prompts", project.slug, str(tmp_path / "missing.jsonl"))


def test_add_user_in_a_role():
    call_command("add_user", "lena", "--role", "labeler", "--password", "secret-pw")
    lena = get_user_model().objects.get(username="lena")
    assert lena.check_password("secret-pw") and can_label(lena) and not can_manage(lena)
    call_command("add_user", "lena", "--role", "admin", "--password", "other-pw")
    lena = get_user_model().objects.get(username="lena")
    assert can_manage(lena) and list(lena.groups.values_list("name", flat=True)) == ["admin"]


def test_register_model_with_adapter_and_parent(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": "llama"}))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    call_command("register_model", "base", str(base))
    call_command("register_model", "round1", str(base), "--adapter", str(adapter), "--parent", "base", "--kind", "reward")
    round1 = ModelVersion.objects.get(name="round1")
    assert (round1.parent.name, round1.kind, round1.adapter_path) == ("base", "reward", str(adapter))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["m", "./no/such/folder"], "not a model folder"),
        (["m", "not a valid id!"], "Hugging Face model id"),
        (["m", "org/model", "--adapter", "/no/adapter"], "not a PEFT adapter folder"),
        (["m", "org/model", "--parent", "ghost"], "No model version named 'ghost'"),
        (["bad name", "org/model"], "name"),
    ],
)
def test_register_model_refuses_bad_input(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("register_model", *args)
    assert not ModelVersion.objects.exists()


def test_register_model_refuses_a_taken_name():
    call_command("register_model", "m", "org/model")
    with pytest.raises(CommandError, match="name"):
        call_command("register_model", "m", "org/other")
