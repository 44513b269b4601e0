"""The interface every generation backend implements (pure Python: no Django).

Prompts and settings in, generations out. A backend loads one model (a base, optionally with a LoRA adapter) and
generates ``n`` samples per prompt, yielding results in batches so the caller can save them and report progress as
they finish.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class ModelSpec:
    base_model: str
    adapter_path: str = ""

    def lora_rank(self) -> int | None:
        if not self.adapter_path:
            return None
        return int(json.loads((Path(self.adapter_path) / "adapter_config.json").read_text())["r"])


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 256
    seed: int = 0
    stop: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict:
        return {**asdict(self), "stop": list(self.stop)}


@dataclass(frozen=True)
class PromptRequest:
    key: int  # the caller's id for the prompt
    messages: list[dict[str, str]]
    n: int


@dataclass(frozen=True)
class Generation:
    key: int
    text: str
    num_tokens: int
    finish_reason: str  # "stop" (end of text or a stop string) or "length"


class Backend(Protocol):
    name: str
    device: str  # where it runs, as resolved by generation.backends.device.resolve_device

    def generate(self, requests: Sequence[PromptRequest], sampling: Sampling) -> Iterator[list[Generation]]:
        """Yield the generations of one batch of prompts at a time (every sample of a prompt in the same batch)."""
        ...

    def close(self) -> None: ...


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Truncate at the earliest stop string; True when one was found."""
    positions = [text.find(s) for s in stop if s and s in text]
    if not positions:
        return text, False
    return text[: min(positions)], True


def open_backend(name: str, model: ModelSpec, **options) -> Backend:
    """``auto`` picks vLLM where it is installed and a GPU is present (and no ``device="cpu"`` asked for),
    transformers otherwise."""
    if name == "auto":
        name = "vllm" if vllm_usable() and _gpu_requested(options.get("device")) else "transformers"
    if name == "vllm":
        from generation.backends.vllm_backend import VllmBackend

        return VllmBackend(model, **options)
    if name == "transformers":
        from generation.backends.transformers_backend import TransformersBackend

        return TransformersBackend(model, **options)
    raise ValueError(f"Unknown backend {name!r}: choose auto, vllm or transformers.")


def _gpu_requested(device: str | None) -> bool:
    from generation.backends.device import is_cuda, resolve_device

    return is_cuda(resolve_device(device))


def vllm_usable() -> bool:
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()
