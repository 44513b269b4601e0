"""Command-line flags for choosing demonstrations, shared by `export_demonstrations` and `train --kind sft`.

The values land under ``demo_*`` names, so that a command that also takes the pair filter's flags (`train`) can
have both; the dates and the eval fraction are the pair filter's own flags there (``with_dates=False``)."""

from annotation.demonstrations import HELP, SOURCES, STATUSES

# option dest -> DemonstrationFilter field
FIELDS = {
    "demo_sources": "sources", "demo_statuses": "statuses", "demo_rejection_jobs": "rejection_jobs",
    "created_from": "created_from", "created_to": "created_to", "eval_fraction": "eval_fraction",
}


def add_demonstration_filter_arguments(parser, *, with_dates: bool = True, source_flags: tuple[str, ...] = ("--demo-source",)) -> None:
    group = parser.add_argument_group("which demonstrations")
    group.add_argument(*source_flags, dest="demo_sources", action="append", choices=SOURCES, help=f"{HELP['sources']} Repeatable.")
    group.add_argument("--status", dest="demo_statuses", action="append", choices=STATUSES, help=f"{HELP['statuses']} Repeatable.")
    group.add_argument(
        "--rejection-job", dest="demo_rejection_jobs", action="append", metavar="ID", help=f"{HELP['rejection_jobs']} Repeatable."
    )
    if with_dates:
        group.add_argument("--from", dest="created_from", metavar="YYYY-MM-DD", help=HELP["created_from"])
        group.add_argument("--to", dest="created_to", metavar="YYYY-MM-DD", help=HELP["created_to"])
        group.add_argument("--eval-fraction", dest="eval_fraction", metavar="X", help=HELP["eval_fraction"])


def demonstration_filter_from_options(options: dict) -> dict:
    """The filters given (a repeated value once each); annotation.demonstrations.demonstration_filter_from validates."""
    given = {field: options.get(dest) for dest, field in FIELDS.items() if options.get(dest) is not None}
    return {name: list(dict.fromkeys(value)) if isinstance(value, list) else value for name, value in given.items()}
