"""How many preference pairs (or demonstrations) fit a run's max length, measured as TRL 1.16 will tokenize them
(pure Python: no Django).

Both preference trainers tokenize a pair through the base model's chat template: the prompt alone (with the
generation prompt), prompt + chosen and prompt + rejected. What happens to a pair longer than ``max_length`` depends on
the trainer:

- ``DPOTrainer`` truncates each sequence to ``max_length`` (keeping the start) and drops a pair only when its prompt
  alone fills ``max_length`` (no response token would be left);
- ``RewardTrainer`` drops every pair whose chosen or rejected sequence is longer than ``max_length``.

``SFTTrainer`` tokenizes a demonstration the same way (the prompt alone with the generation prompt, and prompt +
completion; the completion starts where they diverge), truncates it to ``max_length`` keeping the start, and drops it
when no completion token is left (the prompt alone fills ``max_length``): it behaves like ``DPOTrainer``.

The run's ``too_long`` setting makes them all behave the same way: ``truncate`` keeps every example that has room for
some response (run.py truncates the reward model's sequences itself), ``drop`` trains only on those that fit whole.
An online run (GRPO, RLOO) trains on prompts: it generates up to ``max_completion_length`` tokens after each prompt
(rendered with the generation prompt), so a prompt is used when prompt + max_completion_length fits ``max_length``
and dropped otherwise (a prompt is never cut: its end is what the model answers).

``measure`` and ``keep`` are what run.py uses to train, and ``length_report`` what the launch preview shows, so the
counts a user is shown before launch are the counts the trainer uses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache

from training.trainers.data import PreferenceExample, PromptExample, SFTExample, prompt_rows, sft_rows, trl_rows
from training.trainers.settings import TOO_LONG_CHOICES

TRUNCATE, DROP = TOO_LONG_CHOICES


class _Length:
    prompt: int  # tokens of the prompt as TRL splits it (the common prefix of prompt and prompt + response)

    @property
    def longest(self) -> int:
        raise NotImplementedError

    def fits(self, max_length: int) -> bool:
        return self.longest <= max_length

    def kept(self, max_length: int, too_long: str) -> bool:
        """Trained on: whole when it fits; cut when too long under ``truncate``, as long as a response token is left."""
        return self.fits(max_length) or (too_long == TRUNCATE and self.prompt < max_length)


@dataclass(frozen=True)
class PairLength(_Length):
    prompt: int
    chosen: int  # tokens of prompt + chosen
    rejected: int  # tokens of prompt + rejected

    @property
    def longest(self) -> int:
        return max(self.chosen, self.rejected)


@dataclass(frozen=True)
class DemonstrationLength(_Length):
    prompt: int
    total: int  # tokens of prompt + completion (the completion's end-of-turn included)

    @property
    def longest(self) -> int:
        return self.total


@dataclass(frozen=True)
class PromptLength(_Length):
    prompt: int
    completion: int  # the tokens reserved for the completion (max_completion_length)

    @property
    def longest(self) -> int:
        return self.prompt + self.completion

    def kept(self, max_length: int, too_long: str) -> bool:
        return self.fits(max_length)


@lru_cache(maxsize=8)
def load_tokenizer(base_model: str, local_only: bool = False):
    """The base model's tokenizer alone (no weights): the chat template the trainers format examples with.
    ``local_only``: from a local folder or the Hugging Face cache only, never the network (a web request must not
    wait on a download; the worker fetches what it trains on)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base_model, local_files_only=local_only)


def measure(
    tokenizer, examples: Sequence[PreferenceExample] | Sequence[SFTExample] | Sequence[PromptExample], batch: int = 256,
    completion_tokens: int = 0,
) -> list[PairLength] | list[DemonstrationLength] | list[PromptLength]:
    """Each pair's (or demonstration's) token lengths, tokenized as TRL's trainers do (trl_rows or sft_rows, the chat
    template, TRL's prompt split). Batched: apply_chat_template renders each conversation and tokenizes the batch in
    one call (the same ids as one conversation at a time, about twice as fast). A prompt (online runs) is measured
    with the generation prompt, ``completion_tokens`` reserved after it."""
    if examples and isinstance(examples[0], SFTExample):
        return _measure_demonstrations(tokenizer, examples, batch)
    if examples and isinstance(examples[0], PromptExample):
        return [
            PromptLength(prompt=len(ids), completion=completion_tokens)
            for start in range(0, len(examples), batch)
            for ids in _batch_ids(tokenizer, [row["prompt"] for row in prompt_rows(examples[start:start + batch])], add_generation_prompt=True)
        ]
    lengths = []
    for start in range(0, len(examples), batch):
        rows = trl_rows(examples[start:start + batch])
        prompts = _batch_ids(tokenizer, [row["prompt"] for row in rows], add_generation_prompt=True)
        chosen = _batch_ids(tokenizer, [row["prompt"] + row["chosen"] for row in rows])
        rejected = _batch_ids(tokenizer, [row["prompt"] + row["rejected"] for row in rows])
        for prompt, chosen_ids, rejected_ids in zip(prompts, chosen, rejected, strict=True):
            prompt_length = min(_common_prefix(prompt, chosen_ids), _common_prefix(prompt, rejected_ids))
            lengths.append(PairLength(prompt=prompt_length, chosen=len(chosen_ids), rejected=len(rejected_ids)))
    return lengths


def _measure_demonstrations(tokenizer, examples: Sequence[SFTExample], batch: int) -> list[DemonstrationLength]:
    """As SFTTrainer tokenizes a conversational prompt-completion row: the prompt with the generation prompt, then
    prompt + completion; the completion starts at their common prefix."""
    lengths = []
    for start in range(0, len(examples), batch):
        rows = sft_rows(examples[start:start + batch])
        prompts = _batch_ids(tokenizer, [row["prompt"] for row in rows], add_generation_prompt=True)
        full = _batch_ids(tokenizer, [row["prompt"] + row["completion"] for row in rows])
        for prompt, ids in zip(prompts, full, strict=True):
            lengths.append(DemonstrationLength(prompt=_common_prefix(prompt, ids), total=len(ids)))
    return lengths


def tokenized_demonstration(tokenizer, example: SFTExample) -> tuple[int, list[int]]:
    """(prompt length, prompt + completion ids), as SFTTrainer tokenizes a conversational demonstration: the labels
    are -100 on the first ``prompt length`` tokens and the ids on the rest."""
    row = sft_rows([example])[0]
    prompt = _ids(tokenizer, row["prompt"], add_generation_prompt=True)
    full = _ids(tokenizer, row["prompt"] + row["completion"])
    return _common_prefix(prompt, full), full


def _batch_ids(tokenizer, conversations: list[list[dict]], **kwargs) -> list[list[int]]:
    if not conversations:
        return []
    return [list(ids) for ids in tokenizer.apply_chat_template(conversations, tokenize=True, return_dict=True, **kwargs)["input_ids"]]


def tokenized(tokenizer, example: PreferenceExample) -> tuple[int, list[int], list[int]]:
    """(prompt length, prompt + chosen ids, prompt + rejected ids), as TRL tokenizes a conversational pair."""
    row = trl_rows([example])[0]
    prompt = _ids(tokenizer, row["prompt"], add_generation_prompt=True)
    chosen = _ids(tokenizer, row["prompt"] + row["chosen"])
    rejected = _ids(tokenizer, row["prompt"] + row["rejected"])
    return min(_common_prefix(prompt, chosen), _common_prefix(prompt, rejected)), chosen, rejected


def _ids(tokenizer, messages: list[dict], **kwargs) -> list[int]:
    result = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)
    return list(result["input_ids"])


def _common_prefix(ids: list[int], other: list[int]) -> int:
    n = 0
    for a, b in zip(ids, other):
        if a != b:
            break
        n += 1
    return n


@dataclass(frozen=True)
class SplitReport:
    selected: int
    fit: int  # whole, no token cut
    used: int  # trained or evaluated on
    truncated: int  # used, with tokens cut
    dropped: int  # selected but not used


@dataclass(frozen=True)
class LengthReport:
    max_length: int
    too_long: str
    train: SplitReport
    eval: SplitReport
    longest: int  # the longest sequence (prompt + response) of any selected pair
    p95: int  # 95th percentile of each pair's longer sequence
    keep_all_max_length: int  # the max length at which every selected pair fits whole

    @property
    def all_fit(self) -> bool:
        return self.train.fit == self.train.selected and self.eval.fit == self.eval.selected

    def as_dict(self) -> dict:
        return {**asdict(self), "all_fit": self.all_fit}


def length_report(
    train: Sequence[_Length], eval: Sequence[_Length], *, max_length: int, too_long: str
) -> LengthReport:
    longest = sorted(length.longest for length in [*train, *eval])
    return LengthReport(
        max_length=max_length,
        too_long=too_long,
        train=_split_report(train, max_length, too_long),
        eval=_split_report(eval, max_length, too_long),
        longest=longest[-1] if longest else 0,
        p95=longest[max(0, math.ceil(0.95 * len(longest)) - 1)] if longest else 0,
        keep_all_max_length=longest[-1] if longest else 0,
    )


def unmeasured_report(train: int, eval: int, *, max_length: int, too_long: str) -> LengthReport:
    """The counts when the lengths could not be measured (no tokenizer here): every selected pair taken as used."""
    return LengthReport(
        max_length=max_length, too_long=too_long, train=SplitReport(train, train, train, 0, 0),
        eval=SplitReport(eval, eval, eval, 0, 0), longest=0, p95=0, keep_all_max_length=0,
    )


def _split_report(lengths: Sequence[_Length], max_length: int, too_long: str) -> SplitReport:
    fit = sum(length.fits(max_length) for length in lengths)
    used = sum(length.kept(max_length, too_long) for length in lengths)
    return SplitReport(selected=len(lengths), fit=fit, used=used, truncated=used - fit, dropped=len(lengths) - used)


def keep(examples: Sequence, lengths: Sequence[_Length], *, max_length: int, too_long: str) -> list:
    return [example for example, length in zip(examples, lengths, strict=True) if length.kept(max_length, too_long)]


# Below these a run's numbers mean little: with fewer than MIN_TRAIN_PAIRS a run is a couple of optimizer steps, and
# an evaluation on fewer than MIN_EVAL_PAIRS moves in steps of a third or more ("accuracy 1.000" on 3 pairs). A run
# with no held-out pair at all is allowed (it reports no evaluation rather than a misleading one).
MIN_TRAIN_PAIRS = 8
MIN_EVAL_PAIRS = 4


def too_few_reason(report: LengthReport, unit: str = "pairs") -> str | None:
    """Why a run with these counts would not mean anything, or None when it may start. ``unit``: what the run trains
    on, "pairs" or "demonstrations" (the same minimums apply)."""
    cause = f" (max length {report.max_length}, longer {unit}: {report.too_long})"
    hint = _hint(report, unit)
    if report.train.used < MIN_TRAIN_PAIRS:
        return (
            f"Only {report.train.used} of {report.train.selected} training {unit} would be used{cause if report.train.dropped else ''}; "
            f"a run needs at least {MIN_TRAIN_PAIRS}.{hint if report.train.dropped else f' Select more {unit}.'}"
        )
    if report.eval.selected and report.eval.used < MIN_EVAL_PAIRS:
        return (
            f"Only {report.eval.used} of {report.eval.selected} held-out {unit} would be evaluated on{cause if report.eval.dropped else ''}; "
            f"an evaluation needs at least {MIN_EVAL_PAIRS} (or none: set the eval fraction to 0)."
            f"{hint if report.eval.dropped else ' Hold out more prompts.'}"
        )
    return None


def _hint(report: LengthReport, unit: str) -> str:
    if unit == "prompts":
        return f" Set max length to {report.keep_all_max_length} (the longest prompt + the max completion length) to keep them all."
    if report.too_long == DROP:
        return f" Set max length to {report.keep_all_max_length} to keep them all, or truncate longer {unit}."
    return f" Their prompts alone fill the max length: set it to {report.keep_all_max_length} to keep them all."
