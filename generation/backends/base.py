"""The interface every generation backend implements (pure Python: no Django).

Prompts and settings in, generations out. A backend loads one model (a base, optionally with a LoRA adapter) and
generates ``n`` samples per prompt, yielding results in batches so the caller can save them as they finish. While a
batch runs, the backend reports how far it is through an optional ``on_progress`` callback (``BatchProgress``), as
often as the library lets it see (transformers: every decoding step; vLLM: every finished prompt). The callback is the
caller's: it decides how often to write anything down, and it may raise (a cancel) to stop the batch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
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


@dataclass(frozen=True)
class BatchProgress:
    """How far the batch now generating is, before it is yielded."""

    sequences: int  # responses in the batch (its prompts x their n)
    finished: int  # responses of it that have ended
    tokens: int | None  # new tokens generated so far in the batch; None where the library does not say (vLLM)
    fraction: float  # 0 to 1: finished responses, plus each running one's tokens over max_new_tokens, over sequences


ProgressCallback = Callable[[BatchProgress], None]


class Backend(Protocol):
    name: str
    device: str  # where it runs, as resolved by generation.backends.device.resolve_device

    def generate(
        self, requests: Sequence[PromptRequest], sampling: Sampling, on_progress: ProgressCallback | None = None
    ) -> Iterator[list[Generation]]:
        """Yield the generations of one batch of prompts at a time (every sample of a prompt in the same batch),
        calling ``on_progress`` while a batch runs."""
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
    transformers otherwise (``auto_choice`` says why)."""
    if name == "auto":
        name = auto_choice(options.get("device"))[0]
    if name == "vllm":
        from generation.backends.vllm_backend import VllmBackend

        return VllmBackend(model, **options)
    if name == "transformers":
        from generation.backends.transformers_backend import TransformersBackend

        return TransformersBackend(model, **options)
    raise ValueError(f"Unknown backend {name!r}: choose auto, vllm or transformers.")


def auto_choice(device: str | None = None) -> tuple[str, str]:
    """The backend ``auto`` picks here, and why, in a few words ("no GPU")."""
    import importlib.util

    if not _gpu_requested(device):
        return "transformers", "CPU asked for" if device and device.strip().lower() == "cpu" else "no GPU"
    if importlib.util.find_spec("vllm") is None:
        return "transformers", "vLLM not installed"
    return "vllm", "GPU and vLLM present"


def _gpu_requested(device: str | None) -> bool:
    from generation.backends.device import is_cuda, resolve_device

    return is_cuda(resolve_device(device))

