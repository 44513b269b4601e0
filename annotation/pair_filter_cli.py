"""Command-line flags for choosing preference pairs, shared by `train` and `export_preferences`."""

from django.core.management.base import CommandError

from annotation.models import Project
from annotation.pairs import FILTER_OPTIONS

# Values are taken as typed: annotation.pairs.pair_filter_from validates them and names a bad one.
METAVARS = {"names": "NAME", "fraction": "X", "date": "YYYY-MM-DD"}


def add_pair_filter_arguments(parser) -> None:
    """One flag per field of annotation.pairs.PairFilter (its ``flag`` metadata); the value lands under the field's name."""
    filters = parser.add_argument_group("which pairs")
    for option in FILTER_OPTIONS:
        if option.kind == "bool":
            # The flag turns off what is on by default (--include-flagged: exclude_flagged false).
            off = f"Turn off the default: {option.help[0].lower()}{option.help[1:]}"
            filters.add_argument(option.flag, dest=option.name, action="store_const", const=not option.default, help=off)
        elif option.kind == "names":
            choices = None if callable(option.choices) else [value for value, _ in option.choices]
            filters.add_argument(
                option.flag, dest=option.name, action="append", choices=choices, metavar=None if choices else METAVARS["names"],
                help=f"{option.description} Repeatable.",
            )
        else:
            filters.add_argument(option.flag, dest=option.name, metavar=METAVARS[option.kind], help=option.description)


def pair_filter_from_options(options: dict) -> dict:
    """The filters given on the command line (a repeated list value once each): the rest take their defaults."""
    given = {option.name: options[option.name] for option in FILTER_OPTIONS if options[option.name] is not None}
    return {name: list(dict.fromkeys(value)) if isinstance(value, list) else value for name, value in given.items()}


def projects_from_slugs(slugs: list[str]) -> list[Project]:
    projects = {project.slug: project for project in Project.objects.filter(slug__in=slugs)}
    missing = [slug for slug in slugs if slug not in projects]
    if missing:
        raise CommandError(f"No project with slug {', '.join(repr(slug) for slug in missing)}.")
    return [projects[slug] for slug in dict.fromkeys(slugs)]
