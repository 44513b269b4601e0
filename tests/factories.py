import factory
from django.contrib.auth import get_user_model

from annotation import services
from annotation.importing import content_hash
from annotation.models import Demonstration, Project, Prompt


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    name = factory.Sequence(lambda n: f"Project {n}")
    slug = factory.Sequence(lambda n: f"project-{n}")
    guidelines = "Rank the **best** response first."
    responses_per_item = 4
    rankings_per_item = 1


class PromptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prompt

    project = factory.SubFactory(ProjectFactory)
    messages = factory.Sequence(lambda n: [{"role": "user", "content": f"Question number {n}?"}])
    content_hash = factory.LazyAttribute(lambda prompt: content_hash(prompt.messages))
    source = "factory"


class DemonstrationFactory(factory.django.DjangoModelFactory):
    """A demonstration made directly (an imported SFT row by default: accepted, no labeler); pass ``source``,
    ``status``, ``labeler`` and the rest as a test needs."""

    class Meta:
        model = Demonstration

    prompt = factory.SubFactory(PromptFactory)
    project = factory.LazyAttribute(lambda demonstration: demonstration.prompt.project)
    text = factory.Sequence(lambda n: f"A helpful answer, number {n}.")
    text_hash = factory.LazyAttribute(lambda demonstration: content_hash(demonstration.text))
    source = Demonstration.Source.IMPORT
    status = Demonstration.Status.ACCEPTED


def user_with_role(role: str, username: str | None = None):
    username = username or f"{role}-{get_user_model().objects.count() + 1}"
    return services.user_create(username=username, password="pw-" + username, role=role)


def make_item(project, k: int | None = None, texts: list[str] | None = None):
    """A prompt of ``project`` with K generated candidates, put in the labeling queue."""
    from annotation.labeling import ranking_item_create
    from generation.models import Candidate, ModelVersion

    version, _ = ModelVersion.objects.get_or_create(name="test-policy", defaults={"base_model": "org/test-policy"})
    prompt = PromptFactory(project=project)
    k = k or project.responses_per_item
    texts = texts or [f"Response {n} to prompt {prompt.pk}" for n in range(k)]
    candidates = [
        Candidate.objects.create(prompt=prompt, text=text, text_hash=content_hash(text), source="generated", model_version=version)
        for text in texts
    ]
    return ranking_item_create(prompt=prompt, candidates=candidates)


def as_letters(labeler, item, tiers):
    """Tiers of candidate ids as this labeler would send them: the letters of their display order for the item."""
    from annotation.ranking import display_order, letter_tiers

    order = display_order(list(item.candidates.values_list("id", flat=True)), labeler_id=labeler.pk, item_id=item.pk)
    return [letter_tiers([tier], order)[0] for tier in tiers]
