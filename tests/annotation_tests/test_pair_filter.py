"""The pair filter has one definition, annotation.pairs.PairFilter: the forms, the API (the ``pair_filter`` object
and the pairs list's query parameters) and the command-line flags are built from its fields, and input left alone
in any of them gives the dataclass's defaults."""

import argparse
from dataclasses import fields

import pytest

from annotation.api.data import PAIR_LIST_FILTERS, pair_filter_from_query
from annotation.api.serializers import PairFilterSerializer
from annotation.forms import PairFilterForm
from annotation.pair_filter_cli import add_pair_filter_arguments, pair_filter_from_options
from annotation.pairs import PairFilter, SplitRule, held_out_by_hash, pair_filter_from, split_rule_description
from training.forms import TrainingRunForm

NAMES = [f.name for f in fields(PairFilter)]


def flags(*args: str) -> dict:
    parser = argparse.ArgumentParser()
    add_pair_filter_arguments(parser)
    return vars(parser.parse_args(args))


def test_every_field_is_a_form_field_an_api_field_a_query_parameter_and_a_flag():
    assert [name for name in PairFilterForm.base_fields] == NAMES == PairFilterForm.FILTER_FIELDS
    assert set(NAMES) <= set(TrainingRunForm.base_fields)
    assert list(PairFilterSerializer().fields) == NAMES
    assert set(NAMES) <= set(flags())
    assert [option.name for option in PAIR_LIST_FILTERS] == [name for name in NAMES if name != "eval_fraction"]


def test_defaults_and_help_come_from_the_dataclass():
    default = PairFilter()
    form = PairFilterForm()
    assert form.fields["sources"].initial == list(default.sources) and form.fields["eval_fraction"].initial == default.eval_fraction
    assert form.fields["exclude_flagged"].initial is default.exclude_flagged
    api = PairFilterSerializer().fields
    for f in fields(PairFilter):
        assert api[f.name].help_text.startswith(f.metadata["help"]) and form.fields[f.name].help_text == f.metadata["help"]
    assert api["eval_fraction"].help_text.endswith(f"Default: {default.eval_fraction}.") and api["eval_fraction"].max_value == 0.9


@pytest.mark.django_db
def test_input_left_alone_gives_the_default_filter():
    assert pair_filter_from(pair_filter_from_options(flags())) == PairFilter()
    assert pair_filter_from(pair_filter_from_query({})) == PairFilter()
    initial = {name: field.initial for name, field in PairFilterForm().fields.items() if field.initial is not None}
    form = PairFilterForm({name: "on" if value is True else value for name, value in initial.items()})
    assert form.is_valid(), form.errors
    assert pair_filter_from(form.pair_filter()) == PairFilter()


def test_flags_and_query_parameters_are_read_as_before():
    options = flags(
        "--source", "human", "--source", "human", "--include-flagged", "--from", "2026-11-01", "--model-version", "a",
        "--eval-fraction", "0.3",
    )
    assert pair_filter_from_options(options) == {
        "sources": ["human"], "exclude_flagged": False, "created_from": "2026-11-01", "model_versions": ["a"], "eval_fraction": "0.3",
    }
    query = {"sources": "human,import", "exclude_flagged": "no", "model_versions": "a, b", "eval_fraction": "0.5", "page": "2"}
    assert pair_filter_from_query(query) == {"sources": ["human", "import"], "exclude_flagged": False, "model_versions": ["a", "b"]}
    assert pair_filter_from_query({"exclude_flagged": "true", "min_agreement": "0.5"}) == {"exclude_flagged": True, "min_agreement": "0.5"}


def test_one_rule_holds_prompts_out_by_content_hash():
    just_below, just_above = "19999999" + "0" * 56, "1999999a" + "0" * 56  # 0x1999999a / 2**32 is just above 0.1
    assert held_out_by_hash(just_below, 0.1) and not held_out_by_hash(just_above, 0.1) and not held_out_by_hash("0" * 64, 0)
    rule = SplitRule(marked=False, eval_fraction=0.1)
    assert rule.is_heldout("train", just_below) and not rule.is_heldout("heldout", just_above)
    assert split_rule_description(0.1) == "prompts marked held-out (or 10% of prompts by content hash when none is marked)"
