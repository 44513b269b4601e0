import factory
from django.contrib.auth import get_user_model

from annotation import services
from annotation.importing import content_hash
from annotation.models import Project, Prompt


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


def user_with_role(role: str, username: str | None = None):
    username = username or f"{role}-{get_user_model().objects.count() + 1}"
    return services.user_create(username=username, password="pw-" + username, role=role)
