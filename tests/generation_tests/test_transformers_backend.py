"""The transformers backend, for real, on a tiny model and with a LoRA adapter."""

import pytest

from generation.backends.base import ModelSpec, PromptRequest, Sampling, cut_at_stop, open_backend
from generation.backends.device import first_gpu_only, resolve_device
from generation.backends.transformers_backend import TransformersBackend

pytestmark = pytest.mark.slow

REQUESTS = [
    PromptRequest(key=1, messages=[{"role": "user", "content": "Hello there"}], n=3),
    PromptRequest(key=2, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a color."}], n=3),
]


def run(backend, sampling):
    return [generation for batch in backend.generate(REQUESTS, sampling) for generation in batch]


def test_generates_n_samples_per_prompt_with_a_seed(tiny_model):
    backend = open_backend("transformers", ModelSpec(tiny_model), batch_size=4)
    sampling = Sampling(temperature=1.0, top_p=1.0, max_new_tokens=8, seed=7)
    first = run(backend, sampling)
    assert [g.key for g in first] == [1, 1, 1, 2, 2, 2]
    assert all(0 < g.num_tokens <= 8 and g.finish_reason in {"stop", "length"} for g in first)
    assert len({g.text for g in first}) > 1  # sampled, so samples differ
    assert [g.text for g in run(backend, sampling)] == [g.text for g in first]  # seeded, so reproducible
    assert [g.text for g in run(backend, Sampling(temperature=1.0, top_p=1.0, max_new_tokens=8, seed=8))] != [g.text for g in first]


def test_batches_are_yielded_as_they_finish(tiny_model):
    backend = open_backend("transformers", ModelSpec(tiny_model), batch_size=3)
    batches = list(backend.generate(REQUESTS, Sampling(max_new_tokens=4)))
    assert [[g.key for g in batch] for batch in batches] == [[1, 1, 1], [2, 2, 2]]


def test_a_lora_adapter_changes_the_output(tiny_model, tiny_adapter):
    greedy = Sampling(temperature=0.0, max_new_tokens=8)
    single = [PromptRequest(key=1, messages=REQUESTS[0].messages, n=1)]
    base = next(open_backend("transformers", ModelSpec(tiny_model)).generate(single, greedy))
    tuned = next(open_backend("transformers", ModelSpec(tiny_model, tiny_adapter)).generate(single, greedy))
    assert base[0].text != tuned[0].text


def test_stop_strings_cut_the_text():
    assert cut_at_stop("Hello. World. Again.", ["World", "Again"]) == ("Hello. ", True)
    assert cut_at_stop("Hello", ["x"]) == ("Hello", False)


def test_unknown_backend_and_missing_model_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="Unknown backend"):
        open_backend("magic", ModelSpec("x"))
    with pytest.raises(OSError):
        open_backend("transformers", ModelSpec(str(tmp_path / "missing")))


# --- the device ----------------------------------------------------------------------------------------------------


def test_the_device_is_resolved_once_and_cuda_is_refused_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the choice on a machine without a GPU")
    assert resolve_device() == resolve_device("auto") == resolve_device(" CPU ") == "cpu"
    for requested in ("cuda", "cuda:0", "cuda:1"):
        with pytest.raises(ValueError, match=f"Device '{requested}' was asked for, but no CUDA GPU is available here"):
            resolve_device(requested)
    with pytest.raises(ValueError, match="Unknown device 'gpu': choose auto, cpu, cuda or cuda:N"):
        resolve_device("gpu")
    assert first_gpu_only("cuda:0", "Training") == "cuda:0"
    with pytest.raises(ValueError, match="Training runs on the first visible GPU, not cuda:1"):
        first_gpu_only("cuda:1", "Training")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        TransformersBackend(ModelSpec("unused"), device="cuda")  # refused before loading anything


def test_the_backend_reports_and_uses_the_resolved_device(tiny_model):
    import torch

    backend = open_backend("auto", ModelSpec(tiny_model), device="cpu")
    assert (backend.name, backend.device) == ("transformers", "cpu")
    assert {parameter.device for parameter in backend.model.parameters()} == {torch.device("cpu")}
    seen = []
    backend.model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["input_ids"].device), with_kwargs=True)
    generations = run(backend, Sampling(max_new_tokens=2))
    assert len(generations) == 6 and seen and set(seen) == {torch.device("cpu")}
    assert open_backend("transformers", ModelSpec(tiny_model)).device == ("cuda" if torch.cuda.is_available() else "cpu")


def test_progress_is_reported_every_step_while_the_batch_runs(tiny_model):
    backend = open_backend("transformers", ModelSpec(tiny_model), batch_size=6)
    reports, seen_at_yield = [], []
    for batch in backend.generate(REQUESTS, Sampling(temperature=1.0, top_p=1.0, max_new_tokens=8, seed=1), on_progress=reports.append):
        seen_at_yield.append((len(reports), batch))
    [(count, batch)] = seen_at_yield  # one batch of 2 prompts x 3 samples
    assert count == len(reports) and 2 <= count <= 8  # one report per decoding step, all before the batch was yielded
    assert all(r.sequences == 6 for r in reports)
    tokens = [r.tokens for r in reports]
    fractions = [r.fraction for r in reports]
    assert tokens == sorted(tokens) and tokens[0] < tokens[-1]  # tokens counted as they are generated
    assert fractions == sorted(fractions) and 0 < fractions[0] < fractions[-1] == 1.0
    # Every response ended by the last step; the count is that of the tokens kept (end-of-text tokens left out).
    assert reports[-1].finished == 6
    assert sum(g.num_tokens for g in batch) <= reports[-1].tokens <= 6 * 8


def test_a_progress_callback_may_stop_the_batch(tiny_model):
    backend = open_backend("transformers", ModelSpec(tiny_model), batch_size=6)

    def stop(progress):
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        next(backend.generate(REQUESTS, Sampling(max_new_tokens=8), on_progress=stop))
