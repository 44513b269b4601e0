"""Score responses with a trained reward model: base weights + a sequence-classification LoRA adapter (pure Python).

Conversations are tokenized exactly as TRL's RewardTrainer does (the chat template over the prompt and the reply,
padded on the right), so a score here is the number the reward model learned to produce.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from generation.backends.device import device_map, resolve_device

logger = logging.getLogger(__name__)


class RewardScorer:
    def __init__(self, *, base_model: str, adapter_path: str, load_in_4bit: bool = False, device: str | None = None):
        import torch
        from peft import PeftModel
        from transformers import AutoModelForSequenceClassification, AutoTokenizer, BitsAndBytesConfig

        self.torch = torch
        self.device = resolve_device(device)
        require_score_head(adapter_path)  # before the tokenizer: a missing folder is named as such, not as a bad hub id
        self.tokenizer = AutoTokenizer.from_pretrained(adapter_path)
        self.tokenizer.pad_token = self.tokenizer.pad_token or self.tokenizer.eos_token
        quantization = (
            BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
            if load_in_4bit
            else None
        )
        with _no_missing_head_report():
            model = AutoModelForSequenceClassification.from_pretrained(
                base_model, num_labels=1, quantization_config=quantization, dtype=torch.float32,
                device_map=device_map(self.device),
            )
        model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model = PeftModel.from_pretrained(model, adapter_path).eval()
        logger.info("Reward model loaded on %s: base %s, LoRA and score head from %s.", self.device, base_model, adapter_path)

    def score(self, conversations: Sequence[tuple[list[dict], str]], *, batch_size: int = 8) -> Iterator[list[float]]:
        """Yields the scores batch by batch, in order. Each conversation is (prompt messages, reply)."""
        for start in range(0, len(conversations), batch_size):
            yield self._score_batch(conversations[start : start + batch_size])

    def _score_batch(self, batch: Sequence[tuple[list[dict], str]]) -> list[float]:
        ids = [
            self.tokenizer.apply_chat_template(
                [*messages, {"role": "assistant", "content": reply}], tokenize=True, return_dict=True
            )["input_ids"]
            for messages, reply in batch
        ]
        width = max(len(row) for row in ids)
        pad = self.tokenizer.pad_token_id
        input_ids = self.torch.tensor([row + [pad] * (width - len(row)) for row in ids], device=self.device)
        attention = self.torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids], device=self.device)
        with self.torch.no_grad():
            logits = self.model(input_ids=input_ids, attention_mask=attention).logits
        return [float(value) for value in logits[:, 0]]


def require_score_head(adapter_path: str) -> None:
    """A reward adapter carries its trained score head (PEFT saves it as a module to save); without one, the base's
    freshly initialized head would produce random scores, so refuse it."""
    from safetensors import safe_open

    weights = Path(adapter_path, "adapter_model.safetensors")
    if not weights.is_file():
        raise FileNotFoundError(f"No adapter weights at {weights}.")
    with safe_open(str(weights), framework="pt") as tensors:
        if not any(".score." in key for key in tensors.keys()):
            raise ValueError(f"The adapter at {adapter_path} has no score head: it is not a reward model adapter.")


class _DropLoadReport(logging.Filter):
    def filter(self, record):
        return "LOAD REPORT" not in record.getMessage()


@contextmanager
def _no_missing_head_report():
    """The base checkpoint has no score head, so transformers reports `score.weight MISSING … newly initialized` at
    WARNING; the head is replaced by the adapter's trained one right after (see require_score_head), so the report
    would only mislead whoever reads the worker log. A filter, not a level: raising the logger's level makes
    transformers run its tensor-parallel plan check, which warns "layers were not sharded" on every load."""
    loading = logging.getLogger("transformers.modeling_utils")
    report_filter = _DropLoadReport()
    loading.addFilter(report_filter)
    try:
        yield
    finally:
        loading.removeFilter(report_filter)
