"""Does the RLHF loop improve the model on real data? One round of Prefloop's loop on Anthropic HH-RLHF pairs, measured
on prompts it never trained on.

What it measures, on held-out prompts (an 80/20 split of the prompts by content hash):

* rm_heldout_accuracy - how often the trained reward model scores the chosen reply above the rejected one (the run's
  final evaluation, "accuracy"), with its 95% Wilson interval over the pairs evaluated;
* dpo_heldout_accuracy - how often the DPO policy's implicit reward (beta * log pi/pi_ref) prefers the chosen reply
  ("rewards/accuracies"), with its Wilson interval;
* dpo_winrate_vs_base - the share of held-out prompts on which the reward model, as judge, scores the DPO policy's
  answer above the default model's (ties count half), with its 95% bootstrap interval over prompts.

Targets, on the full file (--full, meant for a GPU): reward-model held-out accuracy >= 0.60 with the interval's low
end above 0.5; DPO judge win rate over the default model above 0.5 with the interval's low end above 0.5. The default
size is a small round that finishes in under 15 minutes on a 2-core CPU; its intervals are wide.

How, all in this process with the real product code, against a temporary data directory and SQLite database
(PREFLOOP_DATA_DIR, DATABASE_URL; migrated first) that are deleted at the end:

1. The pairs come from ../shared/datasets/hh-rlhf-harmless-base-test.jsonl.gz. The importer's own reader of HH
   transcripts (annotation.importing.parse_row) turns each row into a prompt (the chat turns both transcripts share,
   ending with a user turn) and the two final assistant replies. A prompt is held out when
   annotation.pairs.held_out_by_hash puts its content hash in the first 20% (deterministic; every pair of a prompt
   goes the same way). Only pairs that fit --max-length tokens whole (measured with the model's chat template by
   training.trainers.lengths, as the trainers measure them) are kept, the first ones in file order.
2. A project is created (annotation.services.project_create) and the pairs are written to a JSONL file of
   {prompt, chosen, rejected, split} rows and imported as `manage.py import_prompts` does
   (annotation.imports.import_job_for_file + import_run): held-out prompts are marked split "heldout", so the
   training runs evaluate on exactly those.
3. A reward model and a DPO policy are trained from the default model (SmolLM2-135M-Instruct, QLoRA 4-bit) with
   training.services.training_run_create + training_run_execute, as the GPU worker does.
4. An evaluation (training.evaluation.evaluation_create + evaluation_execute) has the DPO policy and the default model
   answer the first --winrate-prompts held-out prompts (temperature 0.7, top_p 0.95, 64 new tokens, seed 0, one
   sample, transformers backend) and the reward model judge them.

Settings: 1 epoch, batch 4, LoRA r=16 on the attention projections, 4-bit NF4, learning rates 1e-4 (reward) and 5e-5
(DPO): the product's defaults, so this is the round a user gets; bf16 where the CPU has AVX512-BF16/AMX. Each run
evaluates once, at its end, instead of the default five times: on a CPU one evaluation of the held-out pairs costs
about a third of the training (DPO: 116 s for 80 pairs against 383 s for 128). Only pairs that fit max_length whole
are used, so no reply is cut before the reward model sees where the two differ.

The default size (128 train / 80 held-out pairs, 32 win-rate prompts, max_length 256) took 13 min on a 2-core AMD EPYC
with AVX512-BF16 while other tests ran beside it (DPO training is about 60% of it). At that size both models stay near
chance: 32 steps at the product's learning rates barely move the policy (most of its answers equal the default model's
under the same seed: ties), and the intervals are about +-0.11. ``--learning-rate 5e-4`` moves it, not for the better.

    .venv/bin/python bench/loop_quality.py                                                      # about 13 min on CPU
    .venv/bin/python bench/loop_quality.py --pairs 32 --heldout-pairs 16 --winrate-prompts 8    # a quick look
    .venv/bin/python bench/loop_quality.py --full                                               # the targets (GPU)

Flags: --pairs N (training pairs), --heldout-pairs N (held-out pairs both runs evaluate on), --winrate-prompts N
(held-out prompts of the win rate), --full (every pair of the file that fits max_length, every held-out prompt),
--max-length (tokens; default 256, with --full 1024, which all pairs but one fit), --epochs, --learning-rate (both
runs), --model (a model folder instead of the built default), --keep (keep the temporary directory). The last line
printed is ``RESULT key=value ...``; train_pairs and heldout_pairs are the pairs the reward run's trainer used
(run.train_pairs_used / run.eval_pairs_used), dpo_train_pairs and dpo_heldout_pairs the DPO run's.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import BenchError, cpu_calibration

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
# bench/training.py would shadow the `training` app: the repository root goes first on sys.path instead of bench/.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
sys.path.insert(0, str(REPO))

HH_DATA = REPO.parent / "shared" / "datasets" / "hh-rlhf-harmless-base-test.jsonl.gz"
MODEL_NAME = "smollm2-135m-instruct"  # generation.services.DEFAULT_MODEL_NAME
REPO_MODEL = REPO / "var" / "models" / MODEL_NAME
CACHE_MODEL = REPO / "var" / "bench" / "models" / MODEL_NAME  # shared with bench/training.py
HELDOUT_FRACTION = 0.2
SAMPLING = {"temperature": 0.7, "top_p": 0.95, "max_new_tokens": 64, "seed": 0}
MAX_EVAL_STEPS = 1_000_000  # training.trainers.settings.MAX_EVAL_STEPS: a run then evaluates once, at its end
STARTED = time.perf_counter()


def progress(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:6.0f} s] {message}", flush=True)


def cpu_description() -> str:
    """The processor and the flags that decide bf16 speed (NOTES.md: AVX512-BF16/AMX run bf16 natively)."""
    text = Path("/proc/cpuinfo").read_text()
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "unknown")
    flags = set(text.split())
    present = [flag for flag in ("avx512f", "avx512_bf16", "amx_bf16") if flag in flags]
    return f"{name}, {os.cpu_count()} CPUs, {'+'.join(present) or 'avx2-only'}"


# --- data -------------------------------------------------------------------------------------------------------------


def hh_pairs(path: Path) -> list:
    """Every row of the file as the importer reads it (annotation.importing.ImportedRow: messages, chosen, rejected)."""
    from annotation.importing import parse_row

    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return [parse_row(number, json.loads(line)) for number, line in enumerate(lines, start=1)]


def with_splits(rows: list) -> list:
    """Each row marked train or heldout by its prompt's content hash, as the product splits prompts by hash."""
    from annotation.importing import content_hash
    from annotation.pairs import held_out_by_hash

    return [
        dataclasses.replace(row, split="heldout" if held_out_by_hash(content_hash(row.messages), HELDOUT_FRACTION) else "train")
        for row in rows
    ]


def fitting(rows: list, model: Path, max_length: int) -> list:
    """The rows whose prompt + longer reply fits max_length tokens whole, tokenized as the trainers do."""
    from training.trainers.data import PreferenceExample
    from training.trainers.lengths import load_tokenizer, measure

    examples = [PreferenceExample(pair_id=n, prompt=r.messages, chosen=r.chosen, rejected=r.rejected) for n, r in enumerate(rows)]
    lengths = measure(load_tokenizer(str(model)), examples)
    return [row for row, length in zip(rows, lengths, strict=True) if length.fits(max_length)]


def selected(rows: list, train: int | None, heldout: int | None) -> list:
    """The first ``train`` training rows and ``heldout`` held-out rows in file order (None: all), in file order."""
    counts, limits, chosen = {"train": 0, "heldout": 0}, {"train": train, "heldout": heldout}, []
    for row in rows:
        limit = limits[row.split]
        if limit is None or counts[row.split] < limit:
            counts[row.split] += 1
            chosen.append(row)
    return chosen


def write_jsonl(rows: list, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as out:
        for row in rows:
            record = {"prompt": row.messages, "chosen": row.chosen, "rejected": row.rejected, "split": row.split}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")


# --- the loop, through the product's services -------------------------------------------------------------------------


def django_setup(workdir: Path, model: Path) -> None:
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "PREFLOOP_DATA_DIR": str(workdir / "data"),
        "DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}",
        "CELERY_BROKER_URL": "filesystem://",  # job messages stay in the temporary data dir; no worker reads them
        "PREFLOOP_DEFAULT_MODEL": str(model),
    })
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", interactive=False, verbosity=0)


def import_pairs(path: Path):
    """A project holding the pairs of ``path``, imported as `manage.py import_prompts` imports a file."""
    from annotation import imports
    from annotation.services import project_create

    project = project_create(name="Loop quality", slug="loop-quality", responses_per_item=2)
    job = imports.import_run(imports.import_job_for_file(project=project, path=path, source=HH_DATA.name).pk)
    if job.status != job.Status.SUCCEEDED:
        raise BenchError(f"the import failed: {job.problem or job.error}")
    progress(f"imported: {imports.import_report(job).summary()}")
    return project


def train(kind: str, base, project, settings: dict):
    """A training run created and executed as the GPU worker executes it; the finished run."""
    from training.services import training_run_create, training_run_execute

    started = time.perf_counter()
    run = training_run_create(kind=kind, base_version=base, projects=[project], settings=settings)
    run = training_run_execute(run.pk)
    if run.status != run.Status.SUCCEEDED:
        raise BenchError(f"the {kind} run {run.pk} ended {run.status}:\n{run.error}")
    summary = run.summary
    progress(f"{kind} run {run.pk}: {run.train_pairs_used} train / {run.eval_pairs_used} eval pairs, {summary['steps']} steps, "
             f"train() {summary.get('train_runtime', 0):.0f} s ({summary.get('train_samples_per_second', 0):.2f} samples/s), "
             f"whole run {time.perf_counter() - started:.0f} s; final eval {json.dumps(run.model_version.metrics['eval'])}")
    return run


def evaluate(project, policy, base, judge, prompt_ids: list[int]) -> dict:
    """The judge's win rate of ``policy`` over ``base`` on these prompts (training.evaluation)."""
    from training.evaluation import evaluation_create, evaluation_execute

    started = time.perf_counter()
    evaluation = evaluation_create(
        project=project, versions=[policy, base], judge=judge, prompt_selection={"mode": "ids", "ids": prompt_ids},
        sampling=SAMPLING, samples=1, backend="transformers",
    )
    evaluation = evaluation_execute(evaluation.pk)
    if evaluation.status != evaluation.Status.SUCCEEDED:
        raise BenchError(f"the evaluation {evaluation.pk} ended {evaluation.status}:\n{evaluation.error}")
    results = evaluation.results
    pair = results["pairs"][0]
    progress(f"evaluation {evaluation.pk}: {len(prompt_ids)} prompts in {time.perf_counter() - started:.0f} s "
             f"(loading {evaluation.load_seconds:.0f} s); {pair['a']} vs {pair['b']}: {pair['wins']} wins, {pair['ties']} ties, "
             f"{pair['losses']} losses; length-matched win rate {fmt(pair['win_rate_length_matched']['value'])} over "
             f"{pair['win_rate_length_matched']['count']} prompts")
    for version in results["versions"]:
        progress(f"  {version['name']}: mean reward {fmt(version['mean_reward']['value'])}, "
                 f"mean length {fmt(version['mean_length']['value'], 1)} tokens")
    return results


def fmt(value, digits: int = 3) -> str:
    return "nan" if value is None else f"{value:.{digits}f}"


def measure(args: argparse.Namespace, workdir: Path) -> str:
    """The whole round; returns the RESULT line."""
    model = model_folder(args)
    progress(f"CPU: {cpu_description()}; calibration {cpu_calibration():.1f} ms (pure Python, lower is faster); model {model}")
    django_setup(workdir, model)
    rows = with_splits(hh_pairs(HH_DATA))
    fit = fitting(rows, model, args.max_length)
    chosen = selected(fit, None if args.full else args.pairs, None if args.full else args.heldout_pairs)
    counts = {split: sum(row.split == split for row in chosen) for split in ("train", "heldout")}
    progress(f"{len(rows)} pairs in {HH_DATA.name}, {len(fit)} fit {args.max_length} tokens; selected {counts['train']} "
             f"train and {counts['heldout']} held-out pairs")
    pairs_file = workdir / "pairs.jsonl"
    write_jsonl(chosen, pairs_file)

    from annotation.models import Prompt
    from generation.services import default_model_prepare

    base = default_model_prepare()
    project = import_pairs(pairs_file)
    settings = {"epochs": args.epochs, "max_length": args.max_length, "eval_steps": MAX_EVAL_STEPS}
    if args.learning_rate:
        settings["learning_rate"] = args.learning_rate
    reward = train("reward", base, project, settings)
    dpo = train("dpo", base, project, settings)

    heldout = list(project.prompts.filter(split=Prompt.Split.HELDOUT).order_by("id").values_list("pk", flat=True))
    prompt_ids = heldout if args.full else heldout[: args.winrate_prompts]
    results = evaluate(project, dpo.model_version, base, reward.model_version, prompt_ids)
    # Read now: the database goes with the temporary directory.
    return result_line(reward, dpo, results, (time.perf_counter() - STARTED) / 60)


def model_folder(args: argparse.Namespace) -> Path:
    """--model, or the repository's var/models build, or the bench cache (built there once and kept)."""
    from generation.backends.default_model import build, is_built

    if args.model:
        return Path(args.model).resolve()
    if is_built(REPO_MODEL):
        return REPO_MODEL
    if not is_built(CACHE_MODEL):
        progress(f"building the default model into {CACHE_MODEL} (once; about 40 s)")
        CACHE_MODEL.parent.mkdir(parents=True, exist_ok=True)
        build(CACHE_MODEL)
    return CACHE_MODEL


def result_line(reward, dpo, results: dict, minutes: float) -> str:
    from training.stats import proportion

    settings = reward.summary["settings"]
    rm = proportion(reward.model_version.metrics["eval"]["accuracy"], reward.eval_pairs_used)
    dpo_accuracy = proportion(dpo.model_version.metrics["eval"]["rewards/accuracies"], dpo.eval_pairs_used)
    win = results["pairs"][0]["win_rate"]
    fields = {
        "rm_heldout_accuracy": fmt(rm.value), "rm_accuracy_ci_low": fmt(rm.low), "rm_accuracy_ci_high": fmt(rm.high),
        "dpo_heldout_accuracy": fmt(dpo_accuracy.value), "dpo_accuracy_ci_low": fmt(dpo_accuracy.low),
        "dpo_accuracy_ci_high": fmt(dpo_accuracy.high),
        "dpo_winrate_vs_base": fmt(win["value"]), "dpo_winrate_ci_low": fmt(win["low"]), "dpo_winrate_ci_high": fmt(win["high"]),
        "winrate_prompts": win["count"],
        "train_pairs": reward.train_pairs_used, "heldout_pairs": reward.eval_pairs_used,
        "dpo_train_pairs": dpo.train_pairs_used, "dpo_heldout_pairs": dpo.eval_pairs_used,
        "max_length": settings["max_length"], "epochs": f"{settings['epochs']:g}",
        "rm_learning_rate": f"{settings['learning_rate']:g}", "dpo_learning_rate": f"{dpo.summary['settings']['learning_rate']:g}",
        "bf16": settings["bf16"],
        "minutes": f"{minutes:.1f}", "cpu": cpu_description().rsplit(", ", 1)[-1],
    }
    return "RESULT " + " ".join(f"{key}={value}" for key, value in fields.items())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=128, help="Training pairs (default 128).")
    parser.add_argument("--heldout-pairs", type=int, default=80, help="Held-out pairs both runs evaluate on (default 80).")
    parser.add_argument("--winrate-prompts", type=int, default=32, help="Held-out prompts of the judge win rate (default 32).")
    parser.add_argument("--full", action="store_true", help="Every pair of the file that fits --max-length, every held-out prompt.")
    parser.add_argument("--max-length", type=int, help="Tokens of prompt + reply; pairs longer are left out (default 256; "
                        "with --full 1024, which all but one pair of the file fit).")
    parser.add_argument("--epochs", type=float, default=1.0, help="Epochs of both runs (default 1).")
    parser.add_argument("--learning-rate", type=float, default=0.0, help="Both runs' learning rate (default: the product's per kind).")
    parser.add_argument("--model", help="Model folder (default: var/models/smollm2-135m-instruct if built, else the bench cache).")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary directory (database, runs' folders).")
    args = parser.parse_args(argv)
    args.max_length = args.max_length or (1024 if args.full else 256)
    # The product refuses runs below 8 training / 4 held-out pairs (training.trainers.lengths).
    if args.pairs < 8 or args.heldout_pairs < 4 or args.winrate_prompts < 1:
        parser.error("--pairs must be at least 8, --heldout-pairs at least 4, --winrate-prompts at least 1")
    if not 16 <= args.max_length <= 131072 or not 0 < args.epochs <= 100 or args.learning_rate < 0:
        parser.error("--max-length must be 16 to 131072, --epochs above 0 and at most 100, --learning-rate positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench_loop_quality_"))
    try:
        result = measure(args, workdir)
    except BenchError as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"Kept {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"Total wall time {(time.perf_counter() - STARTED) / 60:.1f} min.")
    print(result)  # last, so the RESULT line ends the output
    return 0


if __name__ == "__main__":
    sys.exit(main())
