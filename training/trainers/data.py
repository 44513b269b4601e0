"""Training examples and the datasets TRL trains on (pure Python: no Django): preference pairs (DPO, reward models),
demonstrations (SFT) and prompts (online RL: GRPO, RLOO)."""

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


@dataclass(frozen=True)
class SFTExample:
    """A demonstration: the conversation up to the reply and the reply the model should learn to give."""

    demonstration_id: int
    prompt: list[dict]  # [{"role": ..., "content": ...}, ...]
    completion: str


def sft_rows(examples: Iterable[SFTExample]) -> list[dict]:
    """TRL's conversational prompt-completion format: SFTTrainer renders both with the model's chat template and
    computes the loss on the completion's tokens only (the assistant's reply and its end-of-turn)."""
    return [
        {
            "prompt": [{"role": m["role"], "content": m["content"]} for m in example.prompt],
            "completion": [{"role": "assistant", "content": example.completion}],
        }
        for example in examples
    ]


@dataclass(frozen=True)
class PromptExample:
    """A prompt an online run generates completions for: the conversation up to the reply."""

    prompt_id: int
    prompt: list[dict]  # [{"role": ..., "content": ...}, ...]


def prompt_rows(examples: Iterable[PromptExample]) -> list[dict]:
    """TRL's conversational prompt-only format: GRPOTrainer and RLOOTrainer render it with the chat template and
    the generation prompt, and pass it (with the completion) to the reward functions."""
    return [{"prompt": [{"role": m["role"], "content": m["content"]} for m in example.prompt]} for example in examples]


Example = PreferenceExample | SFTExample | PromptExample


def content_hash(train: Sequence[Example], eval: Sequence[Example]) -> str:
    """sha256 over the exact examples, in order, with their split: equal hashes mean equal training data."""
    digest = hashlib.sha256()
    for split, examples in (("train", train), ("eval", eval)):
        for example in examples:
            if isinstance(example, SFTExample):
                line = [split, "sft", example.demonstration_id, example.prompt, example.completion]
            elif isinstance(example, PromptExample):
                line = [split, "prompt", example.prompt_id, example.prompt]
            else:
                line = [split, example.pair_id, example.prompt, example.chosen, example.rejected, example.margin]
            digest.update(json.dumps(line, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode())
            digest.update(b"\n")
    return digest.hexdigest()
