"""Benchmark of rejection sampling: responses per second of a real Prefloop rejection-sampling job (generate N per
prompt, score every one with a reward model, select best-of-N and write the demonstrations) against a bare
generate-then-score script with transformers on the same prompts, N, seeds and max new tokens, on this machine.

What it runs, each measurement in its own fresh subprocess (so torch's threads and memory never carry over), from
the repository root, with a temporary PREFLOOP_DATA_DIR and SQLite database (``manage.py migrate`` first):

* job   - a Django process does what the gpu worker does, minus Celery: a project, the prompts imported with
          ``annotation.services.prompts_import``, the policy and the judge registered with
          ``generation.services.model_version_register``, ``training.rejection_sampling.rejection_sampling_create``
          (best-of-n, transformers backend; its Celery message goes to the temporary data directory's filesystem
          broker, where no worker listens), then ``rejection_sampling_execute(job_id)`` in the same process, as the
          worker's task does. Its rate is responses / (finished_at - started_at - load_seconds) of the job row: the
          generation, the scoring, every row written and the selection's transaction, model loading left out (the
          row records it apart). Thin bench-side timing wrappers around the backend's ``generate`` and the scorer's
          ``score`` (no application code changed) split that time: what is left is the job's own work (rows written,
          progress, the selection's transaction), reported as ``job_overhead_share`` of its working time, a figure
          that, unlike the ratio, does not move with the machine's load.
* bare  - transformers used directly: the policy in float32, one left-padded batched ``generate`` per batch of the
          transformers backend's own size (16 sequences: 16 // N prompts x N samples), sampling seeded per batch as
          the backend seeds it, so both sides generate the same tokens; then the judge (the base as a one-label
          sequence classifier, float32, plus the LoRA adapter and score head, through PEFT) scores the decoded
          responses in batches of 16 (the job's batch), right-padded after the chat template, as TRL's reward
          trainer tokenizes; then best-of-N. Its rate is responses / (generate time + score time), model loading
          left out.

The policy is the default model (var/models/smollm2-135m-instruct, var/bench/models or var/test/models when built
there, else built into var/bench/models, about 40 s), or --model. The judge is --judge-adapter (a reward adapter
trained here, e.g. a reward run's output folder) or, by default, the default model's weights with a freshly
initialized SEQ_CLS head and LoRA (tests/tiny_models.build_reward_adapter, seeded; built once into var/bench/models):
an untrained reward model, whose scores mean nothing but cost exactly what a trained one's do. The benchmark prints a
NOTE when it uses one. Both sides must produce the same responses and scores: the benchmark compares them and
prints how many differ (``same_responses`` in the RESULT line).

Job and bare runs alternate (job first on odd repetitions, bare first on even ones); the rates are medians over
--repeats, and the ratio is the median of each repetition's job rate over its bare rate (runs back to back). This
is a shared virtual machine whose speed drifts (2-4x from one minute to the next while other processes run): a
pure-Python calibration is printed before and after the whole run and inside every subprocess just before it
measures, and each run's CPU use by other processes (``other_cores``); compare runs only with similar figures.

    .venv/bin/python bench/rejection_sampling.py            # 8 prompts x N = 4 x 32 new tokens, 2 repetitions
    .venv/bin/python bench/rejection_sampling.py --prompts 16 --n 4 --max-new-tokens 64 --repeats 3

``--keep`` keeps the temporary directory (database, subprocess logs, results). The last line printed is
``RESULT key=value ...``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import MODEL_NAME, MODEL_PLACES, BenchError, children_cpu_seconds, cpu_calibration, default_model_folder, machine_busy_seconds
from common import run_subprocess as run_logged

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
# bench/training.py and bench/generation.py would shadow the apps: the repository root goes first on sys.path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
sys.path.insert(0, str(REPO))

PYTHON = sys.executable
FRESH_JUDGE = REPO / "var" / "bench" / "models" / f"{MODEL_NAME}-fresh-reward-head"
TOP_P = 0.95
RUN_TIMEOUT = 1800

QUESTIONS = (
    "Explain photosynthesis to a ten-year-old.", "Give three practical tips for better sleep.",
    "What are the pros and cons of remote work?", "Write a short poem about the sea.",
    "Summarize the history of the printing press in one paragraph.", "How do vaccines work?",
    "Write a friendly email inviting a colleague to a talk on compost.", "What is compound interest?",
    "Why is the sky blue?", "Describe a healthy breakfast.", "How do I start learning to play chess?",
    "What causes earthquakes?", "Give me a recipe idea with lentils.", "What is machine learning, briefly?",
    "How can I save money on groceries?", "Why do cats purr?",
)


def make_prompts(count: int) -> list[list[dict[str, str]]]:
    prompts = []
    for number in range(count):
        text = QUESTIONS[number % len(QUESTIONS)]
        if number >= len(QUESTIONS):
            text += f" (variant {number // len(QUESTIONS)})"
        prompts.append([{"role": "user", "content": text}])
    return prompts


# --- subprocess workers (run as: this script --worker job|bare|judge --spec spec.json --out out.json) ----------------


def worker_judge(spec: dict) -> dict:
    """Build the untrained reward adapter (the default model's weights, a fresh SEQ_CLS head and LoRA)."""
    from tests.tiny_models import build_reward_adapter

    target = Path(spec["target"])
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    build_reward_adapter(spec["model"], partial, rank=16)
    partial.rename(target)
    return {"adapter": str(target)}


def worker_job(spec: dict) -> dict:
    """A real job in a Django process: project, prompts, versions, rejection_sampling_create, rejection_sampling_execute."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from annotation import services as annotation_services
    from annotation.importing import ImportedRow
    from annotation.models import Demonstration
    from generation.services import model_version_register
    from training import rejection_sampling
    from training.models import RejectionSamplingJob

    prompts = spec["prompts"]
    project = annotation_services.project_create(name=spec["slug"], slug=spec["slug"], responses_per_item=2)
    rows = [ImportedRow(line=number, messages=messages) for number, messages in enumerate(prompts, start=1)]
    report = annotation_services.prompts_import(project=project, rows=rows, source="bench/rejection_sampling.py")
    if report.prompts_created != len(prompts):
        raise BenchError(f"imported {report.prompts_created} prompts, expected {len(prompts)}")
    policy = model_version_register(name=f"{spec['slug']}-policy", base_model=spec["model"], notes="bench/rejection_sampling.py")
    judge = model_version_register(
        name=f"{spec['slug']}-judge", base_model=spec["model"], adapter_path=spec["judge"], kind="reward", notes="bench/rejection_sampling.py"
    )
    job = rejection_sampling.rejection_sampling_create(
        project=project, policy=policy, judge=judge, n=spec["n"], selection="best-of-n",
        sampling={"temperature": spec["temperature"], "top_p": TOP_P, "max_new_tokens": spec["max_new_tokens"], "seed": spec["seed"]},
        backend="transformers",
    )
    timings = instrument()
    calibration = cpu_calibration()
    started = time.perf_counter()
    job = rejection_sampling.rejection_sampling_execute(job.pk)
    wall = time.perf_counter() - started
    if job.status != RejectionSamplingJob.Status.SUCCEEDED:
        raise BenchError(f"job {job.pk} ended {job.status}: {job.error}")
    samples = list(job.samples.order_by("prompt_id", "sample").values_list("text", "score", "num_tokens"))
    return {
        "calibration_ms": calibration,
        "responses": len(samples),
        "row_elapsed_s": (job.finished_at - job.started_at).total_seconds(),
        "load_s": job.load_seconds,
        "run_wall_s": wall,
        "texts": [text for text, _, _ in samples],
        "scores": [score for _, score, _ in samples],
        "tokens": sum(tokens for _, _, tokens in samples),
        "selected": job.selected_count,
        "demonstrations": Demonstration.objects.filter(rejection_sample__job=job).count(),
        "mean_selected": job.results["selected"]["mean"],
        **timings,
    }


def instrument() -> dict:
    """Bench-side timing wrappers (no application code changed): the time spent inside the backend's generate
    iterator and inside the scorer's score iterator; the job's own work is the rest of its working time."""
    from training import generate_and_score

    timings = {"generate_s": 0.0, "score_s": 0.0}
    real_open_backend, real_open_scorer = generate_and_score.open_backend, generate_and_score.open_scorer

    def timed(iterator, key):
        while True:
            started = time.perf_counter()
            try:
                item = next(iterator)
            except StopIteration:
                timings[key] += time.perf_counter() - started
                return
            timings[key] += time.perf_counter() - started
            yield item

    class TimedBackend:
        def __init__(self, backend):
            self.backend, self.name, self.device = backend, backend.name, backend.device

        def generate(self, *args, **kwargs):
            return timed(self.backend.generate(*args, **kwargs), "generate_s")

        def close(self):
            self.backend.close()

    class TimedScorer:
        def __init__(self, scorer):
            self.scorer, self.device = scorer, scorer.device

        def score(self, *args, **kwargs):
            return timed(self.scorer.score(*args, **kwargs), "score_s")

    generate_and_score.open_backend = lambda *args, **kwargs: TimedBackend(real_open_backend(*args, **kwargs))
    generate_and_score.open_scorer = lambda *args, **kwargs: TimedScorer(real_open_scorer(*args, **kwargs))
    return timings


def worker_bare(spec: dict) -> dict:
    started = time.perf_counter()
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    imports = time.perf_counter() - started
    from generation.backends.transformers_backend import TransformersBackend

    batch_size = inspect.signature(TransformersBackend.__init__).parameters["batch_size"].default
    n, prompts = spec["n"], spec["prompts"]
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    tokenizer.padding_side = "left"
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    policy = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32).eval()
    generate_load = time.perf_counter() - started

    calibration = cpu_calibration()
    per_batch = max(1, batch_size // n)
    special = set(tokenizer.all_special_ids)
    texts: list[str] = []
    tokens = 0
    started = time.perf_counter()
    for start in range(0, len(prompts), per_batch):
        torch.manual_seed(spec["seed"] + start)  # as the backend seeds each batch
        batch = [
            tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            for messages in prompts[start : start + per_batch]
            for _ in range(n)
        ]
        inputs = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            output = policy.generate(
                **inputs, max_new_tokens=spec["max_new_tokens"], do_sample=True, temperature=spec["temperature"], top_p=TOP_P,
                top_k=None, pad_token_id=tokenizer.pad_token_id,
            )
        for row in output[:, inputs["input_ids"].shape[1] :]:
            generated = [int(t) for t in row if int(t) != tokenizer.pad_token_id]
            tokens += len([t for t in generated if t not in special])
            texts.append(tokenizer.decode(generated, skip_special_tokens=True).strip())
    generate = time.perf_counter() - started
    del policy

    started = time.perf_counter()
    judge_tokenizer = AutoTokenizer.from_pretrained(spec["judge"])
    judge_tokenizer.pad_token = judge_tokenizer.pad_token or judge_tokenizer.eos_token
    base = AutoModelForSequenceClassification.from_pretrained(spec["model"], num_labels=1, dtype=torch.float32)
    base.config.pad_token_id = judge_tokenizer.pad_token_id
    judge = PeftModel.from_pretrained(base, spec["judge"]).eval()
    score_load = time.perf_counter() - started

    conversations = [(prompts[index // n], text) for index, text in enumerate(texts)]  # the job's order: prompt, then sample
    scores: list[float] = []
    started = time.perf_counter()
    for start in range(0, len(conversations), 16):
        ids = [
            judge_tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": reply}], tokenize=True, return_dict=True)["input_ids"]
            for messages, reply in conversations[start : start + 16]
        ]
        width = max(len(row) for row in ids)
        pad = judge_tokenizer.pad_token_id
        input_ids = torch.tensor([row + [pad] * (width - len(row)) for row in ids])
        attention = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids])
        with torch.no_grad():
            scores += [float(value) for value in judge(input_ids=input_ids, attention_mask=attention).logits[:, 0]]
    best = [max(range(n), key=lambda sample: (scores[prompt * n + sample], -sample)) for prompt in range(len(prompts))]
    score = time.perf_counter() - started
    return {
        "calibration_ms": calibration, "responses": len(texts), "texts": texts, "scores": scores, "tokens": tokens,
        "selected": len(best), "import_s": imports, "load_s": generate_load + score_load, "generate_s": generate, "score_s": score,
        "torch_threads": torch.get_num_threads(),
    }


def worker_main(kind: str, spec_path: str, out_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    result = {"job": worker_job, "bare": worker_bare, "judge": worker_judge}[kind](spec)
    Path(out_path).write_text(json.dumps(result))
    return 0


# --- orchestration ---------------------------------------------------------------------------------------------------


def run_worker(name: str, kind: str, spec: dict, env: dict, workdir: Path) -> dict:
    spec_path, out_path = workdir / f"{name}.spec.json", workdir / f"{name}.result.json"
    spec_path.write_text(json.dumps(spec))
    argv = [PYTHON, str(Path(__file__).resolve()), "--worker", kind, "--spec", str(spec_path), "--out", str(out_path)]
    busy, ours = machine_busy_seconds(), children_cpu_seconds()
    process_wall = run_logged(name, argv, env, workdir / "logs", cwd=REPO, timeout=RUN_TIMEOUT)
    busy, ours = machine_busy_seconds() - busy, children_cpu_seconds() - ours
    result = json.loads(out_path.read_text())
    result["process_wall_s"] = process_wall
    result["other_cores"] = max(0.0, busy - ours) / process_wall
    return result


def model_folder(args: argparse.Namespace) -> Path:
    if args.model:
        return Path(args.model).resolve()
    return default_model_folder()


def judge_folder(args: argparse.Namespace, model: Path, env: dict, workdir: Path) -> Path:
    if args.judge_adapter:
        return Path(args.judge_adapter).resolve()
    target = FRESH_JUDGE if model in MODEL_PLACES else workdir / "fresh-reward-head"
    print(
        "NOTE: no trained reward model given (--judge-adapter): the judge is the default model's weights with a freshly "
        f"initialized sequence-classification head and LoRA (seeded), at {target}. Its scores mean nothing, but it costs "
        "what a trained reward model of this size costs.", flush=True,
    )
    if not (target / "adapter_model.safetensors").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        run_worker("judge", "judge", {"model": str(model), "target": str(target)}, env, workdir)
    return target


def job_rate(result: dict) -> float:
    return result["responses"] / (result["row_elapsed_s"] - result["load_s"])


def bare_rate(result: dict) -> float:
    return result["responses"] / (result["generate_s"] + result["score_s"])


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def benchmark(args: argparse.Namespace, workdir: Path) -> str:
    logs = workdir / "logs"
    logs.mkdir()
    env = {
        **os.environ,
        "PREFLOOP_DATA_DIR": str(workdir / "data"),
        "DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}",
        "CELERY_BROKER_URL": "filesystem://",  # the job's message stays in the temporary data dir; no worker reads it
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    calibration_before = cpu_calibration()
    print(f"CPU calibration before: {calibration_before:.1f} ms (pure Python, lower is faster); load average {os.getloadavg()[0]:.2f}", flush=True)
    print("Migrating the temporary database ...", flush=True)
    run_logged("migrate", [PYTHON, "manage.py", "migrate", "--noinput", "--no-color"], env, logs, cwd=REPO, timeout=RUN_TIMEOUT)
    model = model_folder(args)
    print(f"Policy: {model}", flush=True)
    judge = judge_folder(args, model, env, workdir)
    print(f"Judge: {model} + {judge}", flush=True)

    base_spec = {"prompts": make_prompts(args.prompts), "n": args.n, "max_new_tokens": args.max_new_tokens,
                 "temperature": args.temperature, "seed": args.seed, "model": str(model), "judge": str(judge)}
    results: dict[str, list[dict]] = {"job": [], "bare": []}
    for repeat in range(1, args.repeats + 1):
        for kind in ("job", "bare") if repeat % 2 else ("bare", "job"):
            name = f"{kind}-{repeat}"
            print(f"  {name:<8} ...", end=" ", flush=True)
            result = run_worker(name, kind, {**base_spec, "slug": f"bench-rs-{repeat}"}, env, workdir)
            results[kind].append(result)
            if kind == "job":
                print(f"{result['responses']} responses, {job_rate(result):.2f}/s (job row), load {result['load_s']:.1f} s, "
                      f"row {result['row_elapsed_s']:.1f} s; calibration {result['calibration_ms']:.1f} ms, "
                      f"other processes {result['other_cores']:.2f} cores", flush=True)
            else:
                print(f"{result['responses']} responses, {bare_rate(result):.2f}/s, load {result['load_s']:.1f} s, generate "
                      f"{result['generate_s']:.1f} s, score {result['score_s']:.1f} s; calibration {result['calibration_ms']:.1f} ms, "
                      f"other processes {result['other_cores']:.2f} cores", flush=True)
    calibration_after = cpu_calibration()
    return report(args, results, calibration_before, calibration_after)


def report(args: argparse.Namespace, results: dict, calibration_before: float, calibration_after: float) -> str:
    job_rates = [job_rate(r) for r in results["job"]]
    bare_rates = [bare_rate(r) for r in results["bare"]]
    job_rps, bare_rps = median(job_rates), median(bare_rates)
    # Each repetition's job and bare runs ran back to back: the ratio within a repetition is the least affected by the
    # machine's drift, and the reported ratio is their median.
    ratio = median([job / bare for job, bare in zip(job_rates, bare_rates, strict=True)])
    job, bare = results["job"][-1], results["bare"][-1]
    differing = sum(a != b for a, b in zip(job["texts"], bare["texts"], strict=True))
    score_gap = max(abs(a - b) for a, b in zip(job["scores"], bare["scores"], strict=True))
    print(
        f"\nSettings: {args.prompts} prompts x N = {args.n} x {args.max_new_tokens} new tokens, temperature {args.temperature}, "
        f"top_p {TOP_P}, seed {args.seed}, best-of-n; transformers on cpu, {os.cpu_count()} CPUs; {args.repeats} repetition(s), medians."
    )
    print(f"CPU calibration (pure Python, lower is faster): {calibration_before:.1f} ms before, {calibration_after:.1f} ms after.")
    print("job responses/s = responses / (finished_at - started_at - load_seconds) of the job row (generation, scoring, rows, selection);")
    print("bare responses/s = responses / (generate time + score time); model loading left out on both sides.")
    for number, (j, b) in enumerate(zip(results["job"], results["bare"], strict=True), start=1):
        print(f"  repetition {number}: job {job_rate(j):.3f}/s ({j['row_elapsed_s'] - j['load_s']:.1f} s working: {j['generate_s']:.1f} s generating + "
              f"{j['score_s']:.1f} s scoring + {j['row_elapsed_s'] - j['load_s'] - j['generate_s'] - j['score_s']:.1f} s the job's own; {j['load_s']:.1f} s loading), "
              f"bare {bare_rate(b):.3f}/s ({b['generate_s']:.1f} s generating + {b['score_s']:.1f} s scoring, {b['load_s']:.1f} s loading); "
              f"ratio {job_rate(j) / bare_rate(b):.3f}; tokens {j['tokens']} vs {b['tokens']}")
    print(
        f"Responses that differ between the job and the bare script: {differing} of {len(job['texts'])}; largest score "
        f"difference {score_gap:.2e}. Job: {job['selected']} selected, {job['demonstrations']} demonstrations, mean selected "
        f"score {job['mean_selected']:.3f}."
    )
    overhead = median([r["row_elapsed_s"] - r["load_s"] - r["generate_s"] - r["score_s"] for r in results["job"]])
    overhead_share = median([(r["row_elapsed_s"] - r["load_s"] - r["generate_s"] - r["score_s"]) / (r["row_elapsed_s"] - r["load_s"])
                             for r in results["job"]])
    other = median([r["other_cores"] for side in results.values() for r in side])
    verdict = "OK" if ratio >= 0.95 else "MISS"
    print(f"ratio {ratio:.3f} ({verdict}, target >= 0.95). The job's own work (rows, progress, selection, demonstrations) took "
          f"{overhead:.2f} s, {overhead_share:.2%} of its working time: the rest is the same library calls as the bare script's, "
          f"so a ratio away from 1 is the machine's drift between runs (other processes used a median {other:.2f} cores).\n")
    fields = {
        "ratio": f"{ratio:.3f}", "job_responses_per_s": f"{job_rps:.3f}", "bare_responses_per_s": f"{bare_rps:.3f}",
        "prompts": args.prompts, "n": args.n, "max_new_tokens": args.max_new_tokens, "repeats": args.repeats,
        "same_responses": "yes" if not differing else f"no({differing})",
        "job_overhead_share": f"{overhead_share:.4f}", "other_cores": f"{other:.2f}",
    }
    return "RESULT " + " ".join(f"{key}={value}" for key, value in fields.items())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=8, help="Prompts (default 8).")
    parser.add_argument("--n", type=int, default=4, help="Responses per prompt, 2 to 64 (default 4).")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="New tokens per response at most (default 32).")
    parser.add_argument("--temperature", type=float, default=0.8, help="Sampling temperature, above 0 (default 0.8).")
    parser.add_argument("--seed", type=int, default=0, help="Sampling seed (default 0).")
    parser.add_argument("--repeats", type=int, default=2, help="Job and bare runs each; medians are reported (default 2).")
    parser.add_argument("--model", help="Policy model folder (default: the default model, built once if need be).")
    parser.add_argument("--judge-adapter", help="A reward adapter folder (default: a fresh, untrained head on the default model).")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary directory (database, logs, results).")
    parser.add_argument("--worker", choices=["job", "bare", "judge"], help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return args
    if not 2 <= args.n <= 64:
        parser.error("--n must be 2 to 64")
    if args.prompts < 1 or args.max_new_tokens < 1 or args.repeats < 1 or args.temperature <= 0:
        parser.error("--prompts, --max-new-tokens and --repeats must be at least 1, --temperature above 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args.worker, args.spec, args.out)
    workdir = Path(tempfile.mkdtemp(prefix="bench_rejection_sampling_"))
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
    print(result)  # last, so the RESULT line ends the output
    return 0


if __name__ == "__main__":
    sys.exit(main())
