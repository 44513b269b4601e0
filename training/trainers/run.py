"""Train a LoRA adapter with TRL: a DPO policy or a reward model on preference examples, an SFT policy on
demonstrations, or a GRPO / RLOO policy on prompts against a reward model (pure Python: no Django).

``train_adapter`` loads the base model (4-bit NF4 through bitsandbytes unless turned off), attaches a LoRA adapter,
trains it with TRL's DPOTrainer (the reference is the base with the adapter disabled), RewardTrainer (sequence
classification with one output, the pair margin in the loss) or SFTTrainer (prompt-completion rows rendered with the
model's chat template, the loss on the completion's tokens only) or, for online RL, GRPOTrainer / RLOOTrainer
(online.py: completions generated as it trains, scored by the reward model), reports progress and metrics to a ``Reporter`` as
it goes, stops early when the reporter asks, and writes the artifacts:

    <output_dir>/adapter/        the PEFT adapter and the tokenizer
    <output_dir>/settings.json   the settings used (device choices resolved)
    <output_dir>/metrics.json    TRL's log history and the final metrics
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Protocol

from generation.backends.device import first_gpu_only, is_cuda, resolve_device
from training.trainers.data import PreferenceExample, PromptExample, SFTExample, sft_rows, trl_rows
from training.trainers.lengths import TRUNCATE, keep, length_report, load_tokenizer, measure, tokenized
from training.trainers.online import RewardSpec, online_trainer, vllm_unusable_reason
from training.trainers.settings import DPO, ONLINE, SFT, Device, TrainingSettings, resolved_for_device

EVALUATIONS_PER_RUN = 5
# Trainer log keys that describe the run rather than the model; kept in the summary, not charted.
SUMMARY_KEYS = {"train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos", "train_loss"}
NOT_METRICS = {"epoch", "runtime", "samples_per_second", "steps_per_second"}


class Reporter(Protocol):
    def prepared(self, examples: dict[str, int]) -> None: ...

    def started(self, total_steps: int) -> None: ...

    def logged(self, step: int, split: str, metrics: dict[str, float]) -> None: ...

    def should_stop(self) -> bool: ...

    def sampled(self, step: int, samples: list[dict]) -> None:
        """Online runs: a few completions of the latest generation batch, with their rewards (online.SampleBook)."""


class NoReporter:
    def prepared(self, examples: dict[str, int]) -> None:
        pass

    def started(self, total_steps: int) -> None:
        pass

    def logged(self, step: int, split: str, metrics: dict[str, float]) -> None:
        pass

    def should_stop(self) -> bool:
        return False

    def sampled(self, step: int, samples: list[dict]) -> None:
        pass


class NoUsableExamples(ValueError):
    pass


@dataclass
class TrainingResult:
    adapter_dir: Path
    steps: int
    total_steps: int
    stopped_early: bool
    settings: dict
    train_metrics: dict[str, float] = field(default_factory=dict)  # the last logged training step
    eval_metrics: dict[str, float] = field(default_factory=dict)  # the last evaluation
    summary: dict[str, float | str] = field(default_factory=dict)  # runtime, samples/s, mean training loss, device
    # Pairs (demonstrations, prompts) used for train / eval (measured on TRL's datasets), selected, and how many were truncated
    # or dropped
    examples: dict[str, int] = field(default_factory=dict)
    quantized_layers: int = 0  # linear layers held in 4 bits

    def as_dict(self) -> dict:
        return {**asdict(self), "adapter_dir": str(self.adapter_dir)}


def detect_device(requested: str | None = None) -> Device:
    """The hardware behind ``requested`` (see resolve_device; None: auto), for the device-aware defaults."""
    if is_cuda(resolve_device(requested)):
        import importlib.util

        import torch

        return Device("cuda", bf16_supported=torch.cuda.is_bf16_supported(), has_vllm=importlib.util.find_spec("vllm") is not None)
    return Device("cpu", bf16_supported=cpu_has_native_bf16())


def _generation_checked(settings: TrainingSettings, *, asked: bool | None) -> tuple[TrainingSettings, str]:
    """An online run's generator: vLLM when resolved so and usable here, else transformers. A vLLM asked for
    (``use_vllm`` true) that cannot serve this run is refused with the reason; an automatic one falls back."""
    if settings.kind not in ONLINE:
        return settings, ""
    if not settings.use_vllm:
        return settings, "transformers"
    reason = vllm_unusable_reason(settings.load_in_4bit)
    if reason is None:
        return settings, "vllm (colocated)"
    if asked:
        raise ValueError(f"use_vllm: {reason} Set use_vllm to false (or auto) to generate with transformers.")
    return replace(settings, use_vllm=False), f"transformers ({reason})"


def training_device(requested: str | None = None) -> str:
    """Where a run trains. On a GPU, the first visible one: the Trainer puts every batch on cuda:0."""
    return first_gpu_only(resolve_device(requested), "Training")


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: the CPU multiplies bf16 in hardware (Linux reports it in /proc/cpuinfo)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def train_adapter(
    *,
    base_model: str,
    train: Sequence[PreferenceExample] | Sequence[SFTExample] | Sequence[PromptExample],
    eval: Sequence[PreferenceExample] | Sequence[SFTExample] = (),
    settings: TrainingSettings,
    output_dir: Path,
    reporter: Reporter | None = None,
    device: str | None = None,
    reward: RewardSpec | None = None,
) -> TrainingResult:
    """``device``: "auto" (None), "cpu", "cuda" or "cuda:0"; the one used is in the result's summary["device"].
    ``train`` and ``eval`` are preference examples for DPO and reward runs, demonstrations (SFTExample) for SFT;
    an online run (GRPO, RLOO) takes prompts (PromptExample, no eval) and the ``reward`` model that scores them."""
    online = settings.kind in ONLINE
    unit = "demonstrations" if settings.kind == SFT else "prompts" if online else "pairs"
    if not train:
        raise NoUsableExamples(f"There are no training {unit}.")
    expected = SFTExample if settings.kind == SFT else PromptExample if online else PreferenceExample
    if not all(isinstance(example, expected) for example in [*train, *eval]):
        raise TypeError(f"A {settings.kind} run trains on {expected.__name__}s.")
    if online and (eval or reward is None):
        raise ValueError(f"A {settings.kind} run takes a reward model and no eval examples.")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    reporter = reporter or NoReporter()
    device = training_device(device)
    settings, generation = _generation_checked(resolved_for_device(settings, detect_device(device)), asked=settings.use_vllm)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    callback = _reporting_callback(reporter)
    tokenizer = load_tokenizer(base_model)
    reserved = settings.max_completion_length if online else 0
    train_lengths, eval_lengths = measure(tokenizer, train, completion_tokens=reserved), measure(tokenizer, eval)
    report = length_report(train_lengths, eval_lengths, max_length=settings.max_length, too_long=settings.too_long)
    limits = dict(max_length=settings.max_length, too_long=settings.too_long)
    train, eval = keep(train, train_lengths, **limits), keep(eval, eval_lengths, **limits)
    if not train:
        raise NoUsableExamples(f"No training {unit[:-1]} fits in max_length={settings.max_length} tokens.")
    if online:
        built = _online_trainer(base_model, train, settings, output_dir, callback, device, tokenizer, reward)
        trainer, callback.book = built.trainer, built.book
        extra_summary = {"reward_tokenizer": built.reward_tokenizer, "generation": generation}
    else:
        trainer, extra_summary = _trainer(base_model, train, eval, settings, output_dir, callback, device, tokenizer), {}
    examples = {
        "train": len(trainer.train_dataset),
        "eval": len(trainer.eval_dataset) if trainer.eval_dataset else 0,
        "train_selected": report.train.selected,
        "eval_selected": report.eval.selected,
        "truncated": report.train.truncated + report.eval.truncated,
        "dropped": report.train.dropped + report.eval.dropped,
    }
    reporter.prepared(examples)
    _check_placement(trainer.model, device)
    if not settings.bf16:
        _trainable_in_float32(trainer.model)
    _no_cpu_inference_packing(trainer.model)
    trainer.train()
    state = trainer.state
    if trainer.eval_dataset and not callback.stopped and _last_eval_step(state) != state.global_step:
        trainer.evaluate()
    adapter_dir = output_dir / "adapter"
    trainer.save_model(str(adapter_dir))
    result = TrainingResult(
        adapter_dir=adapter_dir,
        steps=state.global_step,
        total_steps=state.max_steps,
        stopped_early=callback.stopped,
        settings=settings.as_dict(),
        train_metrics=callback.last.get("train", {}),
        eval_metrics=callback.last.get("eval", {}),
        summary={**callback.summary, **extra_summary, "device": device},
        examples=examples,
        quantized_layers=_quantized_layers(trainer.model),
    )
    _write_artifacts(output_dir, result, state.log_history)
    return result


def _common_arguments(settings: TrainingSettings, output_dir: Path, device: str) -> dict:
    """The TrainingArguments of every kind."""
    on_gpu = is_cuda(device)
    return dict(
        output_dir=str(output_dir / "trainer"),
        learning_rate=settings.learning_rate,
        num_train_epochs=settings.epochs,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation,
        seed=settings.seed,
        bf16=settings.bf16,
        use_cpu=not on_gpu,  # transformers refuses bf16 without a GPU unless told the CPU is meant
        # The model where the Trainer puts the batches; without a map bitsandbytes would load 4-bit weights onto a
        # GPU even for a CPU run, and TRL's "auto" map would spread a large model over several GPUs.
        model_init_kwargs={"device_map": {"": "cuda:0" if on_gpu else "cpu"}},
        gradient_checkpointing=settings.gradient_checkpointing,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )


def _lora(settings: TrainingSettings) -> dict:
    return dict(
        r=settings.lora_rank,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=_target_modules(settings.target_modules),
    )


def _online_trainer(base_model, train, settings: TrainingSettings, output_dir: Path, callback, device: str, tokenizer, reward: RewardSpec):
    return online_trainer(
        base_model=base_model, train=train, settings=settings, common=_common_arguments(settings, output_dir, device),
        lora=_lora(settings), quantization=_quantization(settings), callbacks=[callback], device=device, tokenizer=tokenizer,
        reward=reward,
    )


def _trainer(base_model, train, eval, settings: TrainingSettings, output_dir: Path, callback, device: str, tokenizer):
    from peft import LoraConfig

    common = dict(
        _common_arguments(settings, output_dir, device),
        max_length=settings.max_length,
        eval_strategy="steps" if eval else "no",
        eval_steps=settings.eval_steps or 1 / EVALUATIONS_PER_RUN,
    )
    lora = _lora(settings)
    quantization = _quantization(settings)
    if settings.kind == SFT:
        from trl import SFTConfig, SFTTrainer

        # Prompt-completion rows: TRL computes the loss on the completion only (completion_only_loss, said outright
        # rather than left to its dataset sniffing), truncates to max_length keeping the start and drops what has no
        # completion token left (the too_long rule, lengths.py); no packing, each demonstration its own sequence.
        args = SFTConfig(**common, completion_only_loss=True, packing=False)
        return SFTTrainer(
            model=base_model, args=args, **_sft_datasets(train, eval), peft_config=LoraConfig(**lora, task_type="CAUSAL_LM"),
            quantization_config=quantization, callbacks=[callback],
        )
    with_margin = settings.kind != DPO and settings.use_margin
    if settings.kind != DPO and settings.too_long == TRUNCATE:
        # RewardTrainer drops what is longer than max_length; hand it the pairs tokenized and cut instead.
        datasets = _tokenized_datasets(tokenizer, train, eval, max_length=settings.max_length, with_margin=with_margin)
    else:
        datasets = _datasets(train, eval, with_margin=with_margin)
    if settings.kind == DPO:
        from trl import DPOConfig, DPOTrainer

        args = DPOConfig(**common, beta=settings.beta, loss_type=list(settings.loss_type), label_smoothing=settings.label_smoothing)
        return DPOTrainer(
            model=base_model, args=args, **datasets, peft_config=LoraConfig(**lora, task_type="CAUSAL_LM"),
            quantization_config=quantization, callbacks=[callback],
        )
    from trl import RewardConfig, RewardTrainer

    return RewardTrainer(
        model=base_model, args=RewardConfig(**common), **datasets, peft_config=LoraConfig(**lora, task_type="SEQ_CLS"),
        quantization_config=quantization, callbacks=[callback],
    )


def _datasets(train, eval, *, with_margin: bool) -> dict:
    from datasets import Dataset

    datasets = {"train_dataset": Dataset.from_list(trl_rows(train, with_margin=with_margin))}
    if eval:
        datasets["eval_dataset"] = Dataset.from_list(trl_rows(eval, with_margin=with_margin))
    return datasets


def _sft_datasets(train, eval) -> dict:
    from datasets import Dataset

    datasets = {"train_dataset": Dataset.from_list(sft_rows(train))}
    if eval:
        datasets["eval_dataset"] = Dataset.from_list(sft_rows(eval))
    return datasets


def _tokenized_datasets(tokenizer, train, eval, *, max_length: int, with_margin: bool) -> dict:
    """RewardTrainer's processed format (chosen_ids, rejected_ids, margin), each sequence cut to max_length."""
    from datasets import Dataset

    def rows(examples):
        out = []
        for example in examples:
            _, chosen, rejected = tokenized(tokenizer, example)
            row = {"chosen_ids": chosen[:max_length], "rejected_ids": rejected[:max_length]}
            if with_margin:
                row["margin"] = float(example.margin)
            out.append(row)
        return Dataset.from_list(out)

    datasets = {"train_dataset": rows(train)}
    if eval:
        datasets["eval_dataset"] = rows(eval)
    return datasets


def _target_modules(names: tuple[str, ...]) -> str | list[str]:
    return "all-linear" if names == ("all-linear",) else list(names)


def _quantization(settings: TrainingSettings):
    if not settings.load_in_4bit:
        return None
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=settings.double_quant,
        bnb_4bit_compute_dtype=torch.bfloat16 if settings.bf16 else torch.float32,
    )


def _check_placement(model, device: str) -> None:
    """The device reported in the summary is the one the weights are on: a model loaded elsewhere would fail at the
    first step with tensors on two devices, or train silently on another."""
    import torch

    kind = torch.device(device).type
    elsewhere = sorted({str(parameter.device) for parameter in model.parameters() if parameter.device.type != kind})
    if elsewhere:
        raise RuntimeError(f"The model was loaded onto {', '.join(elsewhere)} instead of {device}.")


def _trainable_in_float32(model) -> None:
    """TRL keeps QLoRA's trainable weights in bf16 (the paper's GPU recipe). Without bf16 compute the float32
    activations meet bf16 weights (the reward head fails outright) and small updates round away: keep them in float32."""
    import torch

    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()


def _no_cpu_inference_packing(model) -> None:
    """bitsandbytes 0.50 repacks a 4-bit weight for fast CPU inference the first time a layer runs in eval mode
    without gradients (on CPUs with AVX512-BF16), and keeps it packed when training resumes: from the first evaluation
    on, the forward pass goes through a kernel without a backward and every gradient is zero. Training never packs."""
    import bitsandbytes

    for module in model.modules():
        if isinstance(module, bitsandbytes.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def _quantized_layers(model) -> int:
    import bitsandbytes

    return sum(isinstance(module, bitsandbytes.nn.Linear4bit) for module in model.modules())


def _last_eval_step(state) -> int | None:
    steps = [entry["step"] for entry in state.log_history if "eval_loss" in entry]
    return steps[-1] if steps else None


def _reporting_callback(reporter: Reporter):
    from transformers import TrainerCallback

    class ReportingCallback(TrainerCallback):
        """Passes progress and metrics to the reporter and stops at a step's end when asked to."""

        def __init__(self):
            self.stopped = False
            self.last: dict[str, dict[str, float]] = {}
            self.summary: dict[str, float] = {}
            self.book = None  # an online run's SampleBook

        def on_train_begin(self, args, state, control, **kwargs):
            reporter.started(state.max_steps)

        def on_log(self, args, state, control, logs=None, **kwargs):
            split, metrics, summary = split_logs(logs or {})
            self.summary.update(summary)
            if metrics:
                self.last[split] = metrics
                reporter.logged(state.global_step, split, metrics)
            samples = self.book.take() if self.book else []
            if samples:
                reporter.sampled(state.global_step, samples)

        def on_step_end(self, args, state, control, **kwargs):
            if reporter.should_stop():
                self.stopped = True
                control.should_training_stop = True

    return ReportingCallback()


def split_logs(logs: dict) -> tuple[str, dict[str, float], dict[str, float]]:
    """One Trainer log entry as (split, chartable metrics, run summary)."""
    summary = {key: float(value) for key, value in logs.items() if key in SUMMARY_KEYS}
    split = "eval" if any(key.startswith("eval_") for key in logs) else "train"
    metrics = {}
    for key, value in logs.items():
        name = key.removeprefix("eval_")
        if key in SUMMARY_KEYS or name in NOT_METRICS or not isinstance(value, int | float) or isinstance(value, bool):
            continue
        if math.isfinite(value):
            metrics[name] = float(value)
    return split, metrics, summary


def _write_artifacts(output_dir: Path, result: TrainingResult, log_history: list[dict]) -> None:
    (output_dir / "settings.json").write_text(json.dumps(result.settings, indent=2, sort_keys=True))
    metrics = {"result": result.as_dict(), "log_history": log_history}
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True, default=str))
