from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from annotation.demonstration_filter_cli import add_demonstration_filter_arguments, demonstration_filter_from_options
from annotation.pair_filter_cli import add_pair_filter_arguments, pair_filter_from_options, projects_from_slugs
from config.jobs import follow_until_finished
from config.web import validation_message
from generation.models import ModelVersion
from training import selectors, services
from training.models import TrainingMetric, TrainingRun
from training.trainers.settings import DEFAULT_LEARNING_RATE, KINDS, ONLY_FOR, SETTING_NAMES, TrainingSettings

POLL_SECONDS = 1


class Command(BaseCommand):
    help = (
        "Train a DPO policy or a reward model on the projects' preference pairs, or an SFT policy on their "
        "demonstrations, on the GPU queue: python manage.py train <project-slug> [<project-slug> ...] --kind dpo|reward|sft "
        "--base <version> [--lora-rank 16 ...]. SFT runs choose demonstrations with --demo-source, --status, "
        "--rejection-job, --from, --to and --eval-fraction; the other pair filters are refused for them."
    )

    def add_arguments(self, parser):
        parser.add_argument("project_slugs", nargs="+", metavar="project-slug")
        parser.add_argument("--kind", choices=TrainingRun.Kind.values, required=True)
        parser.add_argument(
            "--base", required=True, help="The policy model version to train from (a base model or an earlier DPO or SFT round)."
        )
        add_pair_filter_arguments(parser)
        # --from, --to and --eval-fraction are the pair filter's flags, and mean the same for demonstrations.
        add_demonstration_filter_arguments(parser, with_dates=False)
        settings = parser.add_argument_group("training settings (omitted ones take their defaults)")
        defaults = {}
        for kind in KINDS:
            defaults |= TrainingSettings(kind=kind).as_dict()
        for name in SETTING_NAMES:
            settings.add_argument(f"--{name.replace('_', '-')}", dest=f"setting_{name}", metavar="VALUE", help=_setting_help(name, defaults))
        parser.add_argument("--no-wait", action="store_true", help="Queue the run and return at once.")

    def handle(self, *args, **options):
        try:
            run = services.training_run_create(
                kind=options["kind"],
                base_version=_version(options["base"]),
                projects=projects_from_slugs(options["project_slugs"]),
                pair_filter=_selection(options),
                settings=_settings(options),
            )
        except ValidationError as exc:
            raise CommandError(validation_message(exc)) from exc
        unit, lengths = run.trains_on, run.dataset_manifest.get("lengths")
        selected = run.selected_examples
        used = ""
        if lengths and (lengths["train"]["used"], lengths["eval"]["used"]) != (selected["train"], selected["eval"]):
            used = f", {lengths['train']['used']} / {lengths['eval']['used']} within --max-length {lengths['max_length']}"
        if lengths and (lengths["train"]["truncated"] or lengths["eval"]["truncated"]):
            used += f", {lengths['train']['truncated'] + lengths['eval']['truncated']} truncated"
        self.stdout.write(
            f"Queued training run {run.pk} ({selected['train']} train {unit} / {selected['eval']} eval {unit}{used}) on the gpu queue."
        )
        if not options["no_wait"]:
            self.follow(run)

    def follow(self, run: TrainingRun) -> None:
        """Print the run's step, latest train loss and status whenever they change, until it ends."""
        follow_until_finished(run, _progress_line, self.stdout.write, POLL_SECONDS)
        if run.status != TrainingRun.Status.SUCCEEDED:
            raise CommandError(f"Run {run.pk} {run.status}: {run.error or 'no model was registered.'}")
        elapsed = selectors.run_progress(run)["elapsed_seconds"]
        self.stdout.write(self.style.SUCCESS(f"Done in {elapsed:.0f} s: registered model version {run.model_version.name}."))


# The pair filter's flags that choose pairs only (an SFT run refuses them) and the demonstration filter's own ones.
PAIR_ONLY = {"sources": "--source", "exclude_flagged": "--include-flagged", "include_evaluation": "--exclude-evaluation",
             "min_agreement": "--min-agreement", "model_versions": "--model-version"}
DEMONSTRATION_ONLY = {"demo_sources": "--demo-source", "demo_statuses": "--status", "demo_rejection_jobs": "--rejection-job"}


def _selection(options: dict) -> dict:
    """The pair filter, or an SFT run's demonstration filter; a flag of the other kind of filter is an error."""
    sft = options["kind"] == TrainingRun.Kind.SFT
    misplaced = [flag for dest, flag in (PAIR_ONLY if sft else DEMONSTRATION_ONLY).items() if options.get(dest) is not None]
    if misplaced:
        what = "sft runs train on demonstrations" if sft else "they choose demonstrations, for --kind sft"
        raise CommandError(f"{', '.join(misplaced)}: not for --kind {options['kind']} ({what}).")
    return demonstration_filter_from_options(options) if sft else pair_filter_from_options(options)


def _setting_help(name: str, defaults: dict) -> str:
    default = defaults.get(name)
    if name == "learning_rate":
        text = "default " + ", ".join(f"{rate:.0e}".replace("e-0", "e-") + f" for {kind}" for kind, rate in DEFAULT_LEARNING_RATE.items())
    elif default is None:
        text = "auto, true or false; default auto (decided for the device)"
    elif isinstance(default, bool):
        text = f"true or false; default {str(default).lower()}"
    elif name == "too_long":
        text = f"truncate or drop (pairs longer than --max-length); default {default}"
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
