from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from annotation.models import Project
from config.jobs import follow_until_finished
from config.web import validation_message
from generation.models import GenerationJob
from generation.sampling_cli import add_sampling_arguments, prompt_selection_from, sampling_from_options, version_named
from training import evaluation as evaluations
from training.models import Evaluation
from training.stats import Estimate


class Command(BaseCommand):
    help = (
        "Evaluate policy versions on a project's prompts, on the GPU queue: python manage.py evaluate <project-slug> "
        "--model A --model B [--judge REWARD_VERSION] [--prompts heldout|ids] [--samples 1] [sampling flags]"
    )

    def add_arguments(self, parser):
        parser.add_argument("project_slug", metavar="project-slug")
        parser.add_argument("--model", action="append", required=True, help="A policy version (2 to 4, repeat the flag).")
        parser.add_argument("--judge", help="A reward version that scores every response (without: responses only).")
        parser.add_argument("--prompts", default="heldout", help="heldout (the default), or comma-separated prompt ids.")
        parser.add_argument("--samples", type=int, default=1, help="Responses per prompt and version (default 1).")
        parser.add_argument("--name", default="", help="A few words to find it again.")
        add_sampling_arguments(parser)
        parser.add_argument("--backend", choices=GenerationJob.Backend.values, default="auto")
        parser.add_argument("--no-wait", action="store_true", help="Queue the evaluation and return at once.")

    def handle(self, *args, **options):
        project = Project.objects.filter(slug=options["project_slug"]).first()
        if project is None:
            raise CommandError(f"No project with slug {options['project_slug']!r}.")
        try:
            evaluation = evaluations.evaluation_create(
                project=project,
                versions=[version_named(name) for name in options["model"]],
                judge=version_named(options["judge"]) if options["judge"] else None,
                prompt_selection=prompt_selection_from(options["prompts"], "heldout"),
                samples=options["samples"],
                sampling=sampling_from_options(options),
                backend=options["backend"],
                name=options["name"],
            )
        except ValidationError as exc:
            raise CommandError(validation_message(exc)) from exc
        self.stdout.write(f"Queued evaluation {evaluation.pk} ({evaluation.prompts.count()} prompts) on the gpu queue.")
        if not options["no_wait"]:
            follow_until_finished(evaluation, _progress_line, self.stdout.write)
            if evaluation.status != Evaluation.Status.SUCCEEDED:
                raise CommandError(f"Evaluation {evaluation.pk} {evaluation.status}: {evaluation.error or 'the responses saved so far are kept.'}")
            self.stdout.write(results_table(evaluation))


def _progress_line(evaluation: Evaluation) -> str:
    phase = f" ({evaluation.get_phase_display().lower()})" if evaluation.phase else ""
    return f"{evaluation.get_status_display()}{phase}: {evaluation.work_done}/{evaluation.work_total} {evaluation.progress_unit}"


def _estimate(data: dict, digits: int = 3) -> str:
    value = Estimate(**data)
    if value.value is None:
        return "—"
    return f"{value.value:.{digits}f} [{value.low:.{digits}f}, {value.high:.{digits}f}] n={value.count}"


def results_table(evaluation: Evaluation) -> str:
    """The judge's figures as plain text: a line per version, then a line per pair."""
    if not evaluation.results:
        return f"Done: {evaluation.responses.count()} responses, no judge (see the evaluation's page to read them)."
    lines = [f"Judge {evaluation.judge.name}; 95% bootstrap intervals over prompts, n = prompts.", ""]
    lines.append(f"{'version':<32} {'mean reward':<36} mean length (tokens)")
    for row in evaluation.results["versions"]:
        lines.append(f"{row['name']:<32} {_estimate(row['mean_reward']):<36} {_estimate(row['mean_length'], 1)}")
    lines.append("")
    lines.append(f"{'pair':<48} {'win rate (ties half)':<36} {'length-matched':<36} W/T/L")
    for pair in evaluation.results["pairs"]:
        name = f"{pair['a']} over {pair['b']}"
        lines.append(
            f"{name:<48} {_estimate(pair['win_rate']):<36} {_estimate(pair['win_rate_length_matched']):<36} "
            f"{pair['wins']}/{pair['ties']}/{pair['losses']}"
        )
    return "\n".join(lines)
