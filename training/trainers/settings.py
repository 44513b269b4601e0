"""Training settings: defaults, validation and device-aware choices (pure Python: no Django, no torch at import).

``training_settings(kind, data)`` turns user input (a form, a JSON body, command-line flags) into a validated
``TrainingSettings`` or raises ``SettingsError`` with one message per field. ``bf16`` and ``gradient_checkpointing``
may stay ``None`` ("auto"): ``resolved_for_device`` decides them where the run executes, because only the GPU worker
knows its device.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields, replace

DPO, REWARD, SFT, GRPO, RLOO = "dpo", "reward", "sft", "grpo", "rloo"
OFFLINE = (DPO, REWARD, SFT)  # trained on collected examples: pairs or demonstrations
ONLINE = (GRPO, RLOO)  # trained on prompts, against a reward model, generating as they go
KINDS = OFFLINE + ONLINE

# TRL 1.16's DPOConfig.loss_type values (tests/training_tests check this list against the installed TRL).
DPO_LOSS_TYPES = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_unpaired",
    "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
)
# The settings that apply to some kinds only (the others apply to every kind).
ONLY_FOR: dict[str, tuple[str, ...]] = {
    "beta": (DPO, *ONLINE), "loss_type": (DPO,), "label_smoothing": (DPO,), "use_margin": (REWARD,),
    "too_long": OFFLINE, "eval_steps": OFFLINE,
    **{name: ONLINE for name in (
        "num_generations", "max_completion_length", "temperature", "max_steps", "reward_weight", "length_penalty",
        "length_target", "use_vllm",
    )},
}
MODULE_NAME = re.compile(r"^[A-Za-z_][\w.]*$")
# SFT: 2e-4, the QLoRA paper's rate for its smaller models and the usual LoRA SFT rate (TRL's SFTConfig default, 2e-5,
# is a full fine-tuning rate: an adapter barely moves with it).
# GRPO, RLOO: 1e-5, about ten times the usual full fine-tuning rate of online RL (TRL's 1e-6), as LoRA needs.
DEFAULT_LEARNING_RATE = {DPO: 5e-5, REWARD: 1e-4, SFT: 2e-4, GRPO: 1e-5, RLOO: 1e-5}
# The KL coefficient: DPO's usual 0.1; GRPO 0.04 (the DeepSeekMath paper's; TRL's default of 0 would drop the reference
# and its KL chart); RLOO 0.05 (TRL's default).
DEFAULT_BETA = {DPO: 0.1, GRPO: 0.04, RLOO: 0.05}


def applies(name: str, kind: str) -> bool:
    """Whether the setting ``name`` means something for a run of ``kind``."""
    return kind in ONLY_FOR.get(name, KINDS)


def kinds_of(name: str) -> str:
    """The kinds a kind-specific setting is for, in words ("dpo, grpo and rloo")."""
    kinds = ONLY_FOR[name]
    return kinds[0] if len(kinds) == 1 else f"{', '.join(kinds[:-1])} and {kinds[-1]}"


class SettingsError(ValueError):
    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{name}: {message}" for name, message in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class TrainingSettings:
    kind: str
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    load_in_4bit: bool = True
    double_quant: bool = True
    beta: float | None = None  # DPO, GRPO, RLOO; None: the kind's default (DEFAULT_BETA)
    loss_type: tuple[str, ...] = ("sigmoid",)  # DPO; several are summed (e.g. sigmoid + sft)
    label_smoothing: float = 0.0  # DPO: robust / exo_pair
    use_margin: bool = True  # reward model: the rank gap as a margin in the loss
    learning_rate: float = 0.0  # 0: the kind's default
    epochs: float = 1.0
    batch_size: int = 4
    gradient_accumulation: int = 1
    max_length: int = 1024
    too_long: str = "truncate"  # pairs (demonstrations) longer than max_length: "truncate" (keep them, cut) or "drop" (see lengths.py)
    seed: int = 0
    eval_steps: int = 0  # 0: about five evaluations per run
    bf16: bool | None = None  # None: decided for the device
    gradient_checkpointing: bool | None = None
    # Online RL (GRPO, RLOO): completions generated per prompt, sampled up to max_completion_length tokens at this
    # temperature (prompt + completion within max_length), and scored by the reward model times reward_weight, plus
    # length_penalty times -(tokens beyond length_target) / max_completion_length.
    num_generations: int = 4
    max_completion_length: int = 128
    temperature: float = 1.0
    max_steps: int = 0  # 0: as many as the epochs take
    reward_weight: float = 1.0
    length_penalty: float = 0.0
    length_target: int = 0
    use_vllm: bool | None = None  # None: vLLM where the run has a GPU and vLLM is installed

    def as_dict(self) -> dict:
        """The settings that apply to this kind of run, JSON-ready."""
        data = {key: value for key, value in asdict(self).items() if key != "kind" and applies(key, self.kind)}
        return {key: list(value) if isinstance(value, tuple) else value for key, value in data.items()}


MAX_EVAL_STEPS = 1_000_000  # beyond any run's length: the run then evaluates once, at its end
SETTING_NAMES = tuple(f.name for f in fields(TrainingSettings) if f.name != "kind")
TOO_LONG_CHOICES = ("truncate", "drop")  # training.trainers.lengths: what each does with each trainer
# How forms and help texts name a setting where its field name does not read well capitalized.
LABELS = {
    "lora_rank": "LoRA rank", "lora_alpha": "LoRA alpha", "lora_dropout": "LoRA dropout",
    "max_length": "Max length (tokens)", "too_long": "Pairs longer than max length", "bf16": "bf16",
    "num_generations": "Generations per prompt", "max_completion_length": "Max completion length (tokens)",
    "beta": "Beta (KL coefficient)", "reward_weight": "Reward model weight", "use_vllm": "Generate with vLLM",
    "length_target": "Length target (tokens)",
}


def setting_label(name: str) -> str:
    return LABELS.get(name, name.replace("_", " ").capitalize())


def training_settings(kind: str, data: dict | None = None) -> TrainingSettings:
    """Validated settings from user input; unknown keys and wrong values raise SettingsError naming each field."""
    if kind not in KINDS:
        raise SettingsError({"kind": f"Choose {', '.join(KINDS[:-1])} or {KINDS[-1]}."})
    data = {key: value for key, value in (data or {}).items() if value is not None and value != ""}
    unknown = sorted(set(data) - set(SETTING_NAMES))
    if unknown:
        raise SettingsError({name: "Unknown setting." for name in unknown})
    misplaced = sorted(name for name in data if not applies(name, kind))
    if misplaced:
        raise SettingsError({name: f"Only for {kinds_of(name)} runs." for name in misplaced})
    errors: dict[str, str] = {}
    values = {}
    for name, convert in _CONVERTERS.items():
        if name in data:
            try:
                values[name] = convert(data[name])
            except (TypeError, ValueError) as exc:
                errors[name] = str(exc) or "Invalid value."
    if errors:
        raise SettingsError(errors)
    if values.get("load_in_4bit") is False:
        values.setdefault("double_quant", False)  # double quantization only exists in 4 bits
    settings = replace(TrainingSettings(kind=kind), **values)
    if not settings.learning_rate:
        settings = replace(settings, learning_rate=DEFAULT_LEARNING_RATE[kind])
    if settings.beta is None and kind in DEFAULT_BETA:
        settings = replace(settings, beta=DEFAULT_BETA[kind])
    errors = _range_errors(settings)
    if errors:
        raise SettingsError(errors)
    return settings


def _boolean(value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("Use true or false.")


def _auto_boolean(value) -> bool | None:
    return None if str(value).strip().lower() == "auto" else _boolean(value)


def _names(value) -> tuple[str, ...]:
    items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    return tuple(str(item).strip() for item in items if str(item).strip())


def _integer(value) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError("Must be a whole number.")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError("Must be a whole number.") from None


def _number(value) -> float:
    if isinstance(value, bool):
        raise ValueError("Must be a number.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("Must be a number.") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError("Must be a finite number.")
    return number


_CONVERTERS = {
    "lora_rank": _integer, "lora_alpha": _integer, "lora_dropout": _number, "target_modules": _names,
    "load_in_4bit": _boolean, "double_quant": _boolean, "beta": _number, "loss_type": _names,
    "label_smoothing": _number, "use_margin": _boolean, "learning_rate": _number, "epochs": _number,
    "batch_size": _integer, "gradient_accumulation": _integer, "max_length": _integer, "too_long": lambda value: str(value).strip().lower(), "seed": _integer,
    "eval_steps": _integer, "bf16": _auto_boolean, "gradient_checkpointing": _auto_boolean,
    "num_generations": _integer, "max_completion_length": _integer, "temperature": _number, "max_steps": _integer,
    "reward_weight": _number, "length_penalty": _number, "length_target": _integer, "use_vllm": _auto_boolean,
}


def _range_errors(s: TrainingSettings) -> dict[str, str]:
    checks = {
        "lora_rank": (1 <= s.lora_rank <= 256, "LoRA rank must be between 1 and 256."),
        "lora_alpha": (1 <= s.lora_alpha <= 1024, "LoRA alpha must be between 1 and 1024."),
        "lora_dropout": (0 <= s.lora_dropout < 1, "LoRA dropout must be at least 0 and below 1."),
        "target_modules": (
            bool(s.target_modules) and all(MODULE_NAME.match(name) for name in s.target_modules),
            "Name one or more modules (e.g. q_proj, v_proj) or all-linear.",
        ),
        "double_quant": (s.load_in_4bit or not s.double_quant, "Double quantization needs 4-bit loading."),
        "beta": _beta_check(s),
        "loss_type": (
            bool(s.loss_type) and all(loss in DPO_LOSS_TYPES for loss in s.loss_type) and len(set(s.loss_type)) == len(s.loss_type),
            f"Choose one or more distinct of: {', '.join(DPO_LOSS_TYPES)}.",
        ),
        "label_smoothing": (0 <= s.label_smoothing < 0.5, "Label smoothing must be at least 0 and below 0.5."),
        "learning_rate": (0 < s.learning_rate <= 1e-2, "The learning rate must be above 0 and at most 0.01."),
        "epochs": (0 < s.epochs <= 100, "Epochs must be above 0 and at most 100."),
        "batch_size": (1 <= s.batch_size <= 512, "Batch size must be between 1 and 512."),
        "gradient_accumulation": (1 <= s.gradient_accumulation <= 512, "Gradient accumulation must be between 1 and 512."),
        "max_length": (16 <= s.max_length <= 131072, "Max length must be between 16 and 131072 tokens."),
        "too_long": (s.too_long in TOO_LONG_CHOICES, f"Choose {' or '.join(TOO_LONG_CHOICES)}."),
        "seed": (0 <= s.seed < 2**32, "The seed must be between 0 and 4294967295."),
        "eval_steps": (0 <= s.eval_steps <= MAX_EVAL_STEPS, f"Eval steps must be 0 (automatic) to {MAX_EVAL_STEPS:,}."),
    }
    if s.kind in ONLINE:
        checks.update(_online_checks(s))
    errors = {name: message for name, (ok, message) in checks.items() if not ok}
    if "exo_pair" in s.loss_type and s.label_smoothing == 0:
        errors.setdefault("label_smoothing", "The exo_pair loss needs label smoothing above 0 (its paper suggests 0.001).")
    return errors


def _beta_check(s: TrainingSettings) -> tuple[bool, str]:
    if s.kind in ONLINE:  # 0: no KL penalty, and no reference model
        return s.beta is not None and 0 <= s.beta <= 10, "Beta must be at least 0 and at most 10."
    return s.beta is None or 0 < s.beta <= 10, "Beta must be above 0 and at most 10."


def _online_checks(s: TrainingSettings) -> dict[str, tuple[bool, str]]:
    completions = s.batch_size * s.gradient_accumulation
    return {
        "num_generations": (2 <= s.num_generations <= 64, "Generations per prompt must be between 2 and 64 (they are compared with each other)."),
        "max_completion_length": (
            1 <= s.max_completion_length < s.max_length,
            f"Max completion length must be at least 1 and below max length ({s.max_length}), which also holds the prompt.",
        ),
        "temperature": (0 < s.temperature <= 2, "The temperature must be above 0 and at most 2 (the completions of a prompt must differ)."),
        "max_steps": (0 <= s.max_steps <= MAX_EVAL_STEPS, f"Max steps must be 0 (as many as the epochs take) to {MAX_EVAL_STEPS:,}."),
        "reward_weight": (0 < s.reward_weight <= 100, "The reward model's weight must be above 0 and at most 100."),
        "length_penalty": (0 <= s.length_penalty <= 100, "The length penalty must be at least 0 and at most 100."),
        "length_target": (
            0 <= s.length_target < s.max_completion_length,
            f"The length target must be at least 0 and below the max completion length ({s.max_completion_length}).",
        ),
        # TRL splits each generation batch (batch size x accumulation completions) into whole groups of a prompt's
        # completions.
        "batch_size": (
            completions % s.num_generations == 0,
            f"Batch size x gradient accumulation ({completions} completions) must be a multiple of the generations per "
            f"prompt ({s.num_generations}).",
        ),
    }


@dataclass(frozen=True)
class Device:
    kind: str  # "cuda" or "cpu"
    bf16_supported: bool = False
    has_vllm: bool = False  # the GPU build of vLLM is installed (online runs generate with it, colocated)


def resolved_for_device(settings: TrainingSettings, device: Device) -> TrainingSettings:
    """Fill in the "auto" choices. bf16 where the hardware computes in it natively: a GPU that supports it, or a CPU
    with AVX512-BF16 / AMX (about 2x faster per step than float32 on ours); elsewhere a CPU only emulates it, about
    10x slower with checkpointing (NOTES.md). Gradient checkpointing only on a GPU, to fit larger models on one card:
    on a CPU memory is rarely the limit and recomputing activations costs time. An online run generates with vLLM
    (colocated, sharing the GPU) where it has a GPU and vLLM is installed, with transformers elsewhere (vLLM's CPU
    build is not faster than transformers at these batch sizes, NOTES.md)."""
    on_gpu = device.kind == "cuda"
    return replace(
        settings,
        bf16=device.bf16_supported if settings.bf16 is None else settings.bf16,
        gradient_checkpointing=on_gpu if settings.gradient_checkpointing is None else settings.gradient_checkpointing,
        use_vllm=(on_gpu and device.has_vllm) if settings.use_vllm is None else settings.use_vllm,
    )
