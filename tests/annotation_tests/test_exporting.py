"""Exports: TRL-ready pairs (JSONL, Parquet, a datasets folder) and raw rankings, with a card; deterministic, filtered,
split by prompt, and loadable by `datasets` and TRL for real."""

import io
import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from annotation import importing, services
from annotation.exporting import export_write, labeler_pseudonym
from annotation.labeling import assignment_next, item_flag, ranking_submit
from annotation.models import PreferencePair, Ranking
from annotation.pairs import pair_filter_from
from tests.factories import user_with_role
from tests.training_tests.conftest import ranked_project, tiny_version  # noqa: F401 - fixtures

SUFFIX = {"jsonl": ".jsonl", "parquet": ".parquet", "hf": "", "rankings": ".jsonl"}


@pytest.fixture
def project(ranked_project):  # noqa: F811
    """18 human pairs from 6 prompts (the last 2 held out), the first item ranked again identically by a second
    labeler (agreement 1.0), the second item flagged, and one imported pair."""
    ranked_project.rankings_per_item = 2
    ranked_project.save()
    first = Ranking.objects.order_by("id").first()
    second = user_with_role("labeler", "second-labeler")
    assert assignment_next(labeler=second, project=ranked_project).item_id == first.item_id
    ranking_submit(labeler=second, item_id=first.item_id, tiers=first.tiers, rationale="Kindness first.")
    flagger = user_with_role("labeler", "flagging-labeler")
    flagged = assignment_next(labeler=flagger, project=ranked_project)
    item_flag(labeler=flagger, item_id=flagged.item_id, reason="unsafe", note="rude")
    rows = importing.read_rows(io.BytesIO(b'{"prompt": "Imported question?", "chosen": "Good.", "rejected": "Bad."}\n'), "pairs.jsonl")
    services.prompts_import(project=ranked_project, rows=rows, source="pairs.jsonl")
    return ranked_project


def export(tmp_path, project, export_format="jsonl", name="out", **filters):
    out = tmp_path / f"{name}{SUFFIX[export_format]}"
    return export_write(projects=[project], export_format=export_format, pair_filter=pair_filter_from(filters), out=out)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_pairs_in_trl_format_with_provenance(tmp_path, project):
    result = export(tmp_path, project)
    rows = read_jsonl(result.data_path)
    # 18 + 3 (second labeler) human pairs, minus the flagged item's 3, plus the imported one.
    assert result.rows == len(rows) == 19
    human = next(row for row in rows if row["source"] == "human")
    assert human["prompt"] == [{"role": "user", "content": "Say something kind, number 0."}]
    assert human["chosen"] == [{"role": "assistant", "content": "You are wonderful, friend number 0!"}]
    assert human["rejected"][0]["role"] == "assistant"
    assert (human["chosen_rank"], human["k"], human["chosen_model"], human["agreement"]) == (1, 3, "tiny-policy", 1.0)
    pair = PreferencePair.objects.get(pk=human["pair_id"])
    assert human["labeler"] == labeler_pseudonym(pair.labeler_id) and "lena" not in json.dumps(rows)
    assert human["margin"] == pair.margin and human["chosen_id"] == pair.chosen_id and human["created_at"]
    imported = next(row for row in rows if row["source"] == "import")
    assert (imported["labeler"], imported["chosen_model"], imported["agreement"]) == (None, None, None)
    # The split is by prompt: the held-out prompts are the test split.
    test_prompts = {row["prompt_id"] for row in rows if row["split"] == "test"}
    assert test_prompts == set(project.prompts.filter(split="heldout").values_list("id", flat=True))
    assert not test_prompts & {row["prompt_id"] for row in rows if row["split"] == "train"}


def test_the_card_tells_counts_agreement_models_guidelines_filters_and_hash(tmp_path, project):
    result = export(tmp_path, project, sources=["human"])
    card = result.card_path.read_text()
    assert result.card_path.name == "out.README.md"
    assert f"Content sha256: `{result.sha256}`" in card
    assert "preference pairs: 18 (test 6, train 12)" in card
    assert "`tiny-policy`: 36" in card and "labelers: 2" in card
    assert "pairwise agreement 1.0" in card
    assert project.guidelines in card and "- sources: human" in card


@pytest.mark.parametrize("export_format", ["jsonl", "parquet", "hf", "rankings"])
def test_the_same_data_and_filters_give_byte_identical_output(tmp_path, project, export_format):
    first = export(tmp_path, project, export_format, name="first")
    second = export(tmp_path, project, export_format, name="second")
    assert first.sha256 == second.sha256 and first.rows == second.rows > 0
    assert first.card == second.card
    files = sorted(p.relative_to(first.data_path) for p in first.data_path.rglob("*")) if first.data_path.is_dir() else [None]
    for relative in files:
        a = first.data_path / relative if relative else first.data_path
        b = second.data_path / relative if relative else second.data_path
        assert a.is_dir() or a.read_bytes() == b.read_bytes(), relative


def test_filters(tmp_path, project, tiny_version):  # noqa: F811
    def rows(**filters):
        return read_jsonl(export(tmp_path, project, **filters).data_path)

    assert {row["source"] for row in rows(sources=["import"])} == {"import"}
    assert len(rows(exclude_flagged=False)) == 22
    assert len(rows(model_versions=[tiny_version.name])) == 18
    assert {row["agreement"] for row in rows(min_agreement=0.9, sources=["human"])} == {1.0}
    tomorrow = (timezone.localdate() + timedelta(days=1)).isoformat()
    assert rows(created_from=tomorrow) == []


def test_rankings_are_the_raw_data(tmp_path, project):
    rows = read_jsonl(export(tmp_path, project, "rankings", exclude_flagged=False).data_path)
    assert len(rows) == Ranking.objects.count() == 7
    again = next(row for row in rows if row["rationale"] == "Kindness first.")
    assert [len(tier) for tier in again["tiers"]] == [1, 1, 1] and again["time_spent_ms"] >= 0
    assert {r["id"] for r in again["responses"]} == {c for tier in again["tiers"] for c in tier}
    assert all(r["model"] == "tiny-policy" for r in again["responses"])
    flagged = [row for row in rows if row["flags"]]
    assert flagged and flagged[0]["flags"][0]["reason"] == "unsafe" and flagged[0]["item_status"] == "flagged"
    assert len(read_jsonl(export(tmp_path, project, "rankings").data_path)) == 6  # flagged item left out


def test_each_format_loads_with_datasets_and_trains_one_trl_step(tmp_path, project, tiny_model):
    from datasets import load_dataset, load_from_disk
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer

    jsonl = load_dataset("json", data_files=str(export(tmp_path, project, "jsonl").data_path), split="train")
    parquet = load_dataset("parquet", data_files=str(export(tmp_path, project, "parquet").data_path), split="train")
    folder = load_from_disk(str(export(tmp_path, project, "hf").data_path))
    assert jsonl.num_rows == parquet.num_rows == folder["train"].num_rows + folder["test"].num_rows == 19
    assert jsonl.to_list() == parquet.to_list()
    common = dict(output_dir=str(tmp_path / "trl"), max_steps=1, per_device_train_batch_size=2, report_to="none",
                  save_strategy="no", bf16=False, gradient_checkpointing=False, max_length=128)
    lora = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    dpo = DPOTrainer(model=tiny_model, args=DPOConfig(**common), train_dataset=folder["train"], peft_config=LoraConfig(**lora, task_type="CAUSAL_LM"))
    assert dpo.train().global_step == 1
    reward = RewardTrainer(model=tiny_model, args=RewardConfig(**common), train_dataset=parquet, peft_config=LoraConfig(**lora, task_type="SEQ_CLS"))
    assert reward.train().global_step == 1


def test_the_command(tmp_path, project, capsys):
    out = tmp_path / "prefs.parquet"
    call_command("export_preferences", project.slug, "--format", "parquet", "--out", str(out), "--source", "human")
    assert out.is_file() and (tmp_path / "prefs.README.md").is_file()
    assert "Wrote 18 rows" in capsys.readouterr().out
    with pytest.raises(CommandError, match="min_agreement"):
        call_command("export_preferences", project.slug, "--out", str(tmp_path / "x.jsonl"), "--min-agreement", "2")
    with pytest.raises(CommandError, match="No project"):
        call_command("export_preferences", "nope", "--out", str(tmp_path / "x.jsonl"))
    with pytest.raises(CommandError, match="model_versions"):
        call_command("export_preferences", project.slug, "--out", str(tmp_path / "x.jsonl"), "--model-version", "ghost")
