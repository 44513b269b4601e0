from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from annotation import services
from annotation.models import Project
from config.web import validation_message


class Command(BaseCommand):
    help = "Create a project: python manage.py create_project <slug> --name ... --k 4 --rankings-per-item 1"

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name", help="Display name (defaults to the slug).")
        parser.add_argument("--k", type=int, default=4, help="Responses per prompt, 2 to 8.")
        parser.add_argument("--rankings-per-item", type=int, default=1, help="Rankings needed per item, 1 to 5.")
        parser.add_argument("--guidelines", default="", help="Guidelines in Markdown.")
        parser.add_argument("--guidelines-file", help="Read the guidelines (Markdown) from this file.")
        parser.add_argument(
            "--demonstrations", choices=Project.DemonstrationMode.values, default=Project.DemonstrationMode.OFF,
            help="Whether labelers also give the answer they want: write (from scratch), edit_optional or edit_required "
            "(rewrite the best response after ranking). Default: off.",
        )

    def handle(self, *args, **options):
        guidelines = options["guidelines"]
        if options["guidelines_file"]:
            with open(options["guidelines_file"], encoding="utf-8") as handle:
                guidelines = handle.read()
        try:
            project = services.project_create(
                name=options["name"] or options["slug"],
                slug=options["slug"],
                guidelines=guidelines,
                responses_per_item=options["k"],
                rankings_per_item=options["rankings_per_item"],
                demonstration_mode=options["demonstrations"],
            )
        except ValidationError as exc:
            raise CommandError(validation_message(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"Created project {project.slug} (K={project.responses_per_item})."))

