"""Parsing of prompt and preference files (pure Python, no Django).

Accepted, one row per line (JSONL, or a JSON array, or CSV with a header), optionally gzipped:
- prompts: ``prompt`` (a string) or ``messages`` (chat turns);
- TRL preference rows: ``prompt`` / ``chosen`` / ``rejected`` as strings or message lists, or ``chosen`` / ``rejected``
  message lists alone (the shared turns are the prompt);
- Anthropic HH rows: ``chosen`` / ``rejected`` transcripts with ``\\n\\nHuman:`` / ``\\n\\nAssistant:`` turns; the shared
  conversation becomes the prompt.
Optional fields: ``id`` or ``external_id``, ``split`` (train / heldout), ``metadata`` (an object); any other field is
kept in the metadata. Rows are parsed lazily; the importer writes them inside one transaction, so a broken row
rejects the whole file.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

ROLES = ("system", "user", "assistant")
SPLIT_ALIASES = {"train": "train", "heldout": "heldout", "held-out": "heldout", "test": "heldout", "eval": "heldout", "validation": "heldout"}
KNOWN_FIELDS = {"prompt", "messages", "chosen", "rejected", "id", "external_id", "split", "metadata"}
HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")
HH_ASSISTANT = "\n\nAssistant:"
HH_ROLES = {"Human": "user", "Assistant": "assistant"}


class ImportFileError(ValueError):
    """The file cannot be imported; ``line`` is the 1-based line of the offending row (0 for the whole file)."""

    def __init__(self, line: int, reason: str):
        self.line = line
        self.reason = reason
        super().__init__(f"line {line}: {reason}" if line else reason)


class RowError(ValueError):
    """A row is malformed; the caller adds the line number."""


@dataclass(frozen=True)
class ImportedRow:
    line: int
    messages: list[dict[str, str]]
    chosen: str | None = None
    rejected: str | None = None
    external_id: str = ""
    split: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def is_preference(self) -> bool:
        return self.chosen is not None


def content_hash(value: Any) -> str:
    """sha256 of the canonical JSON of ``value`` (messages or a response text)."""
    canonical = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def read_rows(stream: IO[bytes], filename: str = "") -> Iterator[ImportedRow]:
    """Parse rows one at a time (flat memory); raises ImportFileError naming the first broken line."""
    raw = _maybe_gunzip(stream)
    text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
    count = 0
    try:
        for line, record in _records(text, filename):
            count += 1
            yield _row_or_error(line, record)
    except UnicodeDecodeError as exc:
        raise ImportFileError(0, f"the file is not UTF-8 text ({exc.reason})") from exc
    except (EOFError, OSError, gzip.BadGzipFile) as exc:
        raise ImportFileError(0, f"the file could not be read: {exc}") from exc
    if not count:
        raise ImportFileError(0, "the file has no rows")


def parse_file(stream: IO[bytes], filename: str = "") -> list[ImportedRow]:
    return list(read_rows(stream, filename))


def _maybe_gunzip(stream: IO[bytes]) -> IO[bytes]:
    buffered = stream if isinstance(stream, io.BufferedReader) else io.BufferedReader(_Readable(stream))
    if buffered.peek(2)[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=buffered)  # type: ignore[return-value]
    return buffered


class _Readable(io.RawIOBase):
    """Adapts any object with ``read`` (Django uploads, BytesIO) to a raw stream for BufferedReader."""

    def __init__(self, stream: IO[bytes]):
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _records(text: io.TextIOWrapper, filename: str) -> Iterator[tuple[int, Any]]:
    name = filename.lower().removesuffix(".gz")
    if name.endswith(".csv"):
        yield from _csv_records(text)
        return
    first = _first_non_space(text)
    if name.endswith(".json") or first == "[":
        yield from _json_array_records(text)
    elif name.endswith(".jsonl") or first == "{":
        yield from _jsonl_records(text)
    else:
        yield from _csv_records(text)


def _first_non_space(text: io.TextIOWrapper) -> str:
    head = text.buffer.peek(4096)[:4096]  # type: ignore[attr-defined]
    stripped = head.decode("utf-8", errors="ignore").lstrip("\ufeff \t\r\n")
    return stripped[:1]


def _jsonl_records(text: io.TextIOWrapper) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(text, start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise ImportFileError(number, f"invalid JSON ({exc.msg} at column {exc.colno})") from exc


def _json_array_records(text: io.TextIOWrapper) -> Iterator[tuple[int, Any]]:
    try:
        data = json.load(text)
    except json.JSONDecodeError as exc:
        raise ImportFileError(exc.lineno, f"invalid JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(data, list):
        raise ImportFileError(1, "a .json file must hold a list of rows")
    # A JSON array has no line per row: rows are numbered instead.
    yield from enumerate(data, start=1)


def _csv_records(text: io.TextIOWrapper) -> Iterator[tuple[int, Any]]:
    reader = csv.DictReader(text, strict=True)
    try:
        header = reader.fieldnames
    except csv.Error as exc:
        raise ImportFileError(1, f"invalid CSV header ({exc})") from exc
    if not header:
        raise ImportFileError(0, "the file has no rows")
    end_of_previous = reader.line_num
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ImportFileError(end_of_previous + 1, f"invalid CSV ({exc})") from exc
        start = end_of_previous + 1
        end_of_previous = reader.line_num
        if None in record:
            raise ImportFileError(start, f"{len(header) + len(record[None])} values for {len(header)} columns")
        if not any((value or "").strip() for value in record.values()):
            continue
        try:
            yield start, {key: _csv_value(key, value) for key, value in record.items() if value != ""}
        except RowError as exc:
            raise ImportFileError(start, str(exc)) from exc


def _csv_value(key: str, value: str | None) -> Any:
    """CSV cells are strings; JSON-valued columns (messages, metadata, message-list prompts) are decoded."""
    if value is None:
        return None
    if key in {"messages", "metadata"} or (key in {"prompt", "chosen", "rejected"} and value.lstrip().startswith("[{")):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise RowError(f"column `{key}` is not valid JSON ({exc.msg})") from exc
    return value


def _row_or_error(line: int, record: Any) -> ImportedRow:
    try:
        return parse_row(line, record)
    except RowError as exc:
        raise ImportFileError(line, str(exc)) from exc


def parse_row(line: int, record: Any) -> ImportedRow:
    if not isinstance(record, dict):
        raise RowError(f"expected an object, got {type(record).__name__}")
    has_chosen, has_rejected = "chosen" in record, "rejected" in record
    if has_chosen != has_rejected:
        raise RowError("a preference row needs both `chosen` and `rejected`")
    common = {
        "line": line,
        "external_id": _external_id(record),
        "split": _split(record.get("split")),
        "metadata": _metadata(record),
    }
    if has_chosen:
        messages, chosen, rejected = _preference(record)
        return ImportedRow(messages=messages, chosen=chosen, rejected=rejected, **common)
    if "messages" in record:
        return ImportedRow(messages=_prompt_messages(record["messages"], "messages"), **common)
    if "prompt" in record:
        return ImportedRow(messages=_prompt_messages(record["prompt"], "prompt"), **common)
    raise RowError("expected a `prompt`, `messages`, or `chosen` and `rejected` field")


def _preference(record: dict) -> tuple[list[dict[str, str]], str, str]:
    chosen, rejected = record["chosen"], record["rejected"]
    if "prompt" in record:
        return _prompt_messages(record["prompt"], "prompt"), _response(chosen, "chosen"), _response(rejected, "rejected")
    if isinstance(chosen, str) and isinstance(rejected, str):
        return _split_hh_pair(chosen, rejected)
    if isinstance(chosen, list) and isinstance(rejected, list):
        return _split_message_pair(chosen, rejected)
    raise RowError("`chosen` and `rejected` must both be strings or both be message lists")


def _prompt_messages(value: Any, name: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        if value.lstrip().startswith("Human:") or value.startswith("\n\nHuman:"):
            return _prompt_messages(parse_hh_transcript(value.removesuffix(HH_ASSISTANT).rstrip()), name)
        if not value.strip():
            raise RowError(f"`{name}` is empty")
        return [{"role": "user", "content": value}]
    if not isinstance(value, list):
        raise RowError(f"`{name}` must be a string or a list of {{role, content}} messages")
    messages = _messages(value, name)
    if messages[-1]["role"] != "user":
        raise RowError(f"`{name}` must end with a user turn (the model answers it)")
    return messages


def _messages(value: Any, name: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise RowError(f"`{name}` must be a non-empty list of {{role, content}} messages")
    messages = []
    for index, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise RowError(f"`{name}[{index}]` must be an object with a string `content`")
        role = message.get("role")
        if role not in ROLES:
            raise RowError(f"`{name}[{index}].role` must be one of {', '.join(ROLES)} (got {role!r})")
        if role == "system" and index != 0:
            raise RowError(f"`{name}[{index}]`: a system message may only come first")
        messages.append({"role": role, "content": message["content"]})
    return messages


def _response(value: Any, name: str) -> str:
    if isinstance(value, str):
        return value
    messages = _messages(value, name)
    if messages[-1]["role"] != "assistant":
        raise RowError(f"`{name}` must end with an assistant message")
    return messages[-1]["content"]


def _split_message_pair(chosen: list, rejected: list) -> tuple[list[dict[str, str]], str, str]:
    """TRL's implicit-prompt format: both conversations share every turn but the last assistant reply."""
    chosen_messages, rejected_messages = _messages(chosen, "chosen"), _messages(rejected, "rejected")
    prompt = chosen_messages[:-1]
    if not prompt or rejected_messages[:-1] != prompt:
        raise RowError("`chosen` and `rejected` must share every turn but the last (the shared turns are the prompt)")
    return (
        _prompt_messages(prompt, "prompt"),
        _response(chosen_messages[-1:], "chosen"),
        _response(rejected_messages[-1:], "rejected"),
    )


def _split_hh_pair(chosen: str, rejected: str) -> tuple[list[dict[str, str]], str, str]:
    """Anthropic HH: the prompt is the conversation both transcripts share, up to its last ``Assistant:`` marker.

    Cutting at the last shared marker (not at the last marker of each) keeps the real data's odd rows, such as a
    reply split over two Assistant turns on one side only.
    """
    shared = _common_prefix(chosen, rejected)
    cut = shared.rfind(HH_ASSISTANT)
    if cut < 0:
        raise RowError("`chosen` and `rejected` share no `\\n\\nHuman: ... \\n\\nAssistant:` conversation")
    prompt = parse_hh_transcript(chosen[:cut])
    start = cut + len(HH_ASSISTANT)
    return _prompt_messages(prompt, "prompt"), chosen[start:].strip(), rejected[start:].strip()


def _common_prefix(a: str, b: str) -> str:
    length = 0
    for x, y in zip(a, b):
        if x != y:
            break
        length += 1
    return a[:length]


def parse_hh_transcript(transcript: str) -> list[dict[str, str]]:
    """``\\n\\nHuman: hi\\n\\nAssistant: hello`` -> chat messages."""
    parts = HH_TURN.split(transcript)
    if parts[0].strip():
        raise RowError("a transcript must start with `Human:`")
    return [{"role": HH_ROLES[role], "content": content.strip()} for role, content in zip(parts[1::2], parts[2::2])]


def _external_id(record: dict) -> str:
    value = record.get("external_id", record.get("id", ""))
    if value is None:
        return ""
    if not isinstance(value, (str, int)):
        raise RowError("`id` must be a string or a number")
    text = str(value)
    if len(text) > 200:
        raise RowError("`id` is longer than 200 characters")
    return text


def _split(value: Any) -> str | None:
    if value in (None, ""):
        return None
    split = SPLIT_ALIASES.get(str(value).strip().lower())
    if split is None:
        raise RowError(f"`split` must be train or heldout (got {value!r})")
    return split


def _metadata(record: dict) -> dict[str, Any]:
    metadata = record.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise RowError("`metadata` must be an object")
    extra = {key: value for key, value in record.items() if key not in KNOWN_FIELDS}
    return {**extra, **metadata}
