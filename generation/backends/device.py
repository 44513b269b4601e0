"""Where the pure backends and trainers run: one choice of device, made once (pure Python: no Django).

``resolve_device`` turns a request ("auto" or None, "cpu", "cuda", "cuda:N") into the device that is used, or
refuses clearly when it cannot be honoured here, rather than failing later inside a model with tensors on two devices.
"""

from __future__ import annotations

import re

AUTO = "auto"
CUDA = re.compile(r"^cuda(?::(\d+))?$")


def resolve_device(requested: str | None = None) -> str:
    """"cuda" where a CUDA GPU is available and "cpu" otherwise for "auto" (or None); a named device as given,
    once checked against this machine."""
    import torch

    name = (requested or AUTO).strip().lower()
    if name == AUTO:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return name
    match = CUDA.match(name)
    if not match:
        raise ValueError(f"Unknown device {requested!r}: choose auto, cpu, cuda or cuda:N.")
    if not torch.cuda.is_available():
        raise ValueError(
            f"Device {requested!r} was asked for, but no CUDA GPU is available here "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}): use cpu or auto."
        )
    count = torch.cuda.device_count()
    if match.group(1) is not None and int(match.group(1)) >= count:
        raise ValueError(f"Device {requested!r} was asked for, but this machine has {count} CUDA GPU(s): cuda:0 to cuda:{count - 1}.")
    return name


def is_cuda(device: str) -> bool:
    return bool(CUDA.match(device))


def first_gpu_only(device: str, what: str) -> str:
    """``device`` unless it names a GPU other than the first: ``what`` always runs on the first visible one."""
    if is_cuda(device) and device not in ("cuda", "cuda:0"):
        raise ValueError(f"{what} runs on the first visible GPU, not {device}: choose the GPU with CUDA_VISIBLE_DEVICES.")
    return device


def device_map(device: str) -> dict:
    """A ``from_pretrained`` device map that loads the whole model onto ``device`` (4-bit weights are quantized
    there; without a map bitsandbytes picks the current GPU even for a CPU run)."""
    if device == "cuda":
        import torch

        return {"": torch.cuda.current_device()}
    return {"": device}
