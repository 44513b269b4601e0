from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from annotation.demonstration_filter_cli import add_demonstration_filter_arguments, demonstration_filter_from_options
from annotation.demonstrations import EXPORT_FORMATS, demonstration_filter_from
from annotation.exporting import sft_export_write
from annotation.pair_filter_cli import projects_from_slugs
from config.web import validation_message


class Command(BaseCommand):
    help = (
        "Export demonstrations as a TRL-ready SFT dataset (messages) with a dataset card: "
        "python manage.py export_demonstrations <project-slug> [...] --format jsonl|parquet|hf --out PATH [filters]. "
        "By default the accepted demonstrations of every source."
    )

    def add_arguments(self, parser):
        parser.add_argument("project_slugs", nargs="+", metavar="project-slug")
        parser.add_argument("--format", choices=EXPORT_FORMATS, default="jsonl")
        parser.add_argument("--out", required=True, help="The file to write (a folder for --format hf); the card goes beside it.")
        add_demonstration_filter_arguments(parser, source_flags=("--source", "--demo-source"))

    def handle(self, *args, **options):
        projects = projects_from_slugs(options["project_slugs"])
        try:
            selection = demonstration_filter_from(demonstration_filter_from_options(options))
        except ValidationError as exc:
            raise CommandError(validation_message(exc)) from exc
        out = Path(options["out"]).expanduser().resolve()
        if not out.parent.is_dir():
            raise CommandError(f"{out.parent} is not a folder.")
        result = sft_export_write(
            projects=projects, export_format=options["format"], selection=selection, out=out,
            progress=lambda rows: self.stderr.write(f"{rows} rows written", ending="\r"),
        )
        self.stderr.write("")
        self.stdout.write(f"Wrote {result.rows} demonstrations to {result.data_path} (sha256 {result.sha256}); card: {result.card_path}")
