"""Export requests from the browser and the API: small ones are written at once, large ones by a background job
(the `default` queue) that reports its progress. Files are written in $PREFLOOP_DATA_DIR/exports/<id>/ and kept in
the artifact store under exports/<id>/ (config/artifacts.py), from where downloads stream."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import transaction

from annotation.demonstrations import EXPORT_FORMATS, demonstration_filter_from, selected_demonstrations
from annotation.exporting import FORMATS, SUFFIX, export_write, selected_rankings, sft_export_write
from annotation.models import Export, Project
from annotation.pairs import PairFilter, pair_filter_from, selected_pairs
from config import artifacts
from config.jobs import job_dispatch_on_commit, job_update, run_job

SYNC_ROWS = 20_000  # at most this many rows: written during the request (a few seconds at most)


def export_create(
    *,
    projects: list[Project],
    export_format: str,
    pair_filter: dict | None = None,
    dataset: str = Export.Dataset.PREFERENCE,
    requested_by: AbstractUser | None = None,
) -> Export:
    """``dataset`` preference: ``pair_filter`` is a pair filter (annotation.pairs); sft: a demonstration filter
    (annotation.demonstrations)."""
    if dataset not in Export.Dataset.values:
        raise ValidationError({"dataset": f"Choose one of {', '.join(Export.Dataset.values)}."})
    formats = EXPORT_FORMATS if dataset == Export.Dataset.SFT else FORMATS
    if export_format not in formats:
        raise ValidationError({"export_format": f"Choose one of {', '.join(formats)}."})
    if not projects:
        raise ValidationError({"projects": "Choose at least one project."})
    if dataset == Export.Dataset.SFT:
        selection = demonstration_filter_from(pair_filter)
        total = selected_demonstrations(projects, selection).count()
    else:
        selection = pair_filter_from(pair_filter)
        total = _rows_selected(projects, export_format, selection)
    with transaction.atomic():
        export = Export.objects.create(
            dataset=dataset, export_format=export_format, pair_filter=selection.as_dict(), rows_total=total,
            requested_by=requested_by,
        )
        export.projects.set(projects)
        if total > SYNC_ROWS:
            job_dispatch_on_commit(export)
    if total <= SYNC_ROWS:
        export = export_run(export.pk)
    return export


def _file_stem(export: Export, projects: list[Project]) -> str:
    if export.dataset == Export.Dataset.SFT:
        kind = "-sft"
    else:
        kind = "-rankings" if export.export_format == "rankings" else "-preferences"
    return "-".join(project.slug for project in projects)[:80] + kind


def _rows_selected(projects: list[Project], export_format: str, selection: PairFilter) -> int:
    if export_format == "rankings":
        return selected_rankings(projects, selection).count()
    return selected_pairs(projects, selection).count()


def export_run(export_id: int) -> Export:
    """Write the export in this process (a request or the default worker). The row records how it ended."""
    return run_job(Export, export_id, work=_write)


def _write(export: Export) -> dict:
    folder = settings.EXPORTS_DIR / str(export.pk)
    shutil.rmtree(folder, ignore_errors=True)  # a leftover of an earlier database with the same ids
    folder.mkdir(parents=True)
    projects = list(export.projects.order_by("slug"))
    out = folder / f"{_file_stem(export, projects)}{SUFFIX[export.export_format]}"
    progress = lambda rows: job_update(export, rows_done=rows)  # noqa: E731
    if export.dataset == Export.Dataset.SFT:
        selection = demonstration_filter_from(export.pair_filter)
        result = sft_export_write(projects=projects, export_format=export.export_format, selection=selection, out=out, progress=progress)
    else:
        selection = pair_filter_from(export.pair_filter)
        result = export_write(projects=projects, export_format=export.export_format, pair_filter=selection, out=out, progress=progress)
    download = result.data_path
    if download.is_dir():
        download = Path(shutil.make_archive(str(download), "zip", root_dir=download.parent, base_dir=download.name))
    size = download.stat().st_size
    stored = artifacts.publish(folder, f"exports/{export.pk}", move=True)
    return {
        "rows_done": result.rows, "data_path": artifacts.join(stored, download.relative_to(folder).as_posix()),
        "card_path": artifacts.join(stored, result.card_path.relative_to(folder).as_posix()), "size_bytes": size,
        "sha256": result.sha256,
    }


def export_file(export: Export, part: str) -> tuple[BinaryIO, str]:
    """A finished export's data file or its card ("card"), opened for streaming from the artifact store, and its
    name; ArtifactNotFound when it is gone."""
    uri = export.card_path if part == "card" else export.data_path
    return artifacts.open_file(uri), artifacts.file_name(uri)
