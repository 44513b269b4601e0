"""Command-line flags for choosing preference pairs, shared by `train` and `export_preferences`."""

from django.core.management.base import CommandError

from annotation.models import PreferencePair, Project

# Taken as typed: annotation.pairs.pair_filter_from validates them and names a bad one.
VALUE_OPTIONS = ("min_agreement", "created_from", "created_to", "eval_fraction")


def add_pair_filter_arguments(parser) -> None:
    filters = parser.add_argument_group("which pairs")
    filters.add_argument("--source", action="append", choices=PreferencePair.Source.values, help="Pair source (repeatable); default all.")
    filters.add_argument("--include-flagged", action="store_true", help="Keep the pairs of flagged and retired items.")
    filters.add_argument("--min-agreement", metavar="X", help="Only human pairs of items whose labelers agree at least this much (0-1).")
    filters.add_argument("--from", dest="created_from", metavar="YYYY-MM-DD", help="Pairs created on or after this day.")
    filters.add_argument("--to", dest="created_to", metavar="YYYY-MM-DD", help="Pairs created on or before this day.")
    filters.add_argument("--model-version", action="append", dest="model_versions", metavar="NAME",
                         help="Only pairs whose two responses come from these model versions (repeatable).")
    filters.add_argument("--eval-fraction", metavar="X", help="With no prompt marked held-out, hold out this share of prompts (0-0.9).")


def pair_filter_from_options(options: dict) -> dict:
    pair_filter = {key: options[key] for key in VALUE_OPTIONS if options[key] is not None}
    if options["source"]:
        pair_filter["sources"] = list(dict.fromkeys(options["source"]))
    if options["include_flagged"]:
        pair_filter["exclude_flagged"] = False
    if options["model_versions"]:
        pair_filter["model_versions"] = options["model_versions"]
    return pair_filter


def projects_from_slugs(slugs: list[str]) -> list[Project]:
    projects = {project.slug: project for project in Project.objects.filter(slug__in=slugs)}
    missing = [slug for slug in slugs if slug not in projects]
    if missing:
        raise CommandError(f"No project with slug {', '.join(repr(slug) for slug in missing)}.")
    return [projects[slug] for slug in dict.fromkeys(slugs)]
