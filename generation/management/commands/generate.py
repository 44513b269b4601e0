from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from annotation.models import Project
from config.jobs import follow_until_finished
from config.web import validation_message
from generation import jobs, selectors
from generation.models import GenerationJob
from generation.sampling_cli import add_sampling_arguments, sampling_from_options, version_named


class Command(BaseCommand):
    help = (
        "Generate candidates for a project's prompts on the GPU queue: "
        "python manage.py generate <project-slug> --model <version> --n 4 [--model <other> --n 2 ...]"
    )

    def add_arguments(self, parser):
        parser.add_argument("project_slug")
        parser.add_argument("--model", action="append", required=True, help="A policy model version (repeatable).")
        parser.add_argument("--n", action="append", type=int, required=True, help="Candidates per prompt from the --model before it.")
        parser.add_argument("--prompts", choices=["missing", "heldout", "ids"], default="missing")
        parser.add_argument("--ids", default="", help="Comma-separated prompt ids, with --prompts ids.")
        add_sampling_arguments(parser)
        parser.add_argument("--backend", choices=GenerationJob.Backend.values, default="auto")
        parser.add_argument("--no-wait", action="store_true", help="Queue the job and return at once.")

    def handle(self, *args, **options):
        project = Project.objects.filter(slug=options["project_slug"]).first()
        if project is None:
            raise CommandError(f"No project with slug {options['project_slug']!r}.")
        if len(options["model"]) != len(options["n"]):
            raise CommandError("Give one --n after each --model.")
        try:
            job = jobs.generation_job_create(
                project=project,
                plan=[jobs.PlanEntry(version_named(name), n) for name, n in zip(options["model"], options["n"])],
                prompt_selection=_selection(options),
                sampling=sampling_from_options(options),
                backend=options["backend"],
            )
        except ValidationError as exc:
            raise CommandError(validation_message(exc)) from exc
        self.stdout.write(f"Queued generation job {job.pk} ({job.prompts_total} prompts) on the gpu queue.")
        if not options["no_wait"]:
            self._follow(job)

    def _follow(self, job):
        follow_until_finished(job, _progress_line, self.stdout.write)
        progress = selectors.job_progress(job)
        if job.status != GenerationJob.Status.SUCCEEDED:
            raise CommandError(f"Job {job.pk} {job.status}: {job.error}")
        self.stdout.write(self.style.SUCCESS(f"Done in {progress['elapsed_seconds']:.0f} s with {progress['backend']}. Dropped: {progress['dropped']}."))


def _progress_line(job: GenerationJob) -> str:
    return (
        f"{job.get_status_display()}: {job.responses_done}/{job.responses_total} responses, "
        f"{job.prompts_done}/{job.prompts_total} prompts, {job.tokens_generated + job.tokens_in_batch} tokens"
    )


def _selection(options):
    if options["prompts"] != "ids":
        return {"mode": options["prompts"]}
    try:
        return {"mode": "ids", "ids": [int(part) for part in options["ids"].split(",") if part.strip()]}
    except ValueError as exc:
        raise CommandError("--ids takes comma-separated whole numbers.") from exc
