"""Preference data out, with provenance: TRL-ready pairs and raw rankings, each with a dataset card.

Formats:
- ``jsonl`` / ``parquet``: one row per pair in TRL's conversational preference format (``prompt`` as a message list,
  ``chosen`` / ``rejected`` as one-message assistant lists) plus margin, ids, ranks, K, a pseudonymous labeler id, the
  item's agreement, the model versions of both responses, source, split and timestamps;
- ``hf``: a Hugging Face ``datasets`` folder (``save_to_disk``) with ``train`` and ``test`` splits by prompt;
- ``rankings``: every ranking as a labeler made it (tiers, rationale, time spent, the item's flags) as JSONL.

SFT exports (demonstrations) come in ``jsonl`` / ``parquet`` / ``hf`` too: one row per demonstration with ``messages``
(the prompt's turns and the demonstration as the last assistant turn, which TRL's SFTTrainer reads) plus its
provenance: source, review status, pseudonymous labeler, time spent, the response an edit started from, and for
rejection sampling the job, policy, judge and score.

Rows stream from the database in id order, in chunks, so memory stays flat and the same data and filters give
byte-identical files. The card (README.md) holds the counts, agreement, model versions, guidelines, filters and the
sha256 of the data.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import tempfile
from functools import lru_cache
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db.models import QuerySet

from annotation.demonstrations import DemonstrationFilter, demonstration_split_rule, selected_demonstrations
from annotation.models import Project, Ranking, RankingItem
from annotation.pairs import PairFilter, selected_pairs, split_rule, split_rule_description
from annotation.selectors import item_agreement, project_agreement

FORMATS = ("jsonl", "parquet", "hf", "rankings")
SUFFIX = {"jsonl": ".jsonl", "parquet": ".parquet", "hf": "", "rankings": ".jsonl"}
CHUNK = 2000
PARQUET_ROW_GROUP = 32768  # rows per row group: fewer, larger groups read and compress better than one per chunk
SPLIT_NAMES = {False: "train", True: "test"}

Progress = Callable[[int], None]


@lru_cache(maxsize=4096)
def labeler_pseudonym(user_id: int | None) -> str | None:
    """Stable within a deployment, meaningless outside it: an HMAC of the user id under the secret key."""
    if user_id is None:
        return None
    digest = hmac.new(settings.SECRET_KEY.encode(), f"labeler:{user_id}".encode(), hashlib.sha256).hexdigest()
    return f"labeler-{digest[:12]}"


def _messages(messages: list[dict]) -> list[dict]:
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _iso(moment) -> str | None:
    return moment.isoformat() if moment else None


# --- rows ----------------------------------------------------------------------------------------------------------


PAIR_FIELDS = (
    "pk", "project__slug", "prompt_id", "prompt__messages", "prompt__split", "prompt__content_hash",
    "chosen_id", "chosen__text", "chosen__model_version__name", "rejected_id", "rejected__text",
    "rejected__model_version__name", "margin", "chosen_rank", "rejected_rank", "k", "labeler_id", "ranking_id",
    "ranking__item_id", "source", "created_at",
)


def pair_rows(projects: list[Project], pair_filter: PairFilter) -> Iterator[dict]:
    """The selected pairs as export rows, in id order."""
    pairs = selected_pairs(projects, pair_filter)
    rule = split_rule(pairs, pair_filter.eval_fraction)
    agreement = item_agreement(projects)
    for values in pairs.values_list(*PAIR_FIELDS).iterator(chunk_size=CHUNK):
        row = dict(zip(PAIR_FIELDS, values, strict=True))
        yield {
            "prompt": _messages(row["prompt__messages"]),
            "chosen": [{"role": "assistant", "content": row["chosen__text"]}],
            "rejected": [{"role": "assistant", "content": row["rejected__text"]}],
            "margin": row["margin"],
            "pair_id": row["pk"],
            "project": row["project__slug"],
            "prompt_id": row["prompt_id"],
            "chosen_id": row["chosen_id"],
            "rejected_id": row["rejected_id"],
            "chosen_rank": row["chosen_rank"],
            "rejected_rank": row["rejected_rank"],
            "k": row["k"],
            "labeler": labeler_pseudonym(row["labeler_id"]),
            "ranking_id": row["ranking_id"],
            "agreement": agreement.get(row["ranking__item_id"]),
            "chosen_model": row["chosen__model_version__name"],
            "rejected_model": row["rejected__model_version__name"],
            "source": row["source"],
            "split": SPLIT_NAMES[rule.is_heldout(row["prompt__split"], row["prompt__content_hash"])],
            "created_at": _iso(row["created_at"]),
        }


DEMONSTRATION_FIELDS = (
    "pk", "project__slug", "prompt_id", "prompt__messages", "prompt__split", "prompt__content_hash", "text", "source",
    "status", "labeler_id", "time_spent_ms", "edited_from_id", "edited_from__model_version__name", "metadata", "created_at",
)


def demonstration_rows(projects: list[Project], selection: DemonstrationFilter) -> Iterator[dict]:
    """The selected demonstrations as SFT export rows, in id order."""
    demonstrations = selected_demonstrations(projects, selection)
    rule = demonstration_split_rule(demonstrations, selection.eval_fraction)
    for values in demonstrations.values_list(*DEMONSTRATION_FIELDS).iterator(chunk_size=CHUNK):
        row = dict(zip(DEMONSTRATION_FIELDS, values, strict=True))
        metadata = row["metadata"] or {}
        yield {
            "messages": [*_messages(row["prompt__messages"]), {"role": "assistant", "content": row["text"]}],
            "demonstration_id": row["pk"],
            "project": row["project__slug"],
            "prompt_id": row["prompt_id"],
            "source": row["source"],
            "status": row["status"],
            "labeler": labeler_pseudonym(row["labeler_id"]),
            "time_spent_ms": row["time_spent_ms"],
            "edited_from_id": row["edited_from_id"],
            "edited_from_model": row["edited_from__model_version__name"],
            "rejection_job": metadata.get("job"),
            "policy": metadata.get("policy"),
            "judge": metadata.get("judge"),
            "score": metadata.get("score"),
            "split": SPLIT_NAMES[rule.is_heldout(row["prompt__split"], row["prompt__content_hash"])],
            "created_at": _iso(row["created_at"]),
        }


def selected_rankings(projects: list[Project], pair_filter: PairFilter) -> QuerySet[Ranking]:
    """The projects' rankings (the human pairs' source), with the same date, flag, agreement and model filters."""
    rankings = Ranking.objects.filter(item__project__in=projects).order_by("id")
    if pair_filter.exclude_flagged:
        rankings = rankings.exclude(item__status__in=[RankingItem.Status.FLAGGED, RankingItem.Status.RETIRED])
    if not pair_filter.include_evaluation:
        rankings = rankings.exclude(item__origin=RankingItem.Origin.EVALUATION)
    if _narrows_rankings(pair_filter):
        rankings = rankings.filter(pk__in=selected_pairs(projects, pair_filter).values("ranking_id"))
    return rankings


def ranking_rows(projects: list[Project], pair_filter: PairFilter) -> Iterator[dict]:
    rankings = selected_rankings(projects, pair_filter)
    rule = split_rule(selected_pairs(projects, pair_filter), pair_filter.eval_fraction)
    agreement = item_agreement(projects)
    rankings = rankings.select_related("item__project", "item__prompt").prefetch_related("item__candidates__model_version", "item__flags")
    for ranking in rankings.iterator(chunk_size=CHUNK):
        item = ranking.item
        yield {
            "ranking_id": ranking.pk,
            "item_id": item.pk,
            "project": item.project.slug,
            "prompt_id": item.prompt_id,
            "prompt": _messages(item.prompt.messages),
            "responses": _responses(item),
            "tiers": ranking.tiers,
            "rationale": ranking.rationale,
            "time_spent_ms": ranking.time_spent_ms,
            "labeler": labeler_pseudonym(ranking.labeler_id),
            "agreement": agreement.get(item.pk),
            "item_status": item.status,
            "flags": _flags(item),
            "split": SPLIT_NAMES[rule.is_heldout(item.prompt.split, item.prompt.content_hash)],
            "created_at": _iso(ranking.created_at),
            "updated_at": _iso(ranking.updated_at),
        }


def _narrows_rankings(pair_filter: PairFilter) -> bool:
    """Dates, agreement and model versions select rankings through their pairs (a ranking of all-equal tiers has
    none, and is kept only when nothing narrows the selection)."""
    return bool(pair_filter.created_from or pair_filter.created_to or pair_filter.min_agreement is not None or pair_filter.model_versions)


def _responses(item: RankingItem) -> list[dict]:
    candidates = sorted(item.candidates.all(), key=lambda c: c.pk)
    return [
        {"id": c.pk, "text": c.text, "model": c.model_version.name if c.model_version else None, "source": c.source}
        for c in candidates
    ]


def _flags(item: RankingItem) -> list[dict]:
    flags = sorted(item.flags.all(), key=lambda f: f.pk)
    return [{"reason": f.reason, "note": f.note, "status": f.status, "labeler": labeler_pseudonym(f.labeler_id)} for f in flags]


# --- writing -------------------------------------------------------------------------------------------------------


@dataclass
class Stats:
    """What the card says about the rows, gathered while they are written."""

    rows: int = 0
    splits: Counter = field(default_factory=Counter)
    sources: Counter = field(default_factory=Counter)
    models: Counter = field(default_factory=Counter)
    prompts: set = field(default_factory=set)
    labelers: set = field(default_factory=set)

    def add(self, row: dict) -> None:
        self.rows += 1
        self.splits[row["split"]] += 1
        self.sources[row.get("source", "human")] += 1
        self.prompts.add(row["prompt_id"])
        if row.get("labeler"):
            self.labelers.add(row["labeler"])
        for model in _row_models(row):
            self.models[model] += 1


def _row_models(row: dict) -> list[str]:
    if "messages" in row:
        return [name for name in (row["edited_from_model"], row["policy"]) if name]
    if "responses" in row:
        return [r["model"] for r in row["responses"] if r["model"]]
    return [name for name in (row["chosen_model"], row["rejected_model"]) if name]


def _counted(rows: Iterable[dict], stats: Stats, progress: Progress | None) -> Iterator[dict]:
    for row in rows:
        stats.add(row)
        if progress and stats.rows % CHUNK == 0:
            progress(stats.rows)
        yield row


def _json_line(row: dict) -> bytes:
    return (json.dumps(row, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n").encode()


def write_jsonl(rows: Iterable[dict], path: Path, schema=None) -> None:
    with open(path, "wb") as out:
        for row in rows:
            out.write(_json_line(row))


def parquet_schema():
    import pyarrow as pa

    message = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    return pa.schema([
        ("prompt", message), ("chosen", message), ("rejected", message), ("margin", pa.float64()),
        ("pair_id", pa.int64()), ("project", pa.string()), ("prompt_id", pa.int64()), ("chosen_id", pa.int64()),
        ("rejected_id", pa.int64()), ("chosen_rank", pa.int32()), ("rejected_rank", pa.int32()), ("k", pa.int32()),
        ("labeler", pa.string()), ("ranking_id", pa.int64()), ("agreement", pa.float64()), ("chosen_model", pa.string()),
        ("rejected_model", pa.string()), ("source", pa.string()), ("split", pa.string()), ("created_at", pa.string()),
    ])


def sft_parquet_schema():
    import pyarrow as pa

    message = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    return pa.schema([
        ("messages", message), ("demonstration_id", pa.int64()), ("project", pa.string()), ("prompt_id", pa.int64()),
        ("source", pa.string()), ("status", pa.string()), ("labeler", pa.string()), ("time_spent_ms", pa.int64()),
        ("edited_from_id", pa.int64()), ("edited_from_model", pa.string()), ("rejection_job", pa.int64()),
        ("policy", pa.string()), ("judge", pa.string()), ("score", pa.float64()), ("split", pa.string()),
        ("created_at", pa.string()),
    ])


def write_parquet(rows: Iterable[dict], path: Path, schema=None) -> None:
    """Rows become Arrow tables a chunk at a time (Python dicts are the costly part); chunks are written together
    as row groups of PARQUET_ROW_GROUP rows, which readers and compression prefer to many small groups."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = schema or parquet_schema()
    pending: list = []
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for batch in _batches(rows, CHUNK):
            pending.append(pa.Table.from_pylist(batch, schema=schema))
            if sum(table.num_rows for table in pending) >= PARQUET_ROW_GROUP:
                writer.write_table(pa.concat_tables(pending))
                pending = []
        if pending:
            writer.write_table(pa.concat_tables(pending))


def _batches(rows: Iterable[dict], size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def write_hf(rows: Iterable[dict], folder: Path, schema=None) -> None:
    """A ``datasets`` folder with train and test splits. The rows go to one Parquet file per split first (streamed),
    which ``datasets`` then converts; its fingerprints are set from the content so the folder is reproducible."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset, DatasetDict

    schema = schema or parquet_schema()
    with tempfile.TemporaryDirectory(prefix="prefloop-hf-") as scratch:
        paths = {split: Path(scratch) / f"{split}.parquet" for split in SPLIT_NAMES.values()}
        writers = {split: pq.ParquetWriter(path, schema) for split, path in paths.items()}
        try:
            for batch in _batches(rows, CHUNK):
                for split, writer in writers.items():
                    part = [row for row in batch if row["split"] == split]
                    if part:
                        writer.write_table(pa.Table.from_pylist(part, schema=schema))
        finally:
            for writer in writers.values():
                writer.close()
        splits = {}
        for split, path in paths.items():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
            dataset = Dataset.from_parquet(str(path), split=split, cache_dir=str(Path(scratch) / "cache"))
            splits[split] = Dataset(dataset.data, info=dataset.info, split=dataset.split, fingerprint=digest)
        DatasetDict(splits).save_to_disk(str(folder))


WRITERS = {"jsonl": write_jsonl, "parquet": write_parquet, "hf": write_hf, "rankings": write_jsonl}


@dataclass(frozen=True)
class ExportResult:
    data_path: Path
    card_path: Path
    rows: int
    sha256: str
    card: str


def export_write(
    *, projects: list[Project], export_format: str, pair_filter: PairFilter, out: Path, progress: Progress | None = None
) -> ExportResult:
    """Write the data to ``out`` (a file, or a folder for ``hf``) and its card beside it (inside for ``hf``)."""
    source = ranking_rows if export_format == "rankings" else pair_rows
    return _write_with_card(
        source(projects, pair_filter), export_format=export_format, out=out, schema=None, progress=progress,
        card=lambda stats, digest: dataset_card(
            projects=projects, export_format=export_format, pair_filter=pair_filter, stats=stats, sha256=digest
        ),
    )


def sft_export_write(
    *, projects: list[Project], export_format: str, selection: DemonstrationFilter, out: Path, progress: Progress | None = None
) -> ExportResult:
    """The selected demonstrations as an SFT dataset in ``out`` with its card (see export_write)."""
    return _write_with_card(
        demonstration_rows(projects, selection), export_format=export_format, out=out, schema=sft_parquet_schema(),
        progress=progress,
        card=lambda stats, digest: sft_dataset_card(
            projects=projects, export_format=export_format, selection=selection, stats=stats, sha256=digest
        ),
    )


def _write_with_card(
    rows: Iterable[dict], *, export_format: str, out: Path, schema, progress: Progress | None, card: Callable[[Stats, str], str]
) -> ExportResult:
    """``card(stats, sha256)`` writes the card once the rows are written and hashed."""
    out = Path(out)
    stats = Stats()
    partial = out.with_name(out.name + ".partial")
    _remove(partial)
    WRITERS[export_format](_counted(rows, stats, progress), partial, schema)
    _remove(out)
    partial.rename(out)
    digest = _content_hash(out)
    text = card(stats, digest)
    card_path = out / "README.md" if out.is_dir() else out.with_name(out.name.removesuffix(SUFFIX[export_format]) + ".README.md")
    card_path.write_text(text, encoding="utf-8")
    if progress:
        progress(stats.rows)
    return ExportResult(data_path=out, card_path=card_path, rows=stats.rows, sha256=digest, card=text)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name != "README.md") if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as data:
            for block in iter(lambda: data.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


# --- the card ------------------------------------------------------------------------------------------------------


def dataset_card(*, projects: list[Project], export_format: str, pair_filter: PairFilter, stats: Stats, sha256: str) -> str:
    """README.md for the export: what is in it and where it came from (no export time, so equal data gives an equal card)."""
    kind = "rankings" if export_format == "rankings" else "preference pairs"
    lines = [
        "---",
        "tags: [prefloop, rlhf, preference, dpo, reward-model]",
        "---",
        f"# {', '.join(p.name for p in projects)}: {kind}",
        "",
        f"Exported by Prefloop as `{export_format}`. Content sha256: `{sha256}`.",
        "",
        "## Counts",
        "",
        f"- {kind}: {stats.rows} ({', '.join(f'{split} {n}' for split, n in sorted(stats.splits.items())) or 'none'})",
        f"- prompts: {len(stats.prompts)}",
        f"- labelers: {len(stats.labelers)} (pseudonymous ids)",
        f"- sources: {', '.join(f'{source} {n}' for source, n in sorted(stats.sources.items())) or 'none'}",
        "",
        "## Model versions of the responses",
        "",
        *([f"- `{name}`: {n}" for name, n in sorted(stats.models.items())] or ["- none (imported responses only)"]),
        "",
        "## Agreement between labelers",
        "",
        *[_agreement_line(project) for project in projects],
        "",
        "## Filters",
        "",
        *[f"- {name}: {_filter_value(value)}" for name, value in pair_filter.as_dict().items()],
        f"- split: {split_rule_description(pair_filter.eval_fraction)}, `train` and `test` by prompt",
        "",
        "## Guidelines given to the labelers",
        "",
    ]
    for project in projects:
        lines += [f"### {project.name}", "", project.guidelines.strip() or "(none)", ""]
    lines += [
        "## Columns",
        "",
        "Pairs: `prompt` (messages), `chosen` and `rejected` (one assistant message each), `margin` (rank gap), ids "
        "of the pair, prompt, responses and ranking, `chosen_rank` / `rejected_rank` (1 = best tier), `k` (responses "
        "ranked together), `labeler`, `agreement` (pairwise agreement of the item's labelers), `chosen_model` / "
        "`rejected_model`, `source` (human or import), `split`, `created_at`. Load with "
        "`datasets.load_dataset(\"json\" | \"parquet\", data_files=...)` or `datasets.load_from_disk` and train "
        "with TRL's DPOTrainer or RewardTrainer.",
        "",
    ]
    return "\n".join(lines)


def sft_dataset_card(
    *, projects: list[Project], export_format: str, selection: DemonstrationFilter, stats: Stats, sha256: str
) -> str:
    """README.md of an SFT export (no export time, so equal data gives an equal card)."""
    lines = [
        "---",
        "tags: [prefloop, sft, demonstrations]",
        "---",
        f"# {', '.join(p.name for p in projects)}: demonstrations (SFT)",
        "",
        f"Exported by Prefloop as `{export_format}`. Content sha256: `{sha256}`.",
        "",
        "## Counts",
        "",
        f"- demonstrations: {stats.rows} ({', '.join(f'{split} {n}' for split, n in sorted(stats.splits.items())) or 'none'})",
        f"- prompts: {len(stats.prompts)}",
        f"- labelers: {len(stats.labelers)} (pseudonymous ids)",
        f"- sources: {', '.join(f'{source} {n}' for source, n in sorted(stats.sources.items())) or 'none'}",
        "",
        "## Model versions behind edited and rejection-sampled demonstrations",
        "",
        *([f"- `{name}`: {n}" for name, n in sorted(stats.models.items())] or ["- none"]),
        "",
        "## Filters",
        "",
        *[f"- {name}: {_filter_value(value)}" for name, value in selection.as_dict().items()],
        f"- split: {split_rule_description(selection.eval_fraction)}, `train` and `test` by prompt",
        "",
        "## Guidelines given to the labelers",
        "",
    ]
    for project in projects:
        lines += [f"### {project.name}", "", project.guidelines.strip() or "(none)", ""]
    lines += [
        "## Columns",
        "",
        "`messages` (the prompt's turns, then the demonstration as the last assistant turn), `demonstration_id`, "
        "`project`, `prompt_id`, `source` (written, edited, import, rejection_sampling), `status` (review), "
        "`labeler`, `time_spent_ms`, `edited_from_id` / `edited_from_model` (the response an edit started from), "
        "`rejection_job` / `policy` / `judge` / `score` (rejection sampling), `split`, `created_at`.",
        "",
        "## Training on it",
        "",
        "TRL's SFTTrainer reads `messages` with the model's chat template. For a loss on the answer only, set "
        "`assistant_only_loss=True`, or split each row into `prompt` (`messages[:-1]`) and `completion` "
        "(`messages[-1:]`), which SFTTrainer trains on the completion only by default (Prefloop's SFT runs do this).",
        "",
    ]
    return "\n".join(lines)


def _agreement_line(project: Project) -> str:
    summary = project_agreement(project)["project"]
    if not summary["pairs_compared"]:
        return f"- {project.name}: no item ranked by two or more labelers"
    return (
        f"- {project.name}: pairwise agreement {summary['pairwise_agreement']}, Kendall tau {summary['kendall_tau']} "
        f"over {summary['items']} items ranked by two or more labelers"
    )


def _filter_value(value) -> str:
    if value in (None, [], ()):
        return "any"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)
