"""Writes for projects, prompts and users. Views, the API and management commands all call these."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from itertools import islice
from pathlib import Path
from typing import IO

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser, Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import transaction

from annotation import importing
from annotation.importing import ImportedRow, content_hash
from annotation.models import Demonstration, ImportJob, PreferencePair, Project, Prompt
from annotation.pairs import held_out_by_hash
from annotation.roles import ADMIN, LABELER, RESEARCHER, ROLE_PERMISSIONS
from generation.models import Candidate

BATCH_SIZE = 2000


def roles_ensure() -> None:
    """Create the admin, labeler and researcher groups with their permissions (idempotent)."""
    content_type = ContentType.objects.get_for_model(Project)
    for role, codenames in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        permissions = [
            Permission.objects.get_or_create(
                codename=codename,
                content_type=content_type,
                defaults={"name": dict(Project._meta.permissions)[codename]},
            )[0]
            for codename in codenames
        ]
        group.permissions.set(permissions)


def user_create(*, username: str, password: str, role: str, email: str = "", is_staff: bool = False) -> AbstractUser:
    """Create a user in one role, or update the password and role of an existing one."""
    if role not in ROLE_PERMISSIONS:
        raise ValidationError(f"Unknown role {role!r}; choose one of {', '.join(ROLE_PERMISSIONS)}.")
    roles_ensure()
    user, _ = get_user_model().objects.get_or_create(username=username, defaults={"email": email})
    user.set_password(password)
    user.is_staff = is_staff
    user.save()
    user.groups.set([Group.objects.get(name=role)])
    return user


def project_create(
    *,
    name: str,
    slug: str,
    guidelines: str = "",
    responses_per_item: int = 4,
    rankings_per_item: int = 1,
    demonstration_mode: str = Project.DemonstrationMode.OFF,
    created_by: AbstractUser | None = None,
) -> Project:
    project = Project(
        name=name,
        slug=slug,
        guidelines=guidelines,
        responses_per_item=responses_per_item,
        rankings_per_item=rankings_per_item,
        demonstration_mode=demonstration_mode,
        created_by=created_by,
    )
    project.full_clean()
    project.save()
    return project


def project_demonstration_mode_set(*, project: Project, mode: str) -> Project:
    """Whether the project's labelers also give demonstrations. Turning it off or changing it keeps every
    demonstration made so far; only what labelers are asked next changes."""
    if mode not in Project.DemonstrationMode.values:
        raise ValidationError({"demonstration_mode": f"Choose one of {', '.join(Project.DemonstrationMode.values)}."})
    project.demonstration_mode = mode
    project.save(update_fields=["demonstration_mode", "updated_at"])
    return project


@dataclass(frozen=True)
class ImportReport:
    rows: int = 0
    prompts_created: int = 0
    pairs_created: int = 0
    duplicates_skipped: int = 0
    identical_pairs_skipped: int = 0
    demonstrations_created: int = 0

    def __add__(self, other: ImportReport) -> ImportReport:
        return ImportReport(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def summary(self) -> str:
        parts = [f"{self.rows} rows", f"{self.prompts_created} new prompts", f"{self.pairs_created} new preference pairs"]
        if self.demonstrations_created:
            parts.append(f"{self.demonstrations_created} new demonstrations")
        parts.append(f"{self.duplicates_skipped} duplicates skipped")
        if self.identical_pairs_skipped:
            parts.append(f"{self.identical_pairs_skipped} pairs with identical chosen and rejected skipped")
        return ", ".join(parts)


def prompts_import_file(
    *, project: Project, stream: IO[bytes], filename: str, source: str = "", heldout_fraction: float = 0.0
) -> ImportReport:
    """Import a whole file. Raises importing.ImportFileError (with the line number) and writes nothing if any row
    is broken, or if the file is larger than the settings allow (PREFLOOP_MAX_IMPORT_DECOMPRESSED_BYTES decompressed,
    PREFLOOP_MAX_IMPORT_LINE_BYTES per line or row)."""
    rows = importing.read_rows(stream, filename, import_limits())
    return prompts_import(project=project, rows=rows, source=source or filename, heldout_fraction=heldout_fraction)


def import_limits() -> importing.Limits:
    default = importing.Limits()
    return importing.Limits(
        decompressed_bytes=getattr(settings, "PREFLOOP_MAX_IMPORT_DECOMPRESSED_BYTES", default.decompressed_bytes),
        line_bytes=getattr(settings, "PREFLOOP_MAX_IMPORT_LINE_BYTES", default.line_bytes),
    )


def prompts_import(
    *, project: Project, rows: Iterable[ImportedRow], source: str, heldout_fraction: float = 0.0
) -> ImportReport:
    """Import rows in one transaction, a chunk at a time so that memory stays flat whatever the file size.

    A prompt already in the project (same content hash) is not created again. For preference rows the responses
    become imported Candidates and the row becomes an imported PreferencePair; a pair already imported is a duplicate.
    An SFT row becomes an accepted Demonstration (source import); the same answer to the same prompt is a duplicate.
    A row that fails to parse (raised by the ``rows`` iterator) rolls back everything.
    """
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValidationError("The held-out fraction must be at least 0 and below 1.")
    report = ImportReport()
    with transaction.atomic():
        for chunk in chunks_of(rows, BATCH_SIZE):
            report += import_chunk(project, chunk, source, heldout_fraction)
    return report


def import_chunk(
    project: Project, rows: Sequence[ImportedRow], source: str, heldout_fraction: float, import_job: ImportJob | None = None
) -> ImportReport:
    """Write one chunk of rows. Earlier chunks of the same file are already in the database, so duplicates across
    chunks are found too. What it creates is tagged with ``import_job`` (a background import removes it on failure)."""
    hashes = [content_hash(row.messages) for row in rows]
    prompt_ids, prompts_created = _prompts_get_or_create(project, rows, hashes, source, heldout_fraction, import_job)
    preference_rows = [(row, prompt_ids[h]) for row, h in zip(rows, hashes) if row.is_preference]
    identical = sum(1 for row, _ in preference_rows if row.chosen == row.rejected)
    preference_rows = [(row, prompt_id) for row, prompt_id in preference_rows if row.chosen != row.rejected]
    pairs_created = _import_pairs(project, preference_rows, import_job)
    demonstration_rows = [(row, prompt_ids[h]) for row, h in zip(rows, hashes) if row.is_demonstration]
    demonstrations_created = _import_demonstrations(project, demonstration_rows, source, import_job)
    prompt_duplicates = sum(row.is_prompt_only for row in rows) - _count_prompt_only_created(rows, hashes, prompts_created)
    return ImportReport(
        rows=len(rows),
        prompts_created=len(prompts_created),
        pairs_created=pairs_created,
        duplicates_skipped=prompt_duplicates + len(preference_rows) - pairs_created + len(demonstration_rows) - demonstrations_created,
        identical_pairs_skipped=identical,
        demonstrations_created=demonstrations_created,
    )


def _count_prompt_only_created(rows: Sequence[ImportedRow], hashes: list[str], created: set[str]) -> int:
    """Prompt-only rows that created their prompt (the first row of each new hash)."""
    seen: set[str] = set()
    count = 0
    for row, h in zip(rows, hashes):
        if h in created and h not in seen:
            seen.add(h)
            count += row.is_prompt_only
    return count


def _prompts_get_or_create(
    project: Project, rows: Sequence[ImportedRow], hashes: list[str], source: str, heldout_fraction: float,
    import_job: ImportJob | None,
) -> tuple[dict[str, int], set[str]]:
    """Map every row's content hash to a prompt id, creating the missing prompts. Returns (ids, created hashes)."""
    ids = _existing_prompt_ids(project, set(hashes))
    new_prompts: dict[str, Prompt] = {}
    for row, h in zip(rows, hashes):
        if h in ids or h in new_prompts:
            continue
        new_prompts[h] = Prompt(
            project=project,
            messages=row.messages,
            source=source[:200],
            external_id=row.external_id,
            metadata=row.metadata,
            content_hash=h,
            split=row.split or _split_for(h, heldout_fraction),
            import_job=import_job,
        )
    created = Prompt.objects.bulk_create(new_prompts.values(), batch_size=BATCH_SIZE)
    ids.update({prompt.content_hash: prompt.pk for prompt in created})
    return ids, set(new_prompts)


def _existing_prompt_ids(project: Project, hashes: set[str]) -> dict[str, int]:
    ids: dict[str, int] = {}
    for chunk in _chunks(sorted(hashes), BATCH_SIZE):
        ids.update(Prompt.objects.filter(project=project, content_hash__in=chunk).values_list("content_hash", "pk"))
    return ids


def _split_for(prompt_hash: str, heldout_fraction: float) -> str:
    """Deterministic by content, so re-importing the same prompts gives the same split."""
    if held_out_by_hash(prompt_hash, heldout_fraction):
        return Prompt.Split.HELDOUT
    return Prompt.Split.TRAIN


def _import_pairs(project: Project, preference_rows: list[tuple[ImportedRow, int]], import_job: ImportJob | None) -> int:
    if not preference_rows:
        return 0
    texts = {(prompt_id, text) for row, prompt_id in preference_rows for text in (row.chosen, row.rejected)}
    candidate_ids = _imported_candidates_get_or_create(texts, import_job)
    wanted: dict[tuple[int, int], PreferencePair] = {}
    for row, prompt_id in preference_rows:
        chosen_id = candidate_ids[(prompt_id, content_hash(row.chosen))]
        rejected_id = candidate_ids[(prompt_id, content_hash(row.rejected))]
        wanted.setdefault(
            (chosen_id, rejected_id),
            PreferencePair(
                project=project,
                prompt_id=prompt_id,
                chosen_id=chosen_id,
                rejected_id=rejected_id,
                source=PreferencePair.Source.IMPORT,
                margin=1.0,
                import_job=import_job,
            ),
        )
    existing = _existing_import_pairs(list(wanted))
    new_pairs = [pair for key, pair in wanted.items() if key not in existing]
    PreferencePair.objects.bulk_create(new_pairs, batch_size=BATCH_SIZE)
    return len(new_pairs)


def _import_demonstrations(
    project: Project, rows: list[tuple[ImportedRow, int]], source: str, import_job: ImportJob | None
) -> int:
    """Imported SFT rows as accepted demonstrations (an admin chose to import them), each answer once per prompt."""
    wanted: dict[tuple[int, str], Demonstration] = {}
    for row, prompt_id in rows:
        text_hash = content_hash(row.completion)
        wanted.setdefault(
            (prompt_id, text_hash),
            Demonstration(
                project=project,
                prompt_id=prompt_id,
                text=row.completion,
                text_hash=text_hash,
                source=Demonstration.Source.IMPORT,
                status=Demonstration.Status.ACCEPTED,
                import_job=import_job,
                metadata={"file": source[:200], "line": row.line, "external_id": row.external_id},
            ),
        )
    existing: set[tuple[int, str]] = set()
    prompt_ids = sorted({prompt_id for prompt_id, _ in wanted})
    for chunk in _chunks(prompt_ids, BATCH_SIZE):
        existing.update(
            Demonstration.objects.filter(source=Demonstration.Source.IMPORT, prompt_id__in=chunk).values_list("prompt_id", "text_hash")
        )
    new = [demonstration for key, demonstration in wanted.items() if key not in existing]
    Demonstration.objects.bulk_create(new, batch_size=BATCH_SIZE)
    return len(new)


def _imported_candidates_get_or_create(texts: set[tuple[int, str]], import_job: ImportJob | None) -> dict[tuple[int, str], int]:
    """Map (prompt id, text hash) to a candidate id, creating imported candidates for texts not yet present."""
    by_key = {(prompt_id, content_hash(text)): text for prompt_id, text in texts}
    prompt_ids = sorted({prompt_id for prompt_id, _ in by_key})
    ids: dict[tuple[int, str], int] = {}
    for chunk in _chunks(prompt_ids, BATCH_SIZE):
        rows = Candidate.objects.filter(prompt_id__in=chunk).values_list("prompt_id", "text_hash", "pk")
        ids.update({(prompt_id, text_hash): pk for prompt_id, text_hash, pk in rows})
    missing = [
        Candidate(prompt_id=prompt_id, text=text, text_hash=text_hash, source=Candidate.Source.IMPORT, import_job=import_job)
        for (prompt_id, text_hash), text in by_key.items()
        if (prompt_id, text_hash) not in ids
    ]
    for candidate in Candidate.objects.bulk_create(missing, batch_size=BATCH_SIZE):
        ids[(candidate.prompt_id, candidate.text_hash)] = candidate.pk
    return ids


def _existing_import_pairs(keys: list[tuple[int, int]]) -> set[tuple[int, int]]:
    chosen_ids = sorted({chosen for chosen, _ in keys})
    existing: set[tuple[int, int]] = set()
    for chunk in _chunks(chosen_ids, BATCH_SIZE):
        existing.update(
            PreferencePair.objects.filter(source=PreferencePair.Source.IMPORT, chosen_id__in=chunk).values_list(
                "chosen_id", "rejected_id"
            )
        )
    return existing


def _chunks(values: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def chunks_of(values: Iterable, size: int) -> Iterator[list]:
    iterator = iter(values)
    while chunk := list(islice(iterator, size)):
        yield chunk


DEMO_DIR = Path(__file__).resolve().parent / "demo"
DEMO_PASSWORD = "prefloop-demo"
DEMO_USERS = [("admin", ADMIN), ("labeler1", LABELER), ("labeler2", LABELER), ("researcher", RESEARCHER)]


def demo_seed() -> tuple[Project, list[tuple[str, str]]]:
    """Create the demo users and the demo project with its prompts (idempotent). Returns the project and
    (username, role) pairs; every demo user's password is DEMO_PASSWORD."""
    for username, role in DEMO_USERS:
        user = user_create(username=username, password=DEMO_PASSWORD, role=role, is_staff=role == ADMIN)
        if role == ADMIN and not user.is_superuser:
            user.is_superuser = True
            user.save(update_fields=["is_superuser"])
    project = Project.objects.filter(slug="demo").first() or project_create(
        name="Demo: helpful assistant",
        slug="demo",
        guidelines=(DEMO_DIR / "guidelines.md").read_text(encoding="utf-8"),
        responses_per_item=4,
        rankings_per_item=2,
    )
    with open(DEMO_DIR / "prompts.jsonl", "rb") as stream:
        prompts_import_file(project=project, stream=stream, filename="demo/prompts.jsonl")
    return project, DEMO_USERS
