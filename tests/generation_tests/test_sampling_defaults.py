"""Sampling defaults have one definition, generation.backends.base.Sampling: the job form, the API's description,
the `generate` flags, the service's validation and the demo's first job take them from it."""

from dataclasses import fields

import pytest

from generation import jobs
from generation.api.serializers import SamplingSerializer
from generation.backends.base import Sampling
from generation.forms import GenerationJobForm
from generation.management.commands.generate import Command as Generate
from generation.models import ModelVersion
from tests.factories import ProjectFactory, PromptFactory

DEFAULT = Sampling()


def test_the_form_the_flags_the_api_and_the_service_take_the_dataclass_defaults():
    form = GenerationJobForm(versions=[], k=4)
    assert {name: form.fields[name].initial for name in ("temperature", "top_p", "max_new_tokens", "seed")} == {
        "temperature": DEFAULT.temperature, "top_p": DEFAULT.top_p, "max_new_tokens": DEFAULT.max_new_tokens, "seed": DEFAULT.seed,
    }
    options = vars(Generate().create_parser("manage.py", "generate").parse_args(["demo", "--model", "m", "--n", "4"]))
    assert {f.name: options[f.name] for f in fields(Sampling)} == DEFAULT.as_dict()
    assert jobs.sampling_from({}) == DEFAULT
    api = SamplingSerializer().fields
    assert f"default {DEFAULT.temperature}" in api["temperature"].help_text and str(DEFAULT.max_new_tokens) in api["max_new_tokens"].help_text


@pytest.mark.django_db
def test_the_demo_job_samples_with_the_defaults_and_shorter_answers():
    project = ProjectFactory()
    PromptFactory(project=project)
    model = ModelVersion.objects.create(name="policy", base_model="org/policy")
    job = jobs.first_generation_queue(project=project, model=model)
    assert job.sampling == {**DEFAULT.as_dict(), "max_new_tokens": 128}
