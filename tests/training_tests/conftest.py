from io import StringIO

import pytest
from django.core.management import call_command
from rest_framework.authtoken.models import Token

from annotation.labeling import assignment_next, ranking_item_create, ranking_submit
from annotation.models import Prompt
from generation.services import model_version_register
from tests.factories import PromptFactory, user_with_role
from tests.tiny_models import build_reward_adapter, build_tiny_model_with_other_tokenizer
from training import services

SMALL_RUN = {"lora_rank": 8, "lora_alpha": 16, "target_modules": "q_proj,v_proj", "batch_size": 2, "max_length": 128}


class Recorder:
    """A trainer Reporter that keeps what it is told; asks to stop after ``stop_after`` steps."""

    def __init__(self, stop_after: int | None = None):
        self.total, self.examples, self.stop_after, self.step_ends = None, None, stop_after, 0
        self.logs: list[tuple[int, str, dict]] = []
        self.samples: list[tuple[int, list[dict]]] = []

    def prepared(self, examples):
        self.examples = examples

    def started(self, total_steps):
        self.total = total_steps

    def logged(self, step, split, metrics):
        self.logs.append((step, split, metrics))

    def should_stop(self):  # asked at the end of every step
        self.step_ends += 1
        return self.step_ends == self.stop_after

    def sampled(self, step, samples):
        self.samples.append((step, samples))


def authenticated(api_client, user):
    token, _ = Token.objects.get_or_create(user=user)
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return api_client


def train(*args) -> str:
    """``manage.py train`` with these arguments; what it printed."""
    out = StringIO()
    call_command("train", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def tiny_version(db, tiny_model):
    return model_version_register(name="tiny-policy", base_model=tiny_model)


def rank_items(project, version, labeler, prompts: int = 6, heldout: int = 2):
    """``prompts`` items of K=3 candidates from ``version``, each ranked best-first by ``labeler`` (3 pairs per
    ranking); the last ``heldout`` prompts are marked held-out. Returns the rankings."""
    from annotation.importing import content_hash
    from generation.models import Candidate

    rankings = []
    start = project.prompts.count()
    for index in range(prompts):
        n = start + index
        split = Prompt.Split.HELDOUT if index >= prompts - heldout else Prompt.Split.TRAIN
        prompt = PromptFactory(project=project, split=split, messages=[{"role": "user", "content": f"Say something kind, number {n}."}])
        texts = [f"You are wonderful, friend number {n}!", f"You are fine, number {n}.", "Go away."]
        candidates = [
            Candidate.objects.create(prompt=prompt, text=t, text_hash=content_hash(t), source="generated", model_version=version)
            for t in texts
        ]
        item = ranking_item_create(prompt=prompt, candidates=candidates)
        assignment = assignment_next(labeler=labeler, project=project)
        assert assignment.item_id == item.pk
        rankings.append(ranking_submit(labeler=labeler, item_id=item.pk, tiers=[[c.pk] for c in candidates]))
    return rankings


@pytest.fixture
def ranked_project(project, tiny_version):
    project.responses_per_item = 3
    project.save()
    rank_items(project, tiny_version, user_with_role("labeler", "lena-labeler"))
    return project


def demonstrate(project, prompts: int = 12, heldout: int = 4, source: str = "import", status: str = "accepted", labeler=None):
    """``prompts`` prompts of ``project``, each with one demonstration (an imported, accepted SFT row by default);
    the last ``heldout`` prompts are marked held-out. Returns the demonstrations."""
    from tests.factories import DemonstrationFactory

    start = project.prompts.count()
    made = []
    for index in range(prompts):
        n = start + index
        split = Prompt.Split.HELDOUT if index >= prompts - heldout else Prompt.Split.TRAIN
        prompt = PromptFactory(project=project, split=split, messages=[{"role": "user", "content": f"Say something kind, number {n}."}])
        made.append(DemonstrationFactory(
            prompt=prompt, text=f"You are wonderful, friend number {n}!", source=source, status=status, labeler=labeler,
        ))
    return made


@pytest.fixture
def demonstrated_project(project):
    """12 accepted demonstrations (imported SFT rows), 4 of them on held-out prompts."""
    demonstrate(project)
    return project


# --- online runs (GRPO, RLOO) ---------------------------------------------------------------------------------------

ONLINE_RUN = {
    "lora_rank": 8, "lora_alpha": 16, "target_modules": "q_proj,v_proj", "batch_size": 4, "max_length": 128,
    "max_completion_length": 12, "num_generations": 4, "max_steps": 2,
}


@pytest.fixture(scope="session")
def reward_adapter(tiny_model, tmp_path_factory):
    return str(build_reward_adapter(tiny_model, tmp_path_factory.mktemp("online-reward")))


@pytest.fixture(scope="session")
def other_reward_model(tmp_path_factory):
    base = build_tiny_model_with_other_tokenizer(tmp_path_factory.mktemp("online-other-base"))
    return str(base), str(build_reward_adapter(base, tmp_path_factory.mktemp("online-other-reward")))


@pytest.fixture
def reward_version(db, tiny_model, reward_adapter):
    return model_version_register(name="tiny-reward", base_model=tiny_model, adapter_path=reward_adapter, kind="reward")


@pytest.fixture
def prompted_project(project):
    """8 train prompts and 2 held-out ones."""
    for n in range(10):
        split = Prompt.Split.HELDOUT if n >= 8 else Prompt.Split.TRAIN
        PromptFactory(project=project, split=split, messages=[{"role": "user", "content": f"Say something kind, number {n}."}])
    return project


def launch(project, base, reward, kind="grpo", **overrides):
    options = {"settings": ONLINE_RUN, **overrides}
    return services.training_run_create(kind=kind, base_version=base, projects=[project], reward_version=reward, **options)
