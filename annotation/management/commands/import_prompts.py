from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from annotation import imports
from config.web import validation_message
from annotation.models import Project


class Command(BaseCommand):
    help = (
        "Import prompts or preference pairs from JSONL, JSON or CSV (optionally gzipped). "
        "Every row is checked before any is written (a file with a broken row is rejected whole), then written a "
        "chunk per transaction, so labelers keep working on SQLite; the import shows on the Jobs page."
    )
    requires_system_checks = []  # saves half a second per import; `manage.py check` still runs them

    def add_arguments(self, parser):
        parser.add_argument("project_slug")
        parser.add_argument("file")
        parser.add_argument("--heldout-fraction", type=float, default=0.0, help="Share of new prompts held out (0 to 0.99).")
        parser.add_argument("--source", default="", help="Recorded as each prompt's source (defaults to the file name).")

    def handle(self, *args, **options):
        try:
            project = Project.objects.get(slug=options["project_slug"])
        except Project.DoesNotExist as exc:
            raise CommandError(f"No project with slug {options['project_slug']!r}.") from exc
        path = Path(options["file"])
        if not path.is_file():
            raise CommandError(f"Cannot read {options['file']}: no such file.")
        try:
            job = imports.import_job_for_file(
                project=project, path=path, source=options["source"], heldout_fraction=options["heldout_fraction"]
            )
        except OSError as exc:
            raise CommandError(f"Cannot read {options['file']}: {exc.strerror}") from exc
        except ValidationError as exc:
            raise CommandError(validation_message(exc)) from exc
        job = imports.import_run(job.pk)
        if job.status != job.Status.SUCCEEDED:
            raise CommandError(f"Nothing was imported. {options['file']}, {job.problem}")
        self.stdout.write(self.style.SUCCESS(f"Imported into {project.slug}: {imports.import_report(job).summary()}."))
