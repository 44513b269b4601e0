"""Preference examples and the datasets TRL trains on (pure Python: no Django)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PreferenceExample:
    pair_id: int
    prompt: list[dict]  # the conversation up to the reply: [{"role": ..., "content": ...}, ...]
    chosen: str
    rejected: str
    margin: float = 1.0


def trl_rows(examples: Iterable[PreferenceExample], *, with_margin: bool = False) -> list[dict]:
    """TRL's conversational preference format with an explicit prompt (optionally with a reward margin)."""
    rows = []
    for example in examples:
        row = {
            "prompt": [{"role": m["role"], "content": m["content"]} for m in example.prompt],
            "chosen": [{"role": "assistant", "content": example.chosen}],
            "rejected": [{"role": "assistant", "content": example.rejected}],
        }
        if with_margin:
            row["margin"] = float(example.margin)
        rows.append(row)
    return rows


def content_hash(train: Sequence[PreferenceExample], eval: Sequence[PreferenceExample]) -> str:
    """sha256 over the exact examples, in order, with their split: equal hashes mean equal training data."""
    digest = hashlib.sha256()
    for split, examples in (("train", train), ("eval", eval)):
        for example in examples:
            line = [split, example.pair_id, example.prompt, example.chosen, example.rejected, example.margin]
            digest.update(json.dumps(line, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode())
            digest.update(b"\n")
    return digest.hexdigest()
