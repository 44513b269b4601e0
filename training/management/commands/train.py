import time

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from annotation.models import PreferencePair, Project
from config.web import validation_message
from generation.models import ModelVersion
from training import selectors, services
from training.models import TrainingMetric, TrainingRun
from training.trainers.settings import ONLY_FOR, SETTING_NAMES, TrainingSettings

POLL_SECONDS = 1
FINISHED = {TrainingRun.Status.SUCCEEDED, TrainingRun.Status.FAILED, TrainingRun.Status.CANCELLED}
# Pair filter keys taken from flags as typed: the service validates them and names a bad one.
FILTER_OPTIONS = ("min_agreement", "created_from", "created_to", "eval_fraction")


class Command(BaseCommand):
    help = (
        "Train a DPO policy or a reward model on the projects' preference pairs, on the GPU queue: "
        "python manage.py train <project-slug> [<project-slug> ...] --kind dpo|reward --base <version> [--lora-rank 16 ...]"
    )

    def add_arguments(self, parser):
        parser.add_argument("project_slugs", nargs="+", metavar="project-slug")
        parser.add_argument("--kind", choices=TrainingRun.Kind.values, required=True)
        parser.add_argument("--base", required=True, help="The policy model version to train from (a base model or an earlier DPO round).")
        filters = parser.add_argument_group("which pairs")
        filters.add_argument("--source", action="append", choices=PreferencePair.Source.values, help="Pair source (repeatable); default all.")
        filters.add_argument("--include-flagged", action="store_true", help="Keep the pairs of flagged and retired items.")
        filters.add_argument("--min-agreement", metavar="X", help="Only human pairs of items whose labelers agree at least this much (0-1).")
        filters.add_argument("--from", dest="created_from", metavar="YYYY-MM-DD", help="Pairs created on or after this day (YYYY-MM-DD).")
        filters.add_argument("--to", dest="created_to", metavar="YYYY-MM-DD", help="Pairs created on or before this day (YYYY-MM-DD).")
        filters.add_argument("--eval-fraction", metavar="X", help="With no prompt marked held-out, hold out this share of prompts (0-0.9).")
        settings = parser.add_argument_group("training settings (omitted ones take their defaults)")
        defaults = TrainingSettings(kind="dpo").as_dict() | TrainingSettings(kind="reward").as_dict()
        for name in SETTING_NAMES:
            settings.add_argument(f"--{name.replace('_', '-')}", dest=f"setting_{name}", metavar="VALUE", help=_setting_help(name, defaults))
        parser.add_argument("--no-wait", action="store_true", help="Queue the run and return at once.")

    def handle(self, *args, **options):
        try:
            run = services.training_run_create(
                kind=options["kind"],
                base_version=_version(options["base"]),
                projects=_projects(options["project_slugs"]),
                pair_filter=_pair_filter(options),
                settings=_settings(options),
            )
        except ValidationError as exc:
            raise CommandError(validation_message(exc)) from exc
        pairs = run.dataset_manifest["pairs"]
        self.stdout.write(f"Queued training run {run.pk} ({pairs['train']} train pairs / {pairs['eval']} eval pairs) on the gpu queue.")
        if not options["no_wait"]:
            self.follow(run)

    def follow(self, run: TrainingRun) -> None:
        """Print the run's step, latest train loss and status whenever they change, until it ends."""
        last = None
        while True:
            run.refresh_from_db()
            line = _progress_line(run)
            if line != last:
                self.stdout.write(line)
                last = line
            if run.status in FINISHED:
                break
            time.sleep(POLL_SECONDS)
        if run.status != TrainingRun.Status.SUCCEEDED:
            raise CommandError(f"Run {run.pk} {run.status}: {run.error or 'no model was registered.'}")
        elapsed = selectors.run_progress(run).elapsed_seconds
        self.stdout.write(self.style.SUCCESS(f"Done in {elapsed:.0f} s: registered model version {run.model_version.name}."))


def _setting_help(name: str, defaults: dict) -> str:
    default = defaults.get(name)
    if name == "learning_rate":
        text = "default 5e-5 for dpo, 1e-4 for reward"
    elif default is None:
        text = "auto, true or false; default auto (decided for the device)"
    elif isinstance(default, bool):
        text = f"true or false; default {str(default).lower()}"
    elif isinstance(default, list):
        text = f"comma-separated; default {','.join(default)}"
    else:
        text = f"default {default}"
    return f"{text} ({ONLY_FOR[name]} only)" if name in ONLY_FOR else text


def _version(name: str) -> ModelVersion:
    version = ModelVersion.objects.filter(name=name).first()
    if version is None:
        raise CommandError(f"No model version named {name!r}.")
    return version


def _projects(slugs: list[str]) -> list[Project]:
    projects = {project.slug: project for project in Project.objects.filter(slug__in=slugs)}
    missing = [slug for slug in slugs if slug not in projects]
    if missing:
        raise CommandError(f"No project with slug {', '.join(repr(slug) for slug in missing)}.")
    return [projects[slug] for slug in dict.fromkeys(slugs)]


def _pair_filter(options: dict) -> dict:
    pair_filter = {key: options[key] for key in FILTER_OPTIONS if options[key] is not None}
    if options["source"]:
        pair_filter["sources"] = list(dict.fromkeys(options["source"]))
    if options["include_flagged"]:
        pair_filter["exclude_flagged"] = False
    return pair_filter


def _settings(options: dict) -> dict:
    """Only the settings given on the command line: the service fills in the defaults for the kind."""
    return {name: options[f"setting_{name}"] for name in SETTING_NAMES if options[f"setting_{name}"] is not None}


def _progress_line(run: TrainingRun) -> str:
    line = f"{run.get_status_display()}: step {run.step}/{run.total_steps or '?'}"
    loss = (
        TrainingMetric.objects.filter(run=run, split=TrainingMetric.Split.TRAIN, name="loss")
        .order_by("-step", "-id")
        .values_list("value", flat=True)
        .first()
    )
    return line if loss is None else f"{line}, train loss {loss:.4f}"
