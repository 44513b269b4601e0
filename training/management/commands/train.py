from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from annotation.demonstration_filter_cli import add_demonstration_filter_arguments, demonstration_filter_from_options
from annotation.pair_filter_cli import add_pair_filter_arguments, pair_filter_from_options, projects_from_slugs
from config.jobs import follow_until_finished
from config.web import validation_message
from generation.models import ModelVersion
from generation.sampling_cli import prompt_selection_from
from training import selectors, services
from training.models import TrainingMetric, TrainingRun
from training.trainers.settings import DEFAULT_BETA, DEFAULT_LEARNING_RATE, KINDS, ONLINE, ONLY_FOR, SETTING_NAMES, TrainingSettings, kinds_of

POLL_SECONDS = 1


class Command(BaseCommand):
    help = (
        "Train a DPO policy or a reward model on the projects' preference pairs, an SFT policy on their "
        "demonstrations, or a GRPO / RLOO policy on their prompts against a reward model, on the GPU queue: "
        "python manage.py train <project-slug> [<project-slug> ...] --kind dpo|reward|sft|grpo|rloo --base <version> "
        "[--judge <reward version>] [--lora-rank 16 ...]. SFT runs choose demonstrations with --demo-source, --status, "
        "--rejection-job, --from, --to and --eval-fraction; GRPO and RLOO runs take --judge and --prompts; the other "
        "kinds' selection flags are refused."
    )

    def add_arguments(self, parser):
        parser.add_argument("project_slugs", nargs="+", metavar="project-slug")
        parser.add_argument("--kind", choices=TrainingRun.Kind.values, required=True)
        parser.add_argument(
            "--base", required=True, help="The policy model version to train from (a base model or an earlier DPO, SFT, GRPO or RLOO round)."
        )
        parser.add_argument("--judge", help="grpo and rloo: the reward model version the policy is trained against.")
        parser.add_argument(
            "--prompts", help="grpo and rloo: train (the projects' train split, the default) or comma-separated prompt ids."
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
                reward_version=_version(options["judge"]) if options["judge"] else None,
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


# The pair filter's flags that also choose demonstrations (an online run refuses them, as it trains on prompts).
SHARED = {"created_from": "--from", "created_to": "--to", "eval_fraction": "--eval-fraction"}
ONLINE_ONLY = {"judge": "--judge", "prompts": "--prompts"}


def _selection(options: dict) -> dict:
    """The pair filter, an SFT run's demonstration filter or an online run's prompts; a flag of another kind's
    selection is an error."""
    kind = options["kind"]
    sft, online = kind == TrainingRun.Kind.SFT, kind in ONLINE
    if online:
        refused, what = {**PAIR_ONLY, **DEMONSTRATION_ONLY, **SHARED}, "grpo and rloo runs train on prompts: --prompts"
    elif sft:
        refused, what = {**PAIR_ONLY, **ONLINE_ONLY}, "sft runs train on demonstrations"
    else:
        refused, what = {**DEMONSTRATION_ONLY, **ONLINE_ONLY}, "they are for --kind sft, grpo or rloo"
    misplaced = [flag for dest, flag in refused.items() if options.get(dest) is not None]
    if misplaced:
        raise CommandError(f"{', '.join(misplaced)}: not for --kind {kind} ({what}).")
    if online:
        return prompt_selection_from(options["prompts"] or "train", "train")
    return demonstration_filter_from_options(options) if sft else pair_filter_from_options(options)


def _setting_help(name: str, defaults: dict) -> str:
    default = defaults.get(name)
    if name == "learning_rate":
        text = "default " + ", ".join(f"{rate:.0e}".replace("e-0", "e-") + f" for {kind}" for kind, rate in DEFAULT_LEARNING_RATE.items())
    elif name == "beta":
        text = "default " + ", ".join(f"{beta} for {kind}" for kind, beta in DEFAULT_BETA.items())
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
    return f"{text} ({kinds_of(name)} only)" if name in ONLY_FOR else text


def _version(name: str) -> ModelVersion:
    version = ModelVersion.objects.filter(name=name).first()
    if version is None:
        raise CommandError(f"No model version named {name!r}.")
    return version


def _settings(options: dict) -> dict:
    """Only the settings given on the command line: the service fills in the defaults for the kind."""
    return {name: options[f"setting_{name}"] for name in SETTING_NAMES if options[f"setting_{name}"] is not None}


def _progress_line(run: TrainingRun) -> str:
    """The step and the latest train loss; an online run's latest reward, KL and completion length instead."""
    line = f"{run.get_status_display()}: step {run.step}/{run.total_steps or '?'}"
    shown = {"reward": "reward", "kl": "kl", "completions/mean_length": "mean length"} if run.is_online else {"loss": "train loss"}
    for name, label in shown.items():
        value = (
            TrainingMetric.objects.filter(run=run, split=TrainingMetric.Split.TRAIN, name=name)
            .order_by("-step", "-id")
            .values_list("value", flat=True)
            .first()
        )
        if value is not None:
            line += f", {label} {value:.4f}" if name != "completions/mean_length" else f", {label} {value:.0f} tokens"
    return line
