"""Benchmark of generation jobs: tokens per second of a real Prefloop generation job against a bare batched
``generate`` script on the same prompts and settings, for each backend (transformers, vLLM), on this machine.

What it runs, each measurement in its own fresh subprocess (so vLLM's memory and torch's threads never carry over),
from the repository root, with a temporary PREFLOOP_DATA_DIR and SQLite database (``manage.py migrate`` first):

* job   - a Django process does what the product does for a job, minus Celery: a project with K = --samples, the
          prompts imported with ``annotation.services.prompts_import``, the default model folder registered with
          ``generation.services.model_version_register``, ``generation.jobs.generation_job_create`` (its Celery
          message goes to the filesystem broker of the temporary data directory, where no worker listens), then
          ``generation.jobs.generation_job_run(job_id)`` in the same process, as the gpu worker would. Reported:
          the rate the product shows, ``tokens_generated / (finished_at - started_at - load_seconds)`` (model
          loading is recorded apart: a fresh worker process per job imports and loads first), the wall time of
          ``generation_job_run``, and a breakdown from a thin timing wrapper around ``open_backend`` (bench-side
          instrumentation, no application code changed): backend load, time inside the backend's ``generate``
          iterator, time the job spends on each yielded batch (dedup, saves, ranking items, progress) and the rest.
* bare  - the same library used directly on the same prompts (chat template applied) with the same settings:
          transformers: the model in float32, one left-padded batched ``generate`` per batch of the backend's own
          batch size (read from ``TransformersBackend``), every prompt repeated --samples times, sampling seeded
          per batch exactly as the backend seeds it, so both sides generate the same tokens; vLLM: ``vllm.LLM``
          with the backend's engine options (float32, eager, explicit CPU KV cache, max_model_len, seed 0,
          in-process engine) and one ``generate`` call with ``SamplingParams(n=--samples, ..., seed=...)``.
          Load (engine start) is timed apart from generation. Tokens are counted as the backend counts them
          (transformers: new tokens without padding and special tokens; vLLM: ``len(completion.token_ids)``).

The model is var/models/smollm2-135m-instruct when it is built (else ``manage.py prepare_default_model`` builds it
in the temporary data directory, about 30 s), or --model. When its config.json carries the GGUF
``quantization_config`` that the default model's build leaves there, vLLM refuses the folder ("Unknown quantization
method: gguf"), so both vLLM runs use a copy of the folder (symlinked weights) whose config.json lacks that key;
the benchmark prints a NOTE when it does so.

Job and bare runs alternate (job first on odd repetitions, bare first on even ones) and the medians over
--repeats are reported. This is a shared virtual machine whose speed drifts (up to 2x from one minute to the next):
a pure-Python calibration is printed before and after the whole run and inside every subprocess just before it
measures; compare runs only with similar calibration times. ``--profile`` adds a cProfile of ``generation_job_run``
to the job runs (slower: profiling overhead) and prints its top functions.

    .venv/bin/python bench/generation.py                  # 24 prompts x 4 samples x 64 new tokens, both backends
    .venv/bin/python bench/generation.py --backends transformers --repeats 3 --max-new-tokens 128

``--keep`` keeps the temporary directory (database, subprocess logs, results). The last line printed is
``RESULT key=value ...``; the job rate there is the job row's rate (model load included).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import random
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
# This file is named like the `generation` app: when run as a script its folder comes first on sys.path and would
# shadow the app. The repository root goes first instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
sys.path.insert(0, str(REPO))

PYTHON = sys.executable  # run this script with the project's virtualenv: the subprocesses use the same interpreter
MODEL_NAME = "smollm2-135m-instruct"  # generation.services.DEFAULT_MODEL_NAME
REPO_MODEL = REPO / "var" / "models" / MODEL_NAME
BACKENDS = ("transformers", "vllm")
TOP_P = 0.95  # the product's default (generation.jobs.sampling_from)
RUN_TIMEOUT = 1800

TEMPLATES = (
    "Explain {} to a ten-year-old.",
    "Write a short poem about {}.",
    "Give three practical tips about {}.",
    "What are the pros and cons of {}?",
    "Summarize the history of {} in one paragraph.",
    "Write a friendly email inviting a colleague to a talk on {}.",
)
TOPICS = (
    "photosynthesis", "compound interest", "the water cycle", "black holes", "sourdough bread", "remote work",
    "electric cars", "sleep hygiene", "the Roman Empire", "machine learning", "composting", "public transport",
    "jazz music", "volcanoes", "learning a second language", "budget travel", "the printing press", "honeybees",
    "solar panels", "chess openings",
)


# --- shared helpers ------------------------------------------------------------------------------------------------


def make_prompts(count: int) -> list[list[dict[str, str]]]:
    """``count`` distinct single-turn conversations, the same for a given count."""
    texts = [template.format(topic) for topic in TOPICS for template in TEMPLATES]
    random.Random(0).shuffle(texts)
    prompts = []
    for number in range(count):
        text = texts[number % len(texts)]
        if number >= len(texts):
            text += f" (variant {number // len(texts)})"
        prompts.append([{"role": "user", "content": text}])
    return prompts


# --- subprocess workers (run as: this script --worker job|bare --spec spec.json --out out.json) -------------------


def worker_job(spec: dict) -> dict:
    """A real job in a Django process: project, prompts, model version, generation_job_create, generation_job_run."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from annotation import services as annotation_services
    from annotation.importing import ImportedRow
    from annotation.models import RankingItem
    from generation import jobs
    from generation.models import Candidate, GenerationJob, ModelVersion
    from generation.services import model_version_register

    samples, prompts = spec["samples"], spec["prompts"]
    project = annotation_services.project_create(name=spec["slug"], slug=spec["slug"], responses_per_item=samples)
    rows = [ImportedRow(line=number, messages=messages) for number, messages in enumerate(prompts, start=1)]
    report = annotation_services.prompts_import(project=project, rows=rows, source="bench/generation.py")
    if report.prompts_created != len(prompts):
        raise BenchError(f"imported {report.prompts_created} prompts, expected {len(prompts)}")
    name = MODEL_NAME if Path(spec["model"]).name == MODEL_NAME else f"{MODEL_NAME}-{Path(spec['model']).name}"
    version = ModelVersion.objects.filter(name=name).first() or model_version_register(
        name=name, base_model=spec["model"], notes="bench/generation.py"
    )
    job = jobs.generation_job_create(
        project=project,
        plan=[jobs.PlanEntry(version, samples)],
        prompt_selection={"mode": "missing"},
        sampling={"temperature": spec["temperature"], "top_p": TOP_P, "max_new_tokens": spec["max_new_tokens"],
                  "seed": spec["seed"], "stop": []},
        backend=spec["backend"],
    )

    timings = {"open_backend_s": 0.0, "backend_generate_s": 0.0, "job_batch_work_s": 0.0, "close_s": 0.0,
               "batches": 0, "batch_tokens": 0, "batch_sizes": []}
    real_open_backend = jobs.open_backend

    class TimedBackend:
        """Passes everything through; adds up where the time goes."""

        def __init__(self, backend):
            self.backend = backend
            self.name = backend.name
            self.device = backend.device

        def generate(self, requests, sampling, **options):  # options: on_progress, where the job passes it
            iterator = self.backend.generate(requests, sampling, **options)
            while True:
                started = time.perf_counter()
                try:
                    batch = next(iterator)
                except StopIteration:
                    timings["backend_generate_s"] += time.perf_counter() - started
                    return
                timings["backend_generate_s"] += time.perf_counter() - started
                timings["batches"] += 1
                timings["batch_sizes"].append(len(batch))
                timings["batch_tokens"] += sum(g.num_tokens for g in batch)
                handed = time.perf_counter()
                yield batch  # the job saves the batch, creates items and reports progress before asking for more
                timings["job_batch_work_s"] += time.perf_counter() - handed

        def close(self):
            started = time.perf_counter()
            self.backend.close()
            timings["close_s"] += time.perf_counter() - started

    def timed_open_backend(*args, **kwargs):
        started = time.perf_counter()
        backend = real_open_backend(*args, **kwargs)
        timings["open_backend_s"] += time.perf_counter() - started
        return TimedBackend(backend)

    jobs.open_backend = timed_open_backend
    calibration = cpu_calibration()
    profiler = None
    if spec.get("profile"):
        import cProfile

        profiler = cProfile.Profile()
    started = time.perf_counter()
    if profiler:
        job = profiler.runcall(jobs.generation_job_run, job.pk)
    else:
        job = jobs.generation_job_run(job.pk)
    wall = time.perf_counter() - started
    if profiler:
        profiler.dump_stats(spec["profile"])
    if job.status != GenerationJob.Status.SUCCEEDED:
        raise BenchError(f"job {job.pk} ended {job.status}: {job.error}")
    candidates = Candidate.objects.filter(generation_job=job).count()
    items = RankingItem.objects.filter(prompt__project=project).count()
    elapsed = (job.finished_at - job.started_at).total_seconds()
    from generation.selectors import job_progress

    return {
        "shown_tps": job_progress(job)["tokens_per_second"],
        "calibration_ms": calibration,
        "tokens": job.tokens_generated,
        "row_elapsed_s": elapsed,
        "run_wall_s": wall,
        "load_s": timings["open_backend_s"],
        "generate_s": timings["backend_generate_s"],
        "batch_work_s": timings["job_batch_work_s"],
        "close_s": timings["close_s"],
        "batches": timings["batches"],
        "batch_sizes": timings["batch_sizes"],
        "batch_tokens": timings["batch_tokens"],
        "candidates": candidates,
        "items": items,
        "duplicates_dropped": job.duplicates_dropped,
        "prompts_done": job.prompts_done,
    }


def worker_bare_transformers(spec: dict) -> dict:
    started = time.perf_counter()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    imports = time.perf_counter() - started
    from generation.backends.transformers_backend import TransformersBackend

    batch_size = inspect.signature(TransformersBackend.__init__).parameters["batch_size"].default
    samples, prompts = spec["samples"], spec["prompts"]
    sample = spec["temperature"] > 0
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    model.eval()
    load = time.perf_counter() - started

    excluded = torch.tensor(sorted({tokenizer.pad_token_id, *tokenizer.all_special_ids}))
    per_batch = max(1, batch_size // samples)
    calibration = cpu_calibration()
    tokens = batches = 0
    started = time.perf_counter()
    for start in range(0, len(prompts), per_batch):
        torch.manual_seed(spec["seed"] + start)  # as the backend seeds each batch
        texts = [
            tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            for messages in prompts[start : start + per_batch]
            for _ in range(samples)
        ]
        inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            output = model.generate(
                **inputs,
                max_new_tokens=spec["max_new_tokens"],
                do_sample=sample,
                temperature=spec["temperature"] if sample else None,
                top_p=TOP_P if sample else None,
                top_k=None,
                pad_token_id=tokenizer.pad_token_id,
            )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        tokens += int((~torch.isin(new_tokens, excluded)).sum())
        batches += 1
    generate = time.perf_counter() - started
    return {"calibration_ms": calibration, "tokens": tokens, "import_s": imports, "load_s": load, "generate_s": generate,
            "batches": batches, "batch_size": per_batch * samples, "torch_threads": torch.get_num_threads()}


def worker_bare_vllm(spec: dict) -> dict:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # as the backend: the engine in this process
    started = time.perf_counter()
    import torch  # noqa: F401 - imported by the backend too, timed with vllm
    from vllm import LLM, SamplingParams

    imports = time.perf_counter() - started

    from generation.backends import vllm_backend
    from generation.backends.base import ModelSpec

    defaults = inspect.signature(vllm_backend.VllmBackend.__init__).parameters
    samples, prompts = spec["samples"], spec["prompts"]
    started = time.perf_counter()
    max_model_len = vllm_backend._context_length(ModelSpec(spec["model"]), defaults["max_model_len"].default)
    llm = LLM(
        model=spec["model"], max_model_len=max_model_len, seed=0, dtype="float32", enforce_eager=True,
        kv_cache_memory_bytes=defaults["cpu_kv_cache_bytes"].default,
    )
    tokenizer = llm.get_tokenizer()
    engine_start = time.perf_counter() - started

    params = SamplingParams(
        n=samples,
        temperature=spec["temperature"] if spec["temperature"] > 0 or samples == 1 else 1e-3,
        top_p=TOP_P,
        max_tokens=spec["max_new_tokens"],
        seed=spec["seed"],
    )
    calibration = cpu_calibration()
    started = time.perf_counter()
    texts = [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in prompts]
    outputs = llm.generate(texts, params, use_tqdm=False)
    generate = time.perf_counter() - started
    tokens = sum(len(completion.token_ids) for output in outputs for completion in output.outputs)
    return {"calibration_ms": calibration, "tokens": tokens, "import_s": imports, "load_s": engine_start, "generate_s": generate,
            "batches": 1, "max_model_len": max_model_len}


def worker_main(kind: str, spec_path: str, out_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    if kind == "job":
        result = worker_job(spec)
    elif spec["backend"] == "transformers":
        result = worker_bare_transformers(spec)
    else:
        result = worker_bare_vllm(spec)
    Path(out_path).write_text(json.dumps(result))
    return 0


# --- orchestration ---------------------------------------------------------------------------------------------------


def run_subprocess(name: str, argv: list[str], env: dict, logs: Path) -> float:
    return run_logged(name, argv, env, logs, cwd=REPO, timeout=RUN_TIMEOUT)


def run_worker(name: str, kind: str, spec: dict, env: dict, workdir: Path) -> dict:
    spec_path, out_path = workdir / f"{name}.spec.json", workdir / f"{name}.result.json"
    spec_path.write_text(json.dumps(spec))
    argv = [PYTHON, str(Path(__file__).resolve()), "--worker", kind, "--spec", str(spec_path), "--out", str(out_path)]
    busy, ours = machine_busy_seconds(), children_cpu_seconds()
    process_wall = run_subprocess(name, argv, env, workdir / "logs")
    busy, ours = machine_busy_seconds() - busy, children_cpu_seconds() - ours
    result = json.loads(out_path.read_text())
    result["process_wall_s"] = process_wall
    result["cores_used"] = ours / process_wall
    # Other processes' CPU use during the run, in cores (2.0 = both cores of a 2-core machine): anything well above
    # 0 means something else competed with the measurement.
    result["other_cores"] = max(0.0, busy - ours) / process_wall
    return result


def model_folder(args: argparse.Namespace, env: dict, workdir: Path) -> Path:
    """The default model: --model, or the repository's var/models build, or built into the temporary data dir."""
    from generation.backends.default_model import is_built

    if args.model:
        return Path(args.model).resolve()
    if is_built(REPO_MODEL):
        return REPO_MODEL
    print("Building the default model into the temporary data directory (about 30 s) ...", flush=True)
    run_subprocess("prepare_default_model", [PYTHON, "manage.py", "prepare_default_model", "--no-color"], env, workdir / "logs")
    return Path(env["PREFLOOP_DATA_DIR"]) / "models" / MODEL_NAME


def vllm_loadable(model: Path, workdir: Path) -> Path:
    """The model folder, or when its config.json names a GGUF quantization (which the default model's build leaves
    there and vLLM refuses: "Unknown quantization method: gguf"), a copy of the folder without it: the other files
    are symlinks, config.json is rewritten without ``quantization_config``. The weights are plain safetensors."""
    config = json.loads((model / "config.json").read_text())
    if (config.get("quantization_config") or {}).get("quant_method") != "gguf":
        return model
    copy = workdir / "vllm-model"
    copy.mkdir()
    for path in model.iterdir():
        if path.name != "config.json":
            (copy / path.name).symlink_to(path)
    del config["quantization_config"]
    (copy / "config.json").write_text(json.dumps(config, indent=2))
    return copy


def job_rate(result: dict) -> float:
    """The rate the job's page and API show: tokens over the job's time less its model loading."""
    return result["shown_tps"]


def job_generation_rate(result: dict) -> float:
    """The job without its backend load and close: backend generate time plus the job's own per-batch work."""
    return result["tokens"] / (result["row_elapsed_s"] - result["load_s"] - result["close_s"])


def bare_rate(result: dict) -> float:
    return result["tokens"] / result["generate_s"]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def print_profile(path: Path, limit: int = 25) -> None:
    import pstats

    print(f"\ncProfile of generation_job_run ({path.name}), top {limit} by cumulative time:")
    stats = pstats.Stats(str(path))
    stats.sort_stats("cumulative").print_stats(limit)
    print(f"The same profile, the job's own functions, imports and model loading only ({path.name}):")
    stats.print_stats(r"generation/(jobs|backends)|\(_find_and_load\)|from_pretrained|entrypoints/llm\.py:\d+\(__init__\)", 30)


def benchmark(args: argparse.Namespace, workdir: Path) -> str:
    logs = workdir / "logs"
    logs.mkdir()
    env = {
        **os.environ,
        "PREFLOOP_DATA_DIR": str(workdir / "data"),
        "DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}",
        "CELERY_BROKER_URL": "filesystem://",  # the job's message stays in the temporary data dir; no worker reads it
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # what `manage.py serve` gives its workers
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    calibration_before = cpu_calibration()
    print(f"CPU calibration before: {calibration_before:.1f} ms (pure Python, lower is faster); "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    print("Migrating the temporary database ...", flush=True)
    run_subprocess("migrate", [PYTHON, "manage.py", "migrate", "--noinput", "--no-color"], env, logs)
    model = model_folder(args, env, workdir)
    print(f"Model: {model}", flush=True)

    models = {backend: model for backend in args.backends}
    if "vllm" in args.backends:
        models["vllm"] = vllm_loadable(model, workdir)
        if models["vllm"] != model:
            print(
                "NOTE: the model's config.json has quantization_config {quant_method: gguf} (left by the default model's "
                "build), which vLLM refuses (\"Unknown quantization method: gguf\"): a vLLM job on this folder fails. "
                f"vLLM runs (job and bare) use {models['vllm']}, the same weights without that key.",
                flush=True,
            )

    prompts = make_prompts(args.prompts)
    base_spec = {"prompts": prompts, "samples": args.samples, "max_new_tokens": args.max_new_tokens,
                 "temperature": args.temperature, "seed": args.seed}
    results: dict[str, dict[str, list[dict]]] = {b: {"job": [], "bare": []} for b in args.backends}
    profiles: list[Path] = []
    for repeat in range(1, args.repeats + 1):
        for backend in args.backends:
            order = ("job", "bare") if repeat % 2 else ("bare", "job")
            for kind in order:
                name = f"{backend}-{kind}-{repeat}"
                spec = {**base_spec, "model": str(models[backend]), "backend": backend, "slug": f"bench-{backend}-{repeat}"}
                if kind == "job" and args.profile:
                    spec["profile"] = str(workdir / f"{name}.prof")
                    profiles.append(Path(spec["profile"]))
                print(f"  {name:<22} ...", end=" ", flush=True)
                result = run_worker(name, kind, spec, env, workdir)
                results[backend][kind].append(result)
                if kind == "job":
                    print(f"{result['tokens']} tokens, {job_rate(result):.1f} tok/s (job row), load {result['load_s']:.1f} s, "
                          f"generate {result['generate_s']:.1f} s; calibration {result['calibration_ms']:.1f} ms, "
                          f"other processes {result['other_cores']:.2f} cores", flush=True)
                else:
                    print(f"{result['tokens']} tokens, {bare_rate(result):.1f} tok/s, load {result['load_s']:.1f} s, "
                          f"generate {result['generate_s']:.1f} s; calibration {result['calibration_ms']:.1f} ms, "
                          f"other processes {result['other_cores']:.2f} cores", flush=True)
    calibration_after = cpu_calibration()

    summary = report(args, results, calibration_before, calibration_after)
    for path in profiles:
        print_profile(path)
    return summary


def report(args: argparse.Namespace, results: dict, calibration_before: float, calibration_after: float) -> str:
    print(
        f"\nSettings: {args.prompts} prompts x {args.samples} samples x {args.max_new_tokens} new tokens, temperature "
        f"{args.temperature}, top_p {TOP_P}, seed {args.seed}; {args.repeats} repetition(s), medians below; "
        f"{os.cpu_count()} CPUs."
    )
    print(f"CPU calibration (pure Python, lower is faster): {calibration_before:.1f} ms before, {calibration_after:.1f} ms after.")
    print(
        "\njob tok/s = the rate the job page shows: tokens_generated / (finished_at - started_at - load_seconds);"
        "\njob gen tok/s = the same without the backend's load and close (generation + the job's per-batch work);"
        "\nbare tok/s = generated tokens / time of the generate calls alone;"
        "\nload s: the job's open_backend (its torch/transformers/vllm imports included), bare's model load or engine"
        "\nstart alone (its imports are under import s); row s: finished_at - started_at of the job row;"
        "\nother: CPU used by other processes during the run, in cores (should be near 0)."
    )
    header = (f"{'backend':<13} {'run':<5} {'tokens':>7} {'tok/s':>7} {'gen tok/s':>9} {'import s':>8} {'load s':>7} {'gen s':>7} "
              f"{'batch work s':>12} {'row s':>7} {'run wall s':>10} {'process s':>9} {'calib ms':>8} {'other':>5}")
    print("\n" + header)
    print("-" * len(header))
    fields: dict[str, str] = {}
    for backend, runs in results.items():
        for number, (job, bare) in enumerate(zip(runs["job"], runs["bare"]), start=1):
            print(f"{backend:<13} {'job':<5} {job['tokens']:>7} {job_rate(job):>7.1f} {job_generation_rate(job):>9.1f} "
                  f"{'-':>8} {job['load_s']:>7.1f} {job['generate_s']:>7.1f} {job['batch_work_s']:>12.3f} {job['row_elapsed_s']:>7.1f} "
                  f"{job['run_wall_s']:>10.1f} {job['process_wall_s']:>9.1f} {job['calibration_ms']:>8.1f} {job['other_cores']:>5.2f}")
            print(f"{'':<13} {'bare':<5} {bare['tokens']:>7} {bare_rate(bare):>7.1f} {bare_rate(bare):>9.1f} "
                  f"{bare['import_s']:>8.1f} {bare['load_s']:>7.1f} {bare['generate_s']:>7.1f} {'':>12} {'':>7} {'':>10} {bare['process_wall_s']:>9.1f} "
                  f"{bare['calibration_ms']:>8.1f} {bare['other_cores']:>5.2f}")
        job_tps = median([job_rate(r) for r in runs["job"]])
        job_gen_tps = median([job_generation_rate(r) for r in runs["job"]])
        bare_tps = median([bare_rate(r) for r in runs["bare"]])
        ratio, gen_ratio = job_tps / bare_tps, job_gen_tps / bare_tps
        job_load = median([r["load_s"] for r in runs["job"]])
        bare_load = median([r["load_s"] for r in runs["bare"]])
        bare_import = median([r["import_s"] for r in runs["bare"]])
        batch_work = median([r["batch_work_s"] for r in runs["job"]])
        other = median([r["row_elapsed_s"] - r["load_s"] - r["generate_s"] - r["batch_work_s"] - r["close_s"] for r in runs["job"]])
        last = runs["job"][-1]
        verdict = "OK" if ratio >= 0.95 else "MISS"
        print(
            f"{backend}: job {job_tps:.1f} tok/s / bare {bare_tps:.1f} tok/s = {ratio:.3f} ({verdict}, target >= 0.95); "
            f"without the backend load {job_gen_tps:.1f} tok/s = {gen_ratio:.3f} of bare.\n"
            f"    backend load in the job {job_load:.1f} s (bare: imports {bare_import:.1f} s + load {bare_load:.1f} s); job per-batch work {batch_work:.3f} s "
            f"over {last['batches']} batches (sizes {last['batch_sizes']}); rest of the job {other:.3f} s; "
            f"{last['candidates']} candidates, {last['items']} ranking items, {last['duplicates_dropped']} dropped; "
            f"job tokens {last['tokens']} vs bare {runs['bare'][-1]['tokens']}."
        )
        fields[f"{backend}_job_tps"] = f"{job_tps:.1f}"
        fields[f"{backend}_bare_tps"] = f"{bare_tps:.1f}"
        fields[f"{backend}_ratio"] = f"{ratio:.3f}"
        if backend == "vllm":
            fields["vllm_engine_start_s"] = f"{bare_load:.1f}"
    print()
    ordered = [f"{backend}_{key}" for backend in BACKENDS for key in ("job_tps", "bare_tps", "ratio")] + ["vllm_engine_start_s"]
    line = {key: fields.get(key, "nan") for key in ordered}
    line.update(prompts=args.prompts, samples=args.samples, max_new_tokens=args.max_new_tokens)
    return "RESULT " + " ".join(f"{key}={value}" for key, value in line.items())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=24, help="Prompts in the job (default 24).")
    parser.add_argument("--samples", type=int, default=4, help="Samples per prompt, the project's K: 2 to 8 (default 4).")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="New tokens per sample at most (default 64).")
    parser.add_argument("--temperature", type=float, default=0.8, help="Sampling temperature (default 0.8).")
    parser.add_argument("--seed", type=int, default=0, help="Sampling seed (default 0).")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="Comma-separated: transformers,vllm (default both).")
    parser.add_argument("--repeats", type=int, default=1, help="Job and bare runs per backend; medians are reported (default 1).")
    parser.add_argument("--model", help="Model folder (default: var/models/smollm2-135m-instruct if built, else built).")
    parser.add_argument("--profile", action="store_true", help="cProfile generation_job_run in the job runs.")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary directory (database, logs, results).")
    parser.add_argument("--worker", choices=["job", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return args
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not args.backends or any(b not in BACKENDS for b in args.backends):
        parser.error("--backends takes transformers, vllm or both, comma-separated")
    if not 2 <= args.samples <= 8:
        parser.error("--samples is the project's K: 2 to 8")
    if args.prompts < 1 or args.max_new_tokens < 1 or args.repeats < 1:
        parser.error("--prompts, --max-new-tokens and --repeats must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args.worker, args.spec, args.out)
    workdir = Path(tempfile.mkdtemp(prefix="bench_generation_"))
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
