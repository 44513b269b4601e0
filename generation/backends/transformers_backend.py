"""Generation with transformers: batched, left-padded ``generate``, PEFT adapters, seeded sampling.

Progress within a batch: a stopping criterion that never stops anything is called after every decoding step; it
counts the rows still running (a row has ended once its last token is an end-of-text or padding token) and the tokens
they added, and reports them (``BatchProgress``) to the caller's callback."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from generation.backends.base import (
    BatchProgress,
    Generation,
    ModelSpec,
    ProgressCallback,
    PromptRequest,
    Sampling,
    cut_at_stop,
)
from generation.backends.device import is_cuda, resolve_device


class TransformersBackend:
    name = "transformers"

    def __init__(self, model: ModelSpec, batch_size: int = 16, device: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = resolve_device(device)
        # float32 on CPUs: bf16 matmuls are emulated there and several times slower.
        dtype = torch.bfloat16 if is_cuda(self.device) else torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(model.base_model)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model.base_model, dtype=dtype).to(self.device)
        if model.adapter_path:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, model.adapter_path)
        self.model.eval()
        self.batch_size = batch_size

    def generate(
        self, requests: Sequence[PromptRequest], sampling: Sampling, on_progress: ProgressCallback | None = None
    ) -> Iterator[list[Generation]]:
        import torch

        for start in range(0, len(requests), self._prompts_per_batch(requests)):
            batch = requests[start : start + self._prompts_per_batch(requests)]
            torch.manual_seed(sampling.seed + start)
            yield self._generate_batch(batch, sampling, on_progress)

    def _prompts_per_batch(self, requests: Sequence[PromptRequest]) -> int:
        samples = max((request.n for request in requests), default=1)
        return max(1, self.batch_size // samples)

    def _generate_batch(
        self, batch: Sequence[PromptRequest], sampling: Sampling, on_progress: ProgressCallback | None = None
    ) -> list[Generation]:
        import torch

        texts = [
            self.tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
            for request in batch
            for _ in range(request.n)
        ]
        inputs = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        sample = sampling.temperature > 0
        watch = []
        if on_progress is not None:
            watch = [_ProgressWatch(len(texts), sampling.max_new_tokens, self._end_ids(), on_progress)]
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=sampling.max_new_tokens,
                do_sample=sample,
                temperature=sampling.temperature if sample else None,
                top_p=sampling.top_p if sample else None,
                top_k=None,
                pad_token_id=self.tokenizer.pad_token_id,
                stop_strings=list(sampling.stop) or None,
                tokenizer=self.tokenizer if sampling.stop else None,
                stopping_criteria=watch or None,
            )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        keys = [request.key for request in batch for _ in range(request.n)]
        return [self._decode(key, tokens, sampling) for key, tokens in zip(keys, new_tokens)]

    def _end_ids(self) -> list[int]:
        """Tokens after which a row generates nothing more: the end-of-text ids generate stops at, and padding."""
        configured = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ends = configured if isinstance(configured, list) else [configured]
        return sorted({int(t) for t in [*ends, self.tokenizer.eos_token_id, self.tokenizer.pad_token_id] if t is not None})

    def _decode(self, key: int, tokens, sampling: Sampling) -> Generation:
        special = set(self.tokenizer.all_special_ids)
        generated = [int(t) for t in tokens if int(t) != self.tokenizer.pad_token_id]
        ended = any(t in special for t in generated) or len(generated) < sampling.max_new_tokens
        text = self.tokenizer.decode(generated, skip_special_tokens=True)
        text, stopped = cut_at_stop(text, sampling.stop)
        length = len([t for t in generated if t not in special])
        return Generation(key=key, text=text.strip(), num_tokens=length, finish_reason="stop" if ended or stopped else "length")

    def close(self) -> None:
        self.model = None


class _ProgressWatch:
    """A stopping criterion (``generate`` calls any callable in ``stopping_criteria``; subclassing transformers'
    StoppingCriteria would import transformers with this module) that stops nothing: after each decoding step it
    reports how far the batch is."""

    def __init__(self, sequences: int, max_new_tokens: int, end_ids: list[int], on_progress: ProgressCallback):
        self.sequences, self.max_new_tokens, self.on_progress = sequences, max_new_tokens, on_progress
        self.end_ids = end_ids
        self.running = None  # bool per row
        self.steps = self.tokens = 0

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        last = input_ids[:, -1]
        if self.running is None:
            self.running = torch.ones(last.shape[0], dtype=torch.bool, device=last.device)
            self.end_tensor = torch.tensor(self.end_ids, device=last.device)
        ended = torch.isin(last, self.end_tensor)
        self.running &= ~ended
        running = int(self.running.sum())
        self.steps += 1
        self.tokens += running  # a row's end-of-text token is not counted (nor is it in Generation.num_tokens)
        if self.steps >= self.max_new_tokens:  # the rows still running have reached the length limit: they end here
            self.running[:] = False
            running = 0
        finished = self.sequences - running
        fraction = (finished + running * min(1.0, self.steps / self.max_new_tokens)) / self.sequences
        self.on_progress(BatchProgress(sequences=self.sequences, finished=finished, tokens=self.tokens, fraction=fraction))
        return torch.zeros_like(last, dtype=torch.bool)
