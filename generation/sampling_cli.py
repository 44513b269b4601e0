"""Command-line flags for sampling settings, shared by `generate` and `evaluate`: one flag per field of
generation.backends.base.Sampling, validated by the service that receives them."""

from dataclasses import fields

from generation.backends.base import Sampling


def add_sampling_arguments(parser) -> None:
    for setting in fields(Sampling):  # --temperature, --top-p, --max-new-tokens, --seed, --stop
        flag = f"--{setting.name.replace('_', '-')}"
        if setting.name == "stop":
            parser.add_argument(flag, action="append", default=[], help="A stop string (repeatable).")
        else:
            parser.add_argument(flag, type=type(setting.default), default=setting.default, help=f"Default {setting.default}.")


def sampling_from_options(options: dict) -> dict:
    return {setting.name: options[setting.name] for setting in fields(Sampling)}
