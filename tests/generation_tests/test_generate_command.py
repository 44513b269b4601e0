"""`python manage.py generate`: queues a job (the worker runs it; see test_worker.py) and refuses bad input."""

import pytest
from django.core.management import CommandError, call_command

from generation.models import GenerationJob, ModelVersion
from tests.factories import PromptFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def versions(db):
    return [ModelVersion.objects.create(name=name, base_model=f"org/{name}") for name in ("base", "round1")]


def test_generate_queues_a_job_mixing_two_models(project, versions, capsys):
    prompts = [PromptFactory(project=project) for _ in range(3)]
    call_command(
        "generate", project.slug, "--model", "base", "--n", "2", "--model", "round1", "--n", "2",
        "--prompts", "ids", "--ids", f"{prompts[0].pk},{prompts[1].pk}", "--temperature", "0.5", "--stop", "###",
        "--backend", "transformers", "--no-wait",
    )
    job = GenerationJob.objects.get()
    assert [(e.model_version.name, e.n) for e in job.model_plan.order_by("id")] == [("base", 2), ("round1", 2)]
    assert (job.prompts_total, job.backend, job.sampling["temperature"], job.sampling["stop"]) == (2, "transformers", 0.5, ["###"])
    assert f"Queued generation job {job.pk} (2 prompts)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "base", "--n", "3"], "add up to the project's K"),
        (["--model", "ghost", "--n", "4"], "No model version named 'ghost'"),
        (["--model", "base", "--n", "2", "--model", "round1"], "Give one --n after each --model"),
        (["--model", "base", "--n", "4", "--prompts", "ids", "--ids", "a,b"], "comma-separated whole numbers"),
        (["--model", "base", "--n", "4", "--top-p", "0"], "top_p"),
    ],
)
def test_generate_refuses_bad_input(project, versions, args, message):
    PromptFactory(project=project)
    with pytest.raises(CommandError, match=message):
        call_command("generate", project.slug, *args, "--no-wait")
    assert not GenerationJob.objects.exists()
