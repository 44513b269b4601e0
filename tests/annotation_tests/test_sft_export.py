"""SFT exports: demonstrations as TRL-ready `messages` rows (JSONL, Parquet, a datasets folder) with provenance and a
card; accepted only by default, filtered, split by prompt, loadable by `datasets` and trained on by TRL's SFTTrainer;
from the command line, the browser and the API, for researchers and admins only."""

import hashlib
import json
import re

import pytest
from django.core.management import CommandError, call_command

from annotation.demonstrations import demonstration_filter_from
from annotation.exporting import labeler_pseudonym, sft_export_write
from annotation.models import Demonstration, Export, Prompt
from generation.models import Candidate, ModelVersion
from tests.factories import PromptFactory, user_with_role

pytestmark = pytest.mark.django_db
SUFFIX = {"jsonl": ".jsonl", "parquet": ".parquet", "hf": ""}


def demonstration(project, prompt, text, **fields):
    return Demonstration.objects.create(
        project=project, prompt=prompt, text=text, text_hash=hashlib.sha256(text.encode()).hexdigest(), **fields
    )


@pytest.fixture
def demonstrations(project):
    """Six prompts (the last marked held out), one demonstration of each source, one pending and one rejected."""
    prompts = [PromptFactory(project=project, messages=[{"role": "user", "content": f"Question {n}?"}]) for n in range(6)]
    Prompt.objects.filter(pk=prompts[5].pk).update(split=Prompt.Split.HELDOUT)
    labeler = user_with_role("labeler", "writer")
    policy = ModelVersion.objects.create(name="policy-v1", base_model="/models/policy")
    original = Candidate.objects.create(prompt=prompts[1], text="Original.", text_hash="o" * 64, source="generated", model_version=policy)
    accepted = dict(status=Demonstration.Status.ACCEPTED)
    return {
        "written": demonstration(project, prompts[0], "Written answer.", source="written", labeler=labeler, time_spent_ms=4200, **accepted),
        "edited": demonstration(project, prompts[1], "Edited answer.", source="edited", labeler=labeler, edited_from=original, **accepted),
        "import": demonstration(project, prompts[2], "Imported answer.", source="import", metadata={"file": "sft.jsonl", "line": 1}, **accepted),
        "rejection_sampling": demonstration(
            project, prompts[3], "Sampled answer.", source="rejection_sampling",
            metadata={"job": 7, "policy": "policy-v1", "judge": "rm-v1", "score": 1.25}, **accepted,
        ),
        "pending": demonstration(project, prompts[4], "Pending answer.", source="written", labeler=labeler),
        "rejected": demonstration(
            project, prompts[5], "Rejected answer.", source="written", labeler=labeler, status="rejected", review_reason="Off topic."
        ),
        "heldout": demonstration(project, prompts[5], "Held-out answer.", source="import", **accepted),
    }


def export(tmp_path, project, export_format="jsonl", name="sft", **filters):
    out = tmp_path / f"{name}{SUFFIX[export_format]}"
    return sft_export_write(projects=[project], export_format=export_format, selection=demonstration_filter_from(filters), out=out)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_accepted_demonstrations_as_messages_with_their_provenance(tmp_path, project, demonstrations):
    result = export(tmp_path, project)
    rows = {row["demonstration_id"]: row for row in read_jsonl(result.data_path)}
    assert result.rows == len(rows) == 5  # pending and rejected left out
    written = rows[demonstrations["written"].pk]
    assert written["messages"] == [{"role": "user", "content": "Question 0?"}, {"role": "assistant", "content": "Written answer."}]
    assert (written["source"], written["status"], written["time_spent_ms"]) == ("written", "accepted", 4200)
    assert written["labeler"] == labeler_pseudonym(demonstrations["written"].labeler_id) and "writer" not in json.dumps(rows)
    edited = rows[demonstrations["edited"].pk]
    assert (edited["edited_from_id"], edited["edited_from_model"]) == (demonstrations["edited"].edited_from_id, "policy-v1")
    sampled = rows[demonstrations["rejection_sampling"].pk]
    assert (sampled["rejection_job"], sampled["policy"], sampled["judge"], sampled["score"]) == (7, "policy-v1", "rm-v1", 1.25)
    assert rows[demonstrations["heldout"].pk]["split"] == "test"
    assert {row["split"] for key, row in rows.items() if key != demonstrations["heldout"].pk} == {"train"}
    card = result.card_path.read_text()
    assert "demonstrations: 5 (test 1, train 4)" in card and "- statuses: accepted" in card and result.sha256 in card
    assert "- sources: edited 1, import 2, rejection_sampling 1, written 1" in card


def test_filters_by_source_status_and_rejection_job(tmp_path, project, demonstrations):
    ids = lambda **filters: sorted(row["demonstration_id"] for row in read_jsonl(export(tmp_path, project, **filters).data_path))  # noqa: E731
    assert ids(sources=["written"], statuses=["pending", "rejected"]) == sorted([demonstrations["pending"].pk, demonstrations["rejected"].pk])
    assert ids(sources=["rejection_sampling"], rejection_jobs=[8]) == []
    assert ids(sources=["rejection_sampling"], rejection_jobs=[7]) == []  # the job link is the RejectionSample row, not metadata
    with pytest.raises(Exception, match="sources"):
        export(tmp_path, project, sources=["telepathy"])


def test_the_same_data_gives_the_same_bytes(tmp_path, project, demonstrations):
    first, second = export(tmp_path, project, name="a"), export(tmp_path, project, name="b")
    assert first.data_path.read_bytes() == second.data_path.read_bytes() and first.sha256 == second.sha256


def test_each_format_loads_with_datasets_and_trains_one_sft_step(tmp_path, project, demonstrations, tiny_model):
    from datasets import load_dataset, load_from_disk
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    jsonl = load_dataset("json", data_files=str(export(tmp_path, project, "jsonl").data_path), split="train")
    parquet = load_dataset("parquet", data_files=str(export(tmp_path, project, "parquet").data_path), split="train")
    folder = load_from_disk(str(export(tmp_path, project, "hf").data_path))
    assert jsonl.num_rows == parquet.num_rows == folder["train"].num_rows + folder["test"].num_rows == 5
    assert jsonl.to_list() == parquet.to_list()
    train = folder["train"].select_columns(["messages"])
    args = SFTConfig(
        output_dir=str(tmp_path / "trl"), max_steps=1, per_device_train_batch_size=2, report_to="none", save_strategy="no",
        bf16=False, gradient_checkpointing=False, max_length=128, use_cpu=True,
    )
    trainer = SFTTrainer(
        model=tiny_model, args=args, train_dataset=train,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    assert trainer.train().global_step == 1


def test_the_command(tmp_path, project, demonstrations, capsys):
    out = tmp_path / "demos.parquet"
    call_command("export_demonstrations", project.slug, "--format", "parquet", "--out", str(out), "--source", "import")
    assert out.is_file() and (tmp_path / "demos.README.md").is_file()
    assert "Wrote 2 demonstrations" in capsys.readouterr().out
    call_command("export_demonstrations", project.slug, "--out", str(tmp_path / "all.jsonl"), "--status", "pending", "--status", "accepted")
    assert len(read_jsonl(tmp_path / "all.jsonl")) == 6
    with pytest.raises(CommandError, match="rejection_jobs"):
        call_command("export_demonstrations", project.slug, "--out", str(tmp_path / "x.jsonl"), "--rejection-job", "seven")
    with pytest.raises(CommandError, match="No project"):
        call_command("export_demonstrations", "nope", "--out", str(tmp_path / "x.jsonl"))


def test_the_api_exports_demonstrations_for_researchers_only(api_client, users, project, demonstrations, settings, tmp_path):
    settings.EXPORTS_DIR = tmp_path / "exports"
    api_client.force_authenticate(users["labeler"])
    body = {"projects": [project.slug], "dataset": "sft", "format": "jsonl", "demonstration_filter": {"sources": ["written"]}}
    assert api_client.post("/api/exports/", body, format="json").status_code == 403
    api_client.force_authenticate(users["researcher"])
    response = api_client.post("/api/exports/", body, format="json")
    assert response.status_code == 201, response.content
    data = response.json()
    assert (data["dataset"], data["status"], data["rows_done"], data["pair_filter"]) == ("sft", "succeeded", 1, None)
    assert data["demonstration_filter"]["sources"] == ["written"] and data["demonstration_filter"]["statuses"] == ["accepted"]
    download = api_client.get(data["data_url"])
    rows = [json.loads(line) for line in b"".join(download.streaming_content).decode().splitlines()]
    assert [row["demonstration_id"] for row in rows] == [demonstrations["written"].pk]
    for bad, field in [
        ({**body, "format": "rankings"}, "export_format"),
        ({**body, "pair_filter": {"sources": ["human"]}}, "pair_filter"),
        ({**body, "demonstration_filter": {"statuses": ["maybe"]}}, "statuses"),
    ]:
        response = api_client.post("/api/exports/", bad, format="json")
        assert response.status_code == 400 and field in response.content.decode(), response.content


def test_the_page_prefills_from_a_link_and_exports(client, users, project, demonstrations, settings, tmp_path):
    settings.EXPORTS_DIR = tmp_path / "exports"
    client.force_login(users["labeler"])
    assert client.get(f"/projects/{project.slug}/export/sft/").status_code == 403
    client.force_login(users["researcher"])
    page = client.get(f"/projects/{project.slug}/export/sft/?sources=rejection_sampling&rejection_jobs=7")
    html = page.content.decode()
    assert page.status_code == 200 and "Export demonstrations (SFT)" in html
    checked = re.findall(r'<input[^>]*name="sources" value="(\w+)"[^>]*checked', html)
    assert checked == ["rejection_sampling"]
    assert 'name="rejection_jobs" value="7"' in html
    response = client.post(
        f"/projects/{project.slug}/export/sft/",
        {"projects": [project.slug], "export_format": "hf", "sources": ["import"], "statuses": ["accepted"], "eval_fraction": "0.1"},
    )
    assert response.status_code == 302
    export = Export.objects.get()
    assert (export.dataset, export.export_format, export.status, export.rows_done) == ("sft", "hf", "succeeded", 2)
    assert export.data_path.endswith("demo-project-sft.zip")
    assert "demonstrations (SFT)" in client.get(response.url).content.decode()
