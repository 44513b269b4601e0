"""What the `generate` and `evaluate` commands share: one flag per field of generation.backends.base.Sampling
(validated by the service that receives them), and model versions looked up by name."""

from dataclasses import fields

from django.core.management.base import CommandError

from generation.backends.base import Sampling
from generation.models import ModelVersion


def add_sampling_arguments(parser) -> None:
    for setting in fields(Sampling):  # --temperature, --top-p, --max-new-tokens, --seed, --stop
        flag = f"--{setting.name.replace('_', '-')}"
        if setting.name == "stop":
            parser.add_argument(flag, action="append", default=[], help="A stop string (repeatable).")
        else:
            parser.add_argument(flag, type=type(setting.default), default=setting.default, help=f"Default {setting.default}.")


def sampling_from_options(options: dict) -> dict:
    return {setting.name: options[setting.name] for setting in fields(Sampling)}


def version_named(name: str) -> ModelVersion:
    version = ModelVersion.objects.filter(name=name).first()
    if version is None:
        raise CommandError(f"No model version named {name!r}.")
    return version


def prompt_selection_from(value: str, named_mode: str) -> dict:
    """``--prompts``: the named mode (``heldout``, ``train``) or comma-separated prompt ids."""
    from django.core.management.base import CommandError

    if value == named_mode:
        return {"mode": named_mode}
    try:
        return {"mode": "ids", "ids": [int(part) for part in value.split(",") if part.strip()]}
    except ValueError as exc:
        raise CommandError(f"--prompts takes {named_mode} or comma-separated prompt ids.") from exc
