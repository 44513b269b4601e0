"""training.trainers on its own (no Django): settings, and real QLoRA training of a tiny model with TRL."""

import json
import re

import pytest

from tests.training_tests.conftest import Recorder
from training.trainers.data import PreferenceExample, content_hash, trl_rows
from training.trainers.settings import (
    DPO_LOSS_TYPES, Device, SettingsError, TrainingSettings, resolved_for_device, training_settings,
)

SMALL = {"lora_rank": 8, "lora_alpha": 16, "target_modules": "q_proj,v_proj", "batch_size": 2, "max_length": 128}
EXAMPLES = [
    PreferenceExample(i, [{"role": "user", "content": f"Say something kind, number {i}."}], f"You are wonderful, friend {i}!", "Go away.", 1.0 + i % 2)
    for i in range(8)
]



# --- settings ------------------------------------------------------------------------------------------------------


def test_defaults_per_kind():
    dpo, reward = training_settings("dpo"), training_settings("reward")
    assert dpo.learning_rate == 5e-5 and reward.learning_rate == 1e-4
    assert dpo.load_in_4bit and dpo.double_quant and dpo.loss_type == ("sigmoid",)
    assert "beta" in dpo.as_dict() and "beta" not in reward.as_dict() and "use_margin" in reward.as_dict()


def test_turning_4_bits_off_turns_double_quantization_off():
    assert training_settings("dpo", {"load_in_4bit": False}).double_quant is False


def test_user_input_is_converted():
    s = training_settings("dpo", {"lora_rank": "8", "target_modules": "q_proj, v_proj", "load_in_4bit": "false",
                                  "double_quant": "off", "loss_type": ["sigmoid", "sft"], "bf16": "auto", "epochs": "0.5"})
    assert (s.lora_rank, s.target_modules, s.load_in_4bit, s.loss_type, s.bf16, s.epochs) == (
        8, ("q_proj", "v_proj"), False, ("sigmoid", "sft"), None, 0.5)


@pytest.mark.parametrize(
    "kind, data, field",
    [
        ("dpo", {"lora_rank": 0}, "lora_rank"),
        ("dpo", {"lora_rank": 2.5}, "lora_rank"),
        ("dpo", {"lora_rank": "eight"}, "lora_rank"),
        ("dpo", {"lora_dropout": 1}, "lora_dropout"),
        ("dpo", {"target_modules": "q_proj; drop table"}, "target_modules"),
        ("dpo", {"target_modules": []}, "target_modules"),
        ("dpo", {"load_in_4bit": False, "double_quant": True}, "double_quant"),
        ("dpo", {"beta": 0}, "beta"),
        ("dpo", {"loss_type": "sigmoid,made_up"}, "loss_type"),
        ("dpo", {"loss_type": "ipo,ipo"}, "loss_type"),
        ("dpo", {"loss_type": "exo_pair"}, "label_smoothing"),
        ("dpo", {"label_smoothing": 0.5}, "label_smoothing"),
        ("dpo", {"learning_rate": -1}, "learning_rate"),
        ("dpo", {"learning_rate": "nan"}, "learning_rate"),
        ("dpo", {"epochs": 0}, "epochs"),
        ("dpo", {"batch_size": 0}, "batch_size"),
        ("dpo", {"gradient_accumulation": 0}, "gradient_accumulation"),
        ("dpo", {"max_length": 8}, "max_length"),
        ("dpo", {"seed": -1}, "seed"),
        ("dpo", {"bf16": "maybe"}, "bf16"),
        ("dpo", {"use_margin": True}, "use_margin"),
        ("reward", {"beta": 0.2}, "beta"),
        ("reward", {"warmup": 3}, "warmup"),
        ("ppo", {}, "kind"),
        ("sft", {"beta": 0.1}, "beta"),  # DPO and reward settings are not for SFT runs
        ("sft", {"use_margin": False}, "use_margin"),
    ],
)
def test_bad_settings_name_the_field(kind, data, field):
    with pytest.raises(SettingsError) as caught:
        training_settings(kind, data)
    assert field in caught.value.errors and caught.value.errors[field]


def test_loss_types_are_those_of_the_installed_trl():
    from trl import DPOConfig

    help_text = DPOConfig.__dataclass_fields__["loss_type"].metadata["help"]
    offered = set(re.findall(r"`'([a-z_]+)'`", help_text.split("If multiple")[0]))
    assert offered == set(DPO_LOSS_TYPES)


def test_device_defaults():
    auto = TrainingSettings(kind="dpo")
    cpu = resolved_for_device(auto, Device("cpu"))
    assert (cpu.bf16, cpu.gradient_checkpointing) == (False, False)
    amx = resolved_for_device(auto, Device("cpu", bf16_supported=True))
    assert (amx.bf16, amx.gradient_checkpointing) == (True, False)
    gpu = resolved_for_device(auto, Device("cuda", bf16_supported=True))
    assert (gpu.bf16, gpu.gradient_checkpointing) == (True, True)
    old_gpu = resolved_for_device(auto, Device("cuda", bf16_supported=False))
    assert old_gpu.bf16 is False
    forced = resolved_for_device(TrainingSettings(kind="dpo", gradient_checkpointing=True), Device("cpu"))
    assert forced.gradient_checkpointing is True


def test_the_device_behind_the_defaults_is_resolved_once():
    import torch

    from training.trainers.run import cpu_has_native_bf16, detect_device, training_device

    if torch.cuda.is_available():
        pytest.skip("checks the choice on a machine without a GPU")
    assert training_device() == training_device("cpu") == "cpu"
    assert detect_device() == detect_device("cpu") == Device("cpu", bf16_supported=cpu_has_native_bf16())
    with pytest.raises(ValueError, match="Device 'cuda' was asked for, but no CUDA GPU is available here"):
        detect_device("cuda")


def test_training_refuses_a_gpu_it_does_not_have_before_loading_anything(tmp_path):
    import torch

    from training.trainers.run import train_adapter

    if torch.cuda.is_available():
        pytest.skip("checks the refusal on a machine without a GPU")
    with pytest.raises(ValueError, match="Device 'cuda' was asked for, but no CUDA GPU is available here"):
        train_adapter(base_model="unused", train=EXAMPLES, settings=training_settings("dpo"), output_dir=tmp_path, device="cuda")
    assert not any(tmp_path.iterdir())


def test_rows_and_hash():
    rows = trl_rows(EXAMPLES[:1], with_margin=True)
    assert rows == [{
        "prompt": [{"role": "user", "content": "Say something kind, number 0."}],
        "chosen": [{"role": "assistant", "content": "You are wonderful, friend 0!"}],
        "rejected": [{"role": "assistant", "content": "Go away."}],
        "margin": 1.0,
    }]
    assert content_hash(EXAMPLES[:6], EXAMPLES[6:]) == content_hash(EXAMPLES[:6], EXAMPLES[6:])
    assert content_hash(EXAMPLES[:6], EXAMPLES[6:]) != content_hash(EXAMPLES[:5], EXAMPLES[5:])


# --- real training ----------------------------------------------------------------------------------------------


def test_dpo_in_4_bits_reports_metrics_and_saves_an_adapter(tiny_model, tmp_path):
    from training.trainers.run import train_adapter

    recorder = Recorder()
    result = train_adapter(
        base_model=tiny_model, train=EXAMPLES[:6], eval=EXAMPLES[6:], settings=training_settings("dpo", {**SMALL, "epochs": 2}),
        output_dir=tmp_path, reporter=recorder,
    )
    assert recorder.total == result.total_steps == result.steps == 6 and not result.stopped_early
    assert result.quantized_layers > 0  # the base really is held in 4 bits
    train_steps = [step for step, split, _ in recorder.logs if split == "train"]
    assert train_steps == [1, 2, 3, 4, 5, 6]
    # Evaluations run between training steps; training must go on learning after them (see _no_cpu_inference_packing).
    assert all(metrics["grad_norm"] > 0 for _, split, metrics in recorder.logs if split == "train")
    eval_logs = [metrics for step, split, metrics in recorder.logs if split == "eval"]
    assert eval_logs and {"loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"} <= set(eval_logs[-1])
    assert result.eval_metrics == eval_logs[-1] and result.examples == recorder.examples == {
        "train": 6, "eval": 2, "train_selected": 6, "eval_selected": 2, "truncated": 0, "dropped": 0}
    from training.trainers.run import cpu_has_native_bf16

    # This machine's defaults: bf16 where the CPU has it natively, no gradient checkpointing on a CPU.
    assert result.settings["bf16"] is cpu_has_native_bf16() and result.settings["gradient_checkpointing"] is False
    assert result.summary["device"] == "cpu"  # resolved from "auto" on this machine
    assert (result.adapter_dir / "adapter_model.safetensors").is_file() and (result.adapter_dir / "tokenizer_config.json").is_file()
    assert json.loads((tmp_path / "settings.json").read_text())["lora_rank"] == 8
    assert json.loads((tmp_path / "metrics.json").read_text())["log_history"]


def test_the_reporter_stops_a_run_at_a_step_end_and_the_adapter_is_kept(tiny_model, tmp_path):
    from training.trainers.run import train_adapter

    result = train_adapter(
        base_model=tiny_model, train=EXAMPLES, settings=training_settings("dpo", {**SMALL, "epochs": 3}),
        output_dir=tmp_path, reporter=Recorder(stop_after=2), device="cpu",
    )
    assert result.stopped_early and result.steps == 2 and result.total_steps == 12 and result.summary["device"] == "cpu"
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("bf16", ["auto", False])  # float32 is also what a CPU without native bf16 gets
def test_a_reward_model_learns_the_preference_and_reloads_to_score(tiny_model, tmp_path, bf16):
    from training.trainers.run import train_adapter
    from training.trainers.scoring import RewardScorer

    result = train_adapter(
        base_model=tiny_model, train=EXAMPLES[:6], eval=EXAMPLES[6:],
        settings=training_settings("reward", {**SMALL, "epochs": 6, "learning_rate": 5e-3, "bf16": bf16}), output_dir=tmp_path,
    )
    assert {"loss", "accuracy", "margin"} <= set(result.eval_metrics)
    scorer = RewardScorer(base_model=tiny_model, adapter_path=str(result.adapter_dir), load_in_4bit=True)
    scores = [score for batch in scorer.score([(e.prompt, e.chosen) for e in EXAMPLES] + [(e.prompt, e.rejected) for e in EXAMPLES], batch_size=5) for score in batch]
    chosen, rejected = scores[:8], scores[8:]
    assert all(c > r for c, r in zip(chosen, rejected))  # held-out examples 6 and 7 included
    assert result.eval_metrics["accuracy"] == 1.0


def test_no_usable_examples_is_a_clear_error(tiny_model, tmp_path):
    from training.trainers.run import NoUsableExamples, train_adapter

    with pytest.raises(NoUsableExamples, match="max_length=16"):
        train_adapter(base_model=tiny_model, train=EXAMPLES, settings=training_settings("reward", {**SMALL, "max_length": 16}), output_dir=tmp_path)


def test_merging_an_adapter_gives_the_adapted_model(tiny_model, tiny_adapter, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from training.trainers.merge import merge_adapter

    merged_dir = merge_adapter(base_model=tiny_model, adapter_path=tiny_adapter, output_dir=tmp_path / "merged")
    inputs = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        expected = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), tiny_adapter)(inputs).logits
        merged = AutoModelForCausalLM.from_pretrained(merged_dir)(inputs).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_model)(inputs).logits
    assert torch.allclose(merged, expected, atol=1e-4) and not torch.allclose(merged, base, atol=1e-3)


# --- pairs longer than max_length ---------------------------------------------------------------------------------

# Two of the eight pairs have a chosen response far longer than 128 tokens.
LONG = [
    PreferenceExample(e.pair_id, e.prompt, "You are wonderful, truly. " * 60 if e.pair_id in (1, 6) else e.chosen, e.rejected, e.margin)
    for e in EXAMPLES
]


def test_lengths_are_measured_as_trl_tokenizes_them(tiny_model):
    from trl import RewardConfig, RewardTrainer

    from training.trainers.lengths import length_report, load_tokenizer, measure

    tokenizer = load_tokenizer(tiny_model)
    lengths = measure(tokenizer, LONG)
    report = length_report(lengths[:6], lengths[6:], max_length=128, too_long="drop")
    assert (report.train.selected, report.train.fit, report.train.used, report.train.dropped) == (6, 5, 5, 1)
    assert (report.eval.selected, report.eval.fit, report.eval.used, report.eval.dropped) == (2, 1, 1, 1)
    assert report.longest == report.keep_all_max_length == max(length.longest for length in lengths) > 128
    assert not report.all_fit and report.p95 == report.longest
    truncate = length_report(lengths[:6], lengths[6:], max_length=128, too_long="truncate")
    assert (truncate.train.used, truncate.train.truncated, truncate.eval.used, truncate.eval.truncated) == (6, 1, 2, 1)
    # TRL's own RewardTrainer keeps exactly the pairs measured as fitting, with the same token counts.
    from datasets import Dataset

    from training.trainers.data import trl_rows

    trainer_dataset = RewardTrainer._prepare_dataset(
        None, Dataset.from_list(trl_rows(LONG)), tokenizer, RewardConfig(output_dir="unused", max_length=128, bf16=False, use_cpu=True), "train"
    )
    assert [len(ids) for ids in trainer_dataset["chosen_ids"]] == [length.chosen for length in lengths if length.fits(128)]


@pytest.mark.parametrize("kind", ["reward", "dpo"])
def test_too_long_pairs_are_dropped_or_truncated_as_set(tiny_model, tmp_path, kind):
    from training.trainers.run import train_adapter

    def run(too_long):
        recorder = Recorder()
        result = train_adapter(
            base_model=tiny_model, train=LONG[:6], eval=LONG[6:], output_dir=tmp_path / too_long, reporter=recorder,
            settings=training_settings(kind, {**SMALL, "too_long": too_long, "eval_steps": 100}),
        )
        assert recorder.examples == result.examples
        return result.examples

    assert run("drop") == {"train": 5, "eval": 1, "train_selected": 6, "eval_selected": 2, "truncated": 0, "dropped": 2}
    assert run("truncate") == {"train": 6, "eval": 2, "train_selected": 6, "eval_selected": 2, "truncated": 2, "dropped": 0}


def test_too_few_pairs_have_a_reason():
    from training.trainers.lengths import PairLength, length_report, too_few_reason

    fits, long = PairLength(10, 40, 50), PairLength(10, 400, 50)
    ok = length_report([fits] * 8, [fits] * 4, max_length=128, too_long="drop")
    assert too_few_reason(ok) is None
    assert too_few_reason(length_report([fits] * 8, [], max_length=128, too_long="drop")) is None  # no evaluation at all
    dropped = length_report([fits] * 3 + [long] * 50, [fits] * 4, max_length=128, too_long="drop")
    reason = too_few_reason(dropped)
    assert "Only 3 of 53 training pairs" in reason and "at least 8" in reason and "Set max length to 400" in reason
    assert too_few_reason(length_report([fits] * 3 + [long] * 50, [fits] * 4, max_length=128, too_long="truncate")) is None
    few_eval = too_few_reason(length_report([fits] * 8, [fits] * 2 + [long], max_length=128, too_long="drop"))
    assert "Only 2 of 3 held-out pairs" in few_eval and "at least 4" in few_eval
