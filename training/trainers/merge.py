"""Fold a LoRA adapter into its base weights (pure Python: no Django).

A round trained on top of an earlier round's adapter starts from the merged weights: the new adapter then learns
on top of the earlier policy, and DPO's reference (the base with the new adapter disabled) is that policy.
"""

from __future__ import annotations

from pathlib import Path


def merge_adapter(*, base_model: str, adapter_path: str, output_dir: Path) -> Path:
    """Write base + adapter as a plain model folder (once; an existing merge is reused)."""
    output_dir = Path(output_dir)
    if (output_dir / "config.json").is_file():
        return output_dir
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base_model, dtype="auto")
    merged = PeftModel.from_pretrained(model, adapter_path).merge_and_unload()
    partial = output_dir.with_name(output_dir.name + ".partial")
    merged.save_pretrained(partial)
    AutoTokenizer.from_pretrained(adapter_path if (Path(adapter_path) / "tokenizer_config.json").is_file() else base_model).save_pretrained(partial)
    partial.rename(output_dir)
    return output_dir
