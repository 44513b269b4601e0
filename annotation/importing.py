"""Parsing of prompt and preference files (pure Python, no Django).

Accepted, one row per line (JSONL, or a JSON array, or CSV with a header), optionally gzipped:
- prompts: ``prompt`` (a string) or ``messages`` (chat turns);
- TRL preference rows: ``prompt`` / ``chosen`` / ``rejected`` as strings or message lists, or ``chosen`` / ``rejected``
  message lists alone (the shared turns are the prompt);
- Anthropic HH rows: ``chosen`` / ``rejected`` transcripts with ``\\n\\nHuman:`` / ``\\n\\nAssistant:`` turns; the shared
  conversation becomes the prompt;
- SFT rows (demonstrations): ``messages`` ending with an assistant turn (the turns before it are the prompt), or
  ``prompt`` + ``completion`` (each a string or a message list; a completion list ends with the assistant's turn).
Optional fields: ``id`` or ``external_id``, ``split`` (train / heldout), ``metadata`` (an object); any other field is
kept in the metadata. Rows are parsed lazily; the importer writes them inside one transaction, so a broken row
rejects the whole file.

Hostile files are refused with an ImportFileError, never with unbounded memory: a gzipped file may decompress to at
most ``Limits.decompressed_bytes``, a line (a CSV line, a JSONL row, a JSON array element) may be at most
``Limits.line_bytes`` long and is never read whole beyond that, a JSON array is parsed incrementally (ijson), and a
row may not nest deeper than MAX_DEPTH, nor hold a NUL character or an unpaired surrogate (text no database stores).
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

import ijson

from config.limits import size_text

ROLES = ("system", "user", "assistant")
SPLIT_ALIASES = {"train": "train", "heldout": "heldout", "held-out": "heldout", "test": "heldout", "eval": "heldout", "validation": "heldout"}
KNOWN_FIELDS = {"prompt", "messages", "chosen", "rejected", "completion", "id", "external_id", "split", "metadata"}
HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")
HH_ASSISTANT = "\n\nAssistant:"
HH_ROLES = {"Human": "user", "Assistant": "assistant"}
BOM = b"\xef\xbb\xbf"
MAX_DEPTH = 64  # of a row's JSON (messages are 3 deep; metadata rarely more than a few)
UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


@dataclass(frozen=True)
class Limits:
    """How much a file may hold (the web views and the command pass the settings' values)."""

    decompressed_bytes: int = 4 * 1024**3
    line_bytes: int = 10 * 1024**2


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
    completion: str | None = None  # an SFT row: the answer the prompt should get
    external_id: str = ""
    split: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def is_preference(self) -> bool:
        return self.chosen is not None

    @property
    def is_demonstration(self) -> bool:
        return self.completion is not None

    @property
    def is_prompt_only(self) -> bool:
        return not self.is_preference and not self.is_demonstration


def content_hash(value: Any) -> str:
    """sha256 of the canonical JSON of ``value`` (messages or a response text)."""
    canonical = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def read_rows(stream: IO[bytes], filename: str = "", limits: Limits | None = None) -> Iterator[ImportedRow]:
    """Parse rows one at a time (flat memory); raises ImportFileError naming the first broken line."""
    limits = limits or Limits()
    position = _Position()
    raw = _maybe_gunzip(stream, limits, position)
    text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
    count = 0
    try:
        for line, record in _records(text, filename, limits, position):
            count += 1
            yield _row_or_error(line, record)
    except _TooLarge as exc:
        raise ImportFileError(position.line, str(exc)) from None
    except UnicodeDecodeError as exc:
        raise ImportFileError(0, f"the file is not UTF-8 text ({exc.reason})") from exc
    except (EOFError, OSError, gzip.BadGzipFile) as exc:
        raise ImportFileError(0, f"the file could not be read: {exc}") from exc
    if not count:
        raise ImportFileError(0, "the file has no rows")


def parse_file(stream: IO[bytes], filename: str = "", limits: Limits | None = None) -> list[ImportedRow]:
    return list(read_rows(stream, filename, limits))


@dataclass
class _Position:
    """The line (or JSON array row) being read, for the message of a limit reached inside a read."""

    line: int = 1


class _TooLarge(Exception):
    """A limit was reached while reading; read_rows turns it into an ImportFileError at the current line."""


def _maybe_gunzip(stream: IO[bytes], limits: Limits, position: _Position) -> IO[bytes]:
    buffered = stream if isinstance(stream, io.BufferedReader) else io.BufferedReader(_Readable(stream))
    if buffered.peek(2)[:2] == b"\x1f\x8b":
        return io.BufferedReader(_Capped(gzip.GzipFile(fileobj=buffered), limits.decompressed_bytes))
    return buffered


class _Capped(io.RawIOBase):
    """The decompressed stream, refused past ``limit`` bytes (a gzip bomb costs a buffer, not the memory)."""

    def __init__(self, stream: IO[bytes], limit: int):
        self._stream = stream
        self._limit = limit
        self._total = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._stream.read(min(len(buffer), self._limit - self._total + 1))
        self._total += len(data)
        if self._total > self._limit:
            raise _TooLarge(f"the file decompresses to more than {size_text(self._limit)}")
        buffer[: len(data)] = data
        return len(data)


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


def _records(text: io.TextIOWrapper, filename: str, limits: Limits, position: _Position) -> Iterator[tuple[int, Any]]:
    name = filename.lower().removesuffix(".gz")
    lines = _bounded_lines(text, limits.line_bytes, position)
    if name.endswith(".csv"):
        yield from _csv_records(lines)
        return
    first = _first_non_space(text)
    if name.endswith(".json") or first == "[":
        yield from _json_array_records(text, limits.line_bytes, position)
    elif name.endswith(".jsonl") or first == "{":
        yield from _jsonl_records(lines)
    else:
        yield from _csv_records(lines)


def _bounded_lines(text: io.TextIOWrapper, limit: int, position: _Position) -> Iterator[str]:
    """The lines of ``text``, refusing one longer than ``limit`` characters before more of it is read."""
    number = 0
    while True:
        number += 1
        position.line = number
        line = text.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not (len(line) == limit + 1 and line.endswith(("\n", "\r"))):
            raise _TooLarge(f"the line is longer than {size_text(limit)}")
        yield line


def _first_non_space(text: io.TextIOWrapper) -> str:
    head = text.buffer.peek(4096)[:4096]  # type: ignore[attr-defined]
    stripped = head.decode("utf-8", errors="ignore").lstrip("\ufeff \t\r\n")
    return stripped[:1]


def _jsonl_records(lines: Iterator[str]) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise ImportFileError(number, f"invalid JSON ({exc.msg} at column {exc.colno})") from exc
        except RecursionError:
            raise ImportFileError(number, f"the JSON is nested too deeply (more than {MAX_DEPTH} levels)") from None


def _json_array_records(text: io.TextIOWrapper, row_limit: int, position: _Position) -> Iterator[tuple[int, Any]]:
    """A JSON array, one element at a time (ijson): memory holds one row, never the whole array.

    A JSON array has no line per row: rows are numbered instead. An element longer than ``row_limit`` bytes is
    refused as it is read (ijson asks for the file in small chunks, counted here).
    """
    counted = _Counted(text.buffer, row_limit)  # bytes: the TextIOWrapper has read nothing yet (only peeked)
    position.line = 1
    if counted.peek_first() != b"[":
        raise ImportFileError(1, "a .json file must hold a list of rows")
    try:
        for number, record in enumerate(ijson.items(counted, "item", use_float=True, buf_size=counted.chunk), start=1):
            yield number, record
            position.line = number + 1
            counted.row_started()
    except ijson.IncompleteJSONError as exc:
        raise ImportFileError(position.line, f"invalid JSON ({_ijson_reason(exc)})") from exc
    except ijson.JSONError as exc:
        raise ImportFileError(position.line, f"invalid JSON ({_ijson_reason(exc)})") from exc


def _ijson_reason(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else "incomplete"


class _Counted:
    """A byte stream that refuses to give more than ``row_limit`` bytes between two ``row_started`` calls."""

    def __init__(self, stream, row_limit: int):
        self._stream = stream
        self._row_limit = row_limit
        self._since_row = 0
        self.chunk = min(64 * 1024, row_limit)
        if stream.peek(3)[:3] == BOM:
            stream.read(3)

    def peek_first(self) -> bytes:
        return self._stream.peek(4096)[:4096].lstrip(b" \t\r\n")[:1]

    def row_started(self) -> None:
        self._since_row = 0

    def read(self, size: int = -1) -> bytes:
        size = self.chunk if size is None or size < 0 else min(size, self.chunk)
        data = self._stream.read(size)
        self._since_row += len(data)
        if self._since_row > self._row_limit + self.chunk:  # one chunk of slack: the chunk can hold the row's end
            raise _TooLarge(f"the row is longer than {size_text(self._row_limit)}")
        return data


def _csv_records(lines: Iterator[str]) -> Iterator[tuple[int, Any]]:
    reader = csv.DictReader(lines, strict=True)
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
        except RecursionError:
            raise RowError(f"column `{key}` is nested too deeply (more than {MAX_DEPTH} levels)") from None
    return value


def _row_or_error(line: int, record: Any) -> ImportedRow:
    try:
        return parse_row(line, record)
    except RowError as exc:
        raise ImportFileError(line, str(exc)) from exc


def parse_row(line: int, record: Any) -> ImportedRow:
    if not isinstance(record, dict):
        raise RowError(f"expected an object, got {type(record).__name__}")
    _check_storable(record)
    has_chosen, has_rejected = "chosen" in record, "rejected" in record
    if has_chosen != has_rejected:
        raise RowError("a preference row needs both `chosen` and `rejected`")
    common = {
        "line": line,
        "external_id": _external_id(record),
        "split": _split(record.get("split")),
        "metadata": _metadata(record),
    }
    if has_chosen and "completion" in record:
        raise RowError("a row is a preference pair (`chosen`, `rejected`) or a demonstration (`completion`), not both")
    if has_chosen:
        messages, chosen, rejected = _preference(record)
        return ImportedRow(messages=messages, chosen=chosen, rejected=rejected, **common)
    if "completion" in record:
        if "prompt" not in record:
            raise RowError("a `completion` needs its `prompt`")
        return ImportedRow(
            messages=_prompt_messages(record["prompt"], "prompt"), completion=_completion(record["completion"]), **common
        )
    if "messages" in record:
        messages = record["messages"]
        if isinstance(messages, list) and messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "assistant":
            return _demonstration_from_messages(_messages(messages, "messages"), common)
        return ImportedRow(messages=_prompt_messages(messages, "messages"), **common)
    if "prompt" in record:
        return ImportedRow(messages=_prompt_messages(record["prompt"], "prompt"), **common)
    raise RowError("expected a `prompt`, `messages`, `prompt` and `completion`, or `chosen` and `rejected` field")


def _demonstration_from_messages(messages: list[dict[str, str]], common: dict) -> ImportedRow:
    """An SFT conversation: the turns before the last assistant turn are the prompt, that turn the demonstration."""
    if len(messages) < 2:
        raise RowError("`messages` ending with an assistant turn needs the user turn before it")
    prompt = _prompt_messages(messages[:-1], "messages")
    return ImportedRow(messages=prompt, completion=_completion(messages[-1:], "messages"), **common)


def _completion(value: Any, name: str = "completion") -> str:
    text = _response(value, name)
    if not text.strip():
        raise RowError(f"`{name}` is empty: a demonstration needs an answer")
    return text


def _check_storable(record: dict) -> None:
    """Refuse what the database cannot store (or JSON cannot encode back): a NUL character, an unpaired surrogate
    (``"\\ud800"`` decodes to one), nesting deeper than MAX_DEPTH. Iterative, so depth costs no recursion."""
    for key, value in record.items():
        _check_text(key, key)
        stack = [(value, 1)]
        while stack:
            item, depth = stack.pop()
            if isinstance(item, str):
                _check_text(item, key)
            elif isinstance(item, (dict, list)):
                if depth > MAX_DEPTH:
                    raise RowError(f"`{key}` is nested too deeply (more than {MAX_DEPTH} levels)")
                if isinstance(item, dict):
                    for inner_key, inner in item.items():
                        _check_text(inner_key, key)
                        stack.append((inner, depth + 1))
                else:
                    stack.extend((inner, depth + 1) for inner in item)


def _check_text(text: Any, field_name: str) -> None:
    if not isinstance(text, str) or (text.isascii() and "\x00" not in text):
        return
    match = UNSTORABLE.search(text)
    if match is None:
        return
    if match.group() == "\x00":
        raise RowError(f"`{field_name}` contains a NUL character (\\u0000), which cannot be stored")
    raise RowError(f"`{field_name}` contains an unpaired surrogate (\\u{ord(match.group()):04x}), which is not valid text")


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
        raise RowError(f"`{name}` must end with a user turn (the model answers it), or with the assistant's answer in an SFT row")
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
