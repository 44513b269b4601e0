"""A broker outage. Jobs launched while the broker is down are accepted and say that they wait for the broker; pages and
labeling keep working; once the broker is back, Celery beat's reaper sends them and they run. A real Redis server
started by the test on its own port (stopped for the outage, started again on the same port), real workers and beat."""

import socket
import subprocess
import time

import pytest

from annotation.labeling import ranking_item_create
from generation.models import Candidate, GenerationJob
from tests.factories import PromptFactory, user_with_role
from tests.test_demo import free_port
from tests.training_tests.conftest import SMALL_RUN, ranked_project, tiny_version  # noqa: F401 - fixtures
from tests.worker import Beat, Worker, broker, wait_until
from training.models import TrainingRun

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

FAST_REAPER = {"PREFLOOP_JOB_REAPER_SECONDS": "2"}


class RedisServer:
    """redis-server on ``port``, keeping nothing on disk: stopping it loses every message, as an outage may."""

    def __init__(self, port: int, folder):
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        wait_until(lambda: _answers(port), 20, f"for redis-server on port {port}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def launch_both(api_client, project, version):
    """A generation job and a training run, through the API as an admin would."""
    prompt = PromptFactory(project=project)
    generation = api_client.post("/api/generation-jobs/", {
        "project": project.slug, "models": [{"model": version.name, "n": 3}], "prompts": {"mode": "ids", "ids": [prompt.pk]},
        "sampling": {"max_new_tokens": 8, "seed": 1}, "backend": "transformers",
    }, format="json")
    training = api_client.post("/api/training-runs/", {
        "kind": "dpo", "base_version": version.name, "projects": [project.slug], "settings": {**SMALL_RUN, "epochs": 1},
    }, format="json")
    return generation, training


def test_jobs_launched_while_the_broker_is_down_are_sent_and_run_when_it_is_back(
    tmp_path, api_client, admin_user, ranked_project, tiny_version,  # noqa: F811 - fixtures
):
    port = free_port()
    with broker(f"redis://127.0.0.1:{port}/0", FAST_REAPER) as env:
        api_client.force_authenticate(admin_user)
        started = time.monotonic()
        generation, training = launch_both(api_client, ranked_project, tiny_version)
        launch_seconds = time.monotonic() - started
        for response in (generation, training):
            assert response.status_code == 201, response.content[:500]
            queue = response.json()["queue"]
            assert queue["waiting_for_broker"] is True and "broker could not be reached" in queue["text"]
        job = GenerationJob.objects.get(pk=generation.json()["id"])
        run = TrainingRun.objects.get(pk=training.json()["id"])
        assert (job.status, job.dispatched_at, run.status, run.dispatched_at) == ("queued", None, "queued", None)

        # Pages and labeling do not need the broker.
        api_client.force_authenticate(None)
        api_client.force_login(admin_user)
        page = api_client.get(f"/jobs/generation/{job.pk}/")
        assert page.status_code == 200 and b"broker could not be reached" in page.content
        labeler = user_with_role("labeler", "outage-labeler")
        prompt = PromptFactory(project=ranked_project)
        ranking_item_create(prompt=prompt, candidates=[
            Candidate.objects.create(prompt=prompt, text=text, text_hash=text, source="generated", model_version=tiny_version)
            for text in ("One.", "Two.", "Three.")
        ])
        api_client.force_login(labeler)
        item = api_client.get(f"/api/projects/{ranked_project.slug}/next/").json()
        keys = [response["key"] for response in item["responses"]]
        submitted = api_client.post(f"/api/items/{item['item']}/ranking/", {"tiers": [[key] for key in keys]}, format="json")
        assert submitted.status_code == 201, submitted.content[:500]

        redis = RedisServer(port, tmp_path)
        worker = beat = None
        try:
            worker = Worker("gpu,default", extra_env=env)
            beat = Beat(tmp_path / "beat-schedule", extra_env=env)
            finished = ("succeeded", "failed", "cancelled")
            wait_until(
                lambda: GenerationJob.objects.get(pk=job.pk).status in finished and TrainingRun.objects.get(pk=run.pk).status in finished,
                300, f"for both jobs to run once the broker is back:\n{worker.log[-3000:]}",
            )
        finally:
            for process in (beat, worker):
                if process:
                    process.stop()
            redis.stop()
    job.refresh_from_db(), run.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert run.status == "succeeded", run.error
    assert job.dispatched_at and run.dispatched_at
    assert "Sent generation job" in worker.log or "Sent training run" in worker.log, worker.log[-3000:]
    print(f"launching both with the broker down took {launch_seconds:.2f} s")
