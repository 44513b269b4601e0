"""SFT in training.trainers on its own (no Django): settings, rows, lengths, and real 4-bit QLoRA training of a tiny
model with TRL's SFTTrainer, checked on the batches it trained on: the loss covers the assistant's tokens only."""

import json

import pytest

from tests.training_tests.conftest import Recorder
from training.trainers.data import PreferenceExample, SFTExample, content_hash, sft_rows
from training.trainers.settings import SettingsError, training_settings

SMALL = {"lora_rank": 8, "lora_alpha": 16, "target_modules": "q_proj,v_proj", "batch_size": 3, "max_length": 128}
# Completions of different lengths, so that a batch has padding.
DEMONSTRATIONS = [
    SFTExample(i, [{"role": "user", "content": f"Say something kind, number {i}."}], f"You are wonderful, friend {i}!" + " Truly." * (i % 3))
    for i in range(10)
]
# Two of them far longer than 128 tokens.
LONG = [
    SFTExample(e.demonstration_id, e.prompt, "You are wonderful, truly. " * 60 if e.demonstration_id in (1, 8) else e.completion)
    for e in DEMONSTRATIONS
]



@pytest.fixture
def collated(monkeypatch):
    """Every batch TRL's collator builds while the test trains, as it returned it."""
    from trl.trainer import sft_trainer

    batches = []
    original = sft_trainer.DataCollatorForLanguageModeling.torch_call

    def recording(self, examples):
        batch = original(self, examples)
        batches.append({name: value.clone() for name, value in batch.items()})
        return batch

    monkeypatch.setattr(sft_trainer.DataCollatorForLanguageModeling, "torch_call", recording)
    return batches


# --- settings and rows -------------------------------------------------------------------------------------------


def test_sft_settings_default_and_refuse_the_other_kinds_settings():
    sft = training_settings("sft")
    assert sft.learning_rate == 2e-4 and sft.load_in_4bit and sft.too_long == "truncate"
    assert not {"beta", "loss_type", "label_smoothing", "use_margin"} & set(sft.as_dict())
    for name, value in (("beta", 0.2), ("loss_type", "sigmoid"), ("label_smoothing", 0.1), ("use_margin", False)):
        with pytest.raises(SettingsError) as caught:
            training_settings("sft", {name: value})
        assert caught.value.errors == {name: f"Only for {'reward' if name == 'use_margin' else 'dpo, grpo and rloo' if name == 'beta' else 'dpo'} runs."}
    with pytest.raises(SettingsError) as caught:
        training_settings("ppo")
    assert caught.value.errors == {"kind": "Choose dpo, reward, sft, grpo or rloo."}


def test_rows_are_trl_conversational_prompt_completion_and_hashed():
    assert sft_rows(DEMONSTRATIONS[:1]) == [{
        "prompt": [{"role": "user", "content": "Say something kind, number 0."}],
        "completion": [{"role": "assistant", "content": "You are wonderful, friend 0!"}],
    }]
    assert content_hash(DEMONSTRATIONS[:8], DEMONSTRATIONS[8:]) == content_hash(DEMONSTRATIONS[:8], DEMONSTRATIONS[8:])
    assert content_hash(DEMONSTRATIONS[:8], DEMONSTRATIONS[8:]) != content_hash(DEMONSTRATIONS[:7], DEMONSTRATIONS[7:])
    edited = [SFTExample(0, DEMONSTRATIONS[0].prompt, "Another answer."), *DEMONSTRATIONS[1:8]]
    assert content_hash(edited, DEMONSTRATIONS[8:]) != content_hash(DEMONSTRATIONS[:8], DEMONSTRATIONS[8:])


def test_a_run_refuses_examples_of_another_kind(tmp_path):
    from training.trainers.run import train_adapter

    pair = PreferenceExample(1, [{"role": "user", "content": "Hi"}], "Hello!", "Go away.")
    with pytest.raises(TypeError, match="sft run trains on SFTExamples"):
        train_adapter(base_model="unused", train=[pair], settings=training_settings("sft"), output_dir=tmp_path)
    with pytest.raises(TypeError, match="dpo run trains on PreferenceExamples"):
        train_adapter(base_model="unused", train=DEMONSTRATIONS, settings=training_settings("dpo"), output_dir=tmp_path)


# --- real training -------------------------------------------------------------------------------------------------


def test_sft_in_4_bits_trains_on_the_assistant_tokens_only(tiny_model, tmp_path, collated):
    from training.trainers.lengths import load_tokenizer, tokenized_demonstration
    from training.trainers.run import train_adapter

    recorder = Recorder()
    result = train_adapter(
        base_model=tiny_model, train=DEMONSTRATIONS[:8], eval=DEMONSTRATIONS[8:], output_dir=tmp_path, reporter=recorder,
        settings=training_settings("sft", {**SMALL, "epochs": 2}),
    )
    assert recorder.total == result.total_steps == result.steps == 6 and not result.stopped_early
    assert result.quantized_layers > 0  # the base really is held in 4 bits
    assert result.examples == recorder.examples == {"train": 8, "eval": 2, "train_selected": 8, "eval_selected": 2, "truncated": 0, "dropped": 0}

    # Every batch the collator built (training and evaluation): labels are -100 on each prompt token (the system
    # prompt and the user's turn the chat template renders, up to and including "<|im_start|>assistant\n") and on the
    # padding, and equal to the input ids on the assistant's reply and its end of turn.
    tokenizer = load_tokenizer(tiny_model)
    expected = {tuple(ids): prompt for prompt, ids in (tokenized_demonstration(tokenizer, e) for e in DEMONSTRATIONS)}
    completions = {tuple(tokenized_demonstration(tokenizer, e)[1]): e.completion for e in DEMONSTRATIONS}
    assert len(collated) == 6 + 3 * 1  # six training batches, one eval batch at each of the three evaluations
    padded = 0
    for batch in collated:
        for input_ids, labels, mask in zip(batch["input_ids"].tolist(), batch["labels"].tolist(), batch["attention_mask"].tolist()):
            length = sum(mask)
            assert mask == [1] * length + [0] * (len(mask) - length)  # padded on the right
            prompt = expected[tuple(input_ids[:length])]  # the whole demonstration, as TRL tokenizes it
            assert 0 < prompt < length
            assert labels[:prompt] == [-100] * prompt
            assert labels[prompt:length] == input_ids[prompt:length]
            assert labels[length:] == [-100] * (len(labels) - length)
            padded += length < len(mask)
            reply = tokenizer.decode(input_ids[prompt:length])
            assert reply == completions[tuple(input_ids[:length])] + "<|im_end|>\n"
            assert "<|im_start|>assistant\n" in tokenizer.decode(input_ids[:prompt]) and "Say something kind" in tokenizer.decode(input_ids[:prompt])
    assert padded  # some batches did have padding

    train_logs = [metrics for _, split, metrics in recorder.logs if split == "train"]
    eval_logs = [metrics for _, split, metrics in recorder.logs if split == "eval"]
    assert len(train_logs) == 6 and all({"loss", "mean_token_accuracy", "entropy", "num_tokens", "grad_norm"} <= set(m) for m in train_logs)
    assert all(m["grad_norm"] > 0 for m in train_logs)  # evaluations do not stop learning (_no_cpu_inference_packing)
    assert eval_logs and {"loss", "mean_token_accuracy", "entropy", "num_tokens"} <= set(eval_logs[-1]) and result.eval_metrics == eval_logs[-1]
    assert (result.adapter_dir / "adapter_model.safetensors").is_file() and (result.adapter_dir / "tokenizer_config.json").is_file()
    adapter_config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert adapter_config["task_type"] == "CAUSAL_LM" and adapter_config["r"] == 8
    assert json.loads((tmp_path / "settings.json").read_text())["learning_rate"] == 2e-4


def test_sft_learns_the_demonstrations(tiny_model, tmp_path):
    from training.trainers.run import train_adapter

    result = train_adapter(
        base_model=tiny_model, train=DEMONSTRATIONS[:8], output_dir=tmp_path, reporter=(recorder := Recorder()),
        settings=training_settings("sft", {**SMALL, "epochs": 8, "learning_rate": 5e-3}),
    )
    losses = [metrics["loss"] for _, split, metrics in recorder.logs if split == "train"]
    assert result.steps == 24 and not result.eval_metrics  # nothing held out: no evaluation
    # A random tiny model starts near the uniform loss, ln(49152) = 10.8; its adapter pulls the loss down (an epoch is
    # three steps: compare the first epoch with the last).
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.2


def test_the_reporter_stops_an_sft_run_at_a_step_end_and_the_adapter_is_kept(tiny_model, tmp_path):
    from training.trainers.run import train_adapter

    result = train_adapter(
        base_model=tiny_model, train=DEMONSTRATIONS, settings=training_settings("sft", {**SMALL, "epochs": 3}),
        output_dir=tmp_path, reporter=Recorder(stop_after=2), device="cpu",
    )
    assert result.stopped_early and result.steps == 2 and result.total_steps == 12
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()


# --- demonstrations longer than max_length --------------------------------------------------------------------------


def test_lengths_are_measured_as_sft_trainer_tokenizes_them(tiny_model):
    from training.trainers.lengths import length_report, load_tokenizer, measure, tokenized_demonstration

    tokenizer = load_tokenizer(tiny_model)
    lengths = measure(tokenizer, LONG)
    for example, length in zip(LONG, lengths):
        prompt, ids = tokenized_demonstration(tokenizer, example)
        assert (length.prompt, length.total) == (prompt, len(ids))
    drop = length_report(lengths[:8], lengths[8:], max_length=128, too_long="drop")
    assert (drop.train.selected, drop.train.fit, drop.train.used, drop.train.dropped) == (8, 7, 7, 1)
    assert (drop.eval.selected, drop.eval.fit, drop.eval.used, drop.eval.dropped) == (2, 1, 1, 1)
    assert drop.longest == drop.keep_all_max_length > 128
    truncate = length_report(lengths[:8], lengths[8:], max_length=128, too_long="truncate")
    assert (truncate.train.used, truncate.train.truncated, truncate.eval.used, truncate.eval.truncated) == (8, 1, 2, 1)


@pytest.mark.parametrize("too_long", ["drop", "truncate"])
def test_too_long_demonstrations_are_dropped_or_truncated_as_set(tiny_model, tmp_path, collated, too_long):
    from training.trainers.run import train_adapter

    result = train_adapter(
        base_model=tiny_model, train=LONG[:8], eval=LONG[8:], output_dir=tmp_path, reporter=Recorder(),
        settings=training_settings("sft", {**SMALL, "too_long": too_long, "eval_steps": 100}),
    )
    if too_long == "drop":
        assert result.examples == {"train": 7, "eval": 1, "train_selected": 8, "eval_selected": 2, "truncated": 0, "dropped": 2}
    else:
        assert result.examples == {"train": 8, "eval": 2, "train_selected": 8, "eval_selected": 2, "truncated": 2, "dropped": 0}
    widths = [batch["input_ids"].shape[1] for batch in collated]
    assert max(widths) == 128 if too_long == "truncate" else max(widths) < 128  # cut to max_length, or left out


def test_a_prompt_that_fills_max_length_leaves_nothing_to_learn(tiny_model, tmp_path):
    from training.trainers.run import NoUsableExamples, train_adapter

    long_prompt = [SFTExample(e.demonstration_id, [{"role": "user", "content": "Please. " * 80}], e.completion) for e in DEMONSTRATIONS]
    with pytest.raises(NoUsableExamples, match="No training demonstration fits in max_length=128"):
        train_adapter(base_model=tiny_model, train=long_prompt, settings=training_settings("sft", SMALL), output_dir=tmp_path)


def test_merging_an_sft_adapter_gives_the_adapted_model(tiny_model, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from training.trainers.merge import merge_adapter
    from training.trainers.run import train_adapter

    result = train_adapter(
        base_model=tiny_model, train=DEMONSTRATIONS[:8], output_dir=tmp_path / "run",
        settings=training_settings("sft", {**SMALL, "epochs": 2, "learning_rate": 5e-3}),
    )
    merged_dir = merge_adapter(base_model=tiny_model, adapter_path=str(result.adapter_dir), output_dir=tmp_path / "merged")
    inputs = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        expected = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), str(result.adapter_dir))(inputs).logits
        merged = AutoModelForCausalLM.from_pretrained(merged_dir)(inputs).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_model)(inputs).logits
    assert torch.allclose(merged, expected, atol=1e-4) and not torch.allclose(merged, base, atol=1e-4)
    assert (merged_dir / "tokenizer_config.json").is_file()
