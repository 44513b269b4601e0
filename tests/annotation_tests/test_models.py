"""Constraints that the database itself enforces, whatever code writes the rows."""

import pytest
from django.db import IntegrityError, transaction

from annotation.models import PreferencePair, Project
from generation.models import Candidate
from tests.factories import PromptFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(("k", "rankings"), [(1, 1), (9, 1), (4, 0), (4, 6)])
def test_project_ranges_are_database_constraints(k, rankings):
    with pytest.raises(IntegrityError), transaction.atomic():
        Project.objects.create(name="P", slug="p", responses_per_item=k, rankings_per_item=rankings)


def test_prompt_content_is_unique_per_project(project):
    prompt = PromptFactory(project=project)
    with pytest.raises(IntegrityError), transaction.atomic():
        PromptFactory(project=project, messages=prompt.messages)


def test_generated_candidates_need_a_model_and_texts_are_unique_per_prompt(project):
    prompt = PromptFactory(project=project)
    with pytest.raises(IntegrityError), transaction.atomic():
        Candidate.objects.create(prompt=prompt, text="x", text_hash="x", source="generated")
    Candidate.objects.create(prompt=prompt, text="x", text_hash="x", source="import")
    with pytest.raises(IntegrityError), transaction.atomic():
        Candidate.objects.create(prompt=prompt, text="x", text_hash="x", source="import")


def test_pairs_must_differ_and_human_pairs_need_a_ranking(project):
    prompt = PromptFactory(project=project)
    a = Candidate.objects.create(prompt=prompt, text="a", text_hash="a", source="import")
    b = Candidate.objects.create(prompt=prompt, text="b", text_hash="b", source="import")
    with pytest.raises(IntegrityError), transaction.atomic():
        PreferencePair.objects.create(project=project, prompt=prompt, chosen=a, rejected=a, source="import")
    with pytest.raises(IntegrityError), transaction.atomic():
        PreferencePair.objects.create(project=project, prompt=prompt, chosen=a, rejected=b, source="human")
    PreferencePair.objects.create(project=project, prompt=prompt, chosen=a, rejected=b, source="import")
    with pytest.raises(IntegrityError), transaction.atomic():
        PreferencePair.objects.create(project=project, prompt=prompt, chosen=a, rejected=b, source="import")
