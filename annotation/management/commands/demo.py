from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from annotation import services
from generation import jobs
from generation import services as generation_services
from generation.backends.default_model import DefaultModelUnavailable


class Command(BaseCommand):
    help = (
        "Set up a demo (database, default model, demo project and users) and run the web app and the workers. "
        "Safe to run again: it reuses what is already there."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--setup-only", action="store_true", help="Prepare everything but do not start the servers.")

    def handle(self, *args, **options):
        self.stdout.write("Preparing the database...")
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write("Preparing the default model (the first time takes about a minute)...")
        try:
            model = generation_services.default_model_prepare()
        except DefaultModelUnavailable as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"  {model.name}: {model.base_model}")
        project, users = services.demo_seed()
        self.stdout.write(f"Demo project: {project.name} ({project.prompts.count()} prompts)")
        job = jobs.first_generation_queue(project=project, model=model)
        if job:
            self.stdout.write(
                f"Queued generation job {job.pk}: {model.name} writes {project.responses_per_item} candidates per prompt; "
                "items reach the labelers as prompts are done (watch it under Jobs)."
            )
        self.stdout.write("Demo users (password for all: %s):" % services.DEMO_PASSWORD)
        for username, role in users:
            self.stdout.write(f"  {username:<12} {role}")
        if options["setup_only"]:
            return
        call_command("serve", host=options["host"], port=options["port"])
