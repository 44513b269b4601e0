from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from annotation.models import Project
from config.jobs import follow_until_finished
from config.web import validation_message
from generation.models import ModelVersion
from training import scoring, selectors
from training.models import ScoringJob

POLL_SECONDS = 1


class Command(BaseCommand):
    help = "Score every candidate of a project with a reward model, on the GPU queue: python manage.py score <project-slug> --model <reward version>"

    def add_arguments(self, parser):
        parser.add_argument("project_slug", metavar="project-slug")
        parser.add_argument("--model", required=True, help="The reward model version that scores the candidates.")
        parser.add_argument("--no-wait", action="store_true", help="Queue the job and return at once.")

    def handle(self, *args, **options):
        project = Project.objects.filter(slug=options["project_slug"]).first()
        if project is None:
            raise CommandError(f"No project with slug {options['project_slug']!r}.")
        version = ModelVersion.objects.filter(name=options["model"]).first()
        if version is None:
            raise CommandError(f"No model version named {options['model']!r}.")
        try:
            job = scoring.scoring_job_create(project=project, reward_version=version)
        except ValidationError as exc:
            raise CommandError(validation_message(exc)) from exc
        self.stdout.write(f"Queued scoring job {job.pk} ({job.candidates_total} candidates) on the gpu queue.")
        if not options["no_wait"]:
            self.follow(job)

    def follow(self, job: ScoringJob) -> None:
        """Print the candidates scored and the status whenever they change, until the job ends."""
        follow_until_finished(job, _progress_line, self.stdout.write, POLL_SECONDS)
        if job.status != ScoringJob.Status.SUCCEEDED:
            raise CommandError(f"Scoring job {job.pk} {job.status}: {job.error or 'the scores saved so far are kept.'}")
        self.stdout.write(self.style.SUCCESS(f"Done. {_accuracy_line(job)}"))


def _progress_line(job: ScoringJob) -> str:
    return f"{job.get_status_display()}: {job.candidates_done}/{job.candidates_total} candidates scored"


def _accuracy_line(job: ScoringJob) -> str:
    accuracy = selectors.reward_accuracy(job.reward_version, job.project)
    if not accuracy["pairs"]:
        return "No human pair it did not train on has both responses scored: no accuracy yet."
    return f"Accuracy on human pairs it did not train on: {accuracy['accuracy']:.3f} ({accuracy['correct']}/{accuracy['pairs']})."
