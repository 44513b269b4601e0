from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from annotation.models import Project
from config.jobs import follow_until_finished
from config.web import validation_message
from generation.models import GenerationJob
from generation.sampling_cli import add_sampling_arguments, prompt_selection_from, sampling_from_options, version_named
from training import rejection_sampling as service
from training.models import RejectionSamplingJob

BAR_WIDTH = 40


class Command(BaseCommand):
    help = (
        "Rejection sampling on the GPU queue: a policy generates N responses per prompt, a reward model scores them, and "
        "the best become demonstrations. python manage.py rejection_sample <project-slug> --policy VERSION --judge "
        "REWARD_VERSION --n 8 --select best-of-n|top-k-per-prompt|top-k-overall [--k 2] [--pairs] [--prompts train|ids] "
        "[sampling flags]"
    )

    def add_arguments(self, parser):
        parser.add_argument("project_slug", metavar="project-slug")
        parser.add_argument("--policy", required=True, help="The policy version that generates.")
        parser.add_argument("--judge", required=True, help="The reward version that scores every response.")
        parser.add_argument("--n", type=int, default=8, help=f"Responses per prompt, {service.MIN_N} to {service.MAX_N} (default 8).")
        parser.add_argument("--select", choices=RejectionSamplingJob.Selection.values, default="best-of-n", help="The selection rule (default best-of-n).")
        parser.add_argument("--k", type=int, default=1, help="How many to keep per prompt or over all prompts (default 1).")
        parser.add_argument("--pairs", action="store_true", help="Also record each prompt's best over its worst as a judge pair.")
        parser.add_argument("--prompts", default="train", help="train (the project's train split, the default), or comma-separated prompt ids.")
        add_sampling_arguments(parser)
        parser.add_argument("--backend", choices=GenerationJob.Backend.values, default="auto")
        parser.add_argument("--no-wait", action="store_true", help="Queue the job and return at once.")

    def handle(self, *args, **options):
        project = Project.objects.filter(slug=options["project_slug"]).first()
        if project is None:
            raise CommandError(f"No project with slug {options['project_slug']!r}.")
        try:
            job = service.rejection_sampling_create(
                project=project,
                policy=version_named(options["policy"]),
                judge=version_named(options["judge"]),
                n=options["n"],
                selection=options["select"],
                k=options["k"],
                prompt_selection=prompt_selection_from(options["prompts"], "train"),
                sampling=sampling_from_options(options),
                backend=options["backend"],
                make_pairs=options["pairs"],
            )
        except ValidationError as exc:
            raise CommandError(validation_message(exc)) from exc
        self.stdout.write(f"Queued rejection sampling job {job.pk} ({job.prompts_total} prompts x {job.n} responses) on the gpu queue.")
        if not options["no_wait"]:
            follow_until_finished(job, _progress_line, self.stdout.write)
            if job.status != RejectionSamplingJob.Status.SUCCEEDED:
                raise CommandError(
                    f"Rejection sampling job {job.pk} {job.status}: {job.error or 'nothing was selected (the responses saved so far are kept).'}"
                )
            self.stdout.write(summary_table(job))


def _progress_line(job: RejectionSamplingJob) -> str:
    phase = f" ({job.get_phase_display().lower()})" if job.phase and job.is_active else ""
    return f"{job.get_status_display()}{phase}: {job.work_done}/{job.work_total} {job.progress_unit}"


def _number(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def summary_table(job: RejectionSamplingJob) -> str:
    """The job's figures as plain text: the score distribution, the selection against every response, the spread
    per prompt, and a histogram (selected responses as #, the others as .)."""
    results = job.results
    scores, selected, spread = results["scores"], results["selected"], results["per_prompt_spread"]
    rule = job.get_selection_display() + (f", K = {job.k}" if job.selection != RejectionSamplingJob.Selection.BEST_OF_N else "")
    lines = [
        f"Rejection sampling job {job.pk}: {job.prompts_total} prompts x {job.n} responses from {job.policy.name}, "
        f"judged by {job.judge.name}; {rule}.",
        "",
        f"{'':<20} {'count':>8} {'mean':>9} {'std':>9} {'min':>9} {'max':>9}",
        f"{'every response':<20} {scores['count']:>8} {_number(scores['mean']):>9} {_number(scores['std']):>9} "
        f"{_number(scores['min']):>9} {_number(scores['max']):>9}",
        f"{'selected':<20} {selected['count']:>8} {_number(selected['mean']):>9} {'':>9} "
        f"{_number(selected['min']):>9} {_number(selected['max']):>9}",
        f"{'spread per prompt':<20} {spread['count']:>8} {_number(spread['mean']):>9} {_number(spread['std']):>9} "
        f"{_number(spread['min']):>9} {_number(spread['max']):>9}",
        "",
    ]
    histogram = scores["histogram"]
    top = max(histogram["counts"], default=0) or 1
    for index, count in enumerate(histogram["counts"]):
        chosen = histogram["selected"][index]
        width = round(BAR_WIDTH * count / top)
        marked = min(width, round(BAR_WIDTH * chosen / top))
        bar = "#" * marked + "." * (width - marked)
        lines.append(f"{_number(histogram['edges'][index]):>9} to {_number(histogram['edges'][index + 1]):>9} {count:>6} {bar}")
    gain = results["gain"]
    lines += [
        "",
        f"Selected {job.selected_count} responses as accepted demonstrations (mean score {_number(selected['mean'])} against "
        f"{_number(scores['mean'])} for every response, gain {'—' if gain is None else f'{gain:+.3f}'})"
        + (f"; {job.pairs_created} new judge pairs." if job.make_pairs else "."),
        f"Train on them: python manage.py train {job.project.slug} --kind sft --base {job.policy.name} "
        f"--demo-source rejection_sampling --rejection-job {job.pk}",
    ]
    return "\n".join(lines)
