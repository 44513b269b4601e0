from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from annotation.exporting import FORMATS, export_write
from annotation.pair_filter_cli import add_pair_filter_arguments, pair_filter_from_options, projects_from_slugs
from annotation.pairs import pair_filter_from
from config.web import validation_message


class Command(BaseCommand):
    help = (
        "Export preference pairs (TRL's conversational format) or raw rankings with a dataset card: "
        "python manage.py export_preferences <project-slug> [...] --format jsonl|parquet|hf|rankings --out PATH [filters]"
    )

    def add_arguments(self, parser):
        parser.add_argument("project_slugs", nargs="+", metavar="project-slug")
        parser.add_argument("--format", choices=FORMATS, default="jsonl")
        parser.add_argument("--out", required=True, help="The file to write (a folder for --format hf); the card goes beside it.")
        add_pair_filter_arguments(parser)

    def handle(self, *args, **options):
        projects = projects_from_slugs(options["project_slugs"])
        try:
            pair_filter = pair_filter_from(pair_filter_from_options(options))
        except ValidationError as exc:
            raise CommandError(validation_message(exc)) from exc
        out = Path(options["out"]).expanduser().resolve()
        if not out.parent.is_dir():
            raise CommandError(f"{out.parent} is not a folder.")
        result = export_write(
            projects=projects, export_format=options["format"], pair_filter=pair_filter, out=out,
            progress=lambda rows: self.stderr.write(f"{rows} rows written", ending="\r"),
        )
        self.stderr.write("")
        self.stdout.write(f"Wrote {result.rows} rows to {result.data_path} (sha256 {result.sha256}); card: {result.card_path}")
