"""What `manage.py serve` starts on a machine: one gpu worker per GPU, each pinned to its GPU; which GPUs (--gpus, else
CUDA_VISIBLE_DEVICES, else nvidia-smi, else none); a machine that joins a deployment (--workers-only) and the queues it
serves (--queues). The GPU lookups run real executables (a stand-in nvidia-smi on PATH); nothing here starts Celery."""

import stat
import sys

import pytest
from django.core.management import CommandError, call_command

from annotation.management.commands.serve import gpu_workers_sentence, queue_names
from config import processes


def names(specs) -> list[str]:
    return [spec.name for spec in specs]


def option(spec, flag: str) -> str:
    return spec.argv[spec.argv.index(flag) + 1]


def test_a_gpu_worker_is_pinned_to_its_gpu_and_named_after_it():
    pinned = processes.gpu_worker("2")
    assert pinned.name == "worker-gpu2"
    assert option(pinned, "--hostname") == "gpu2@%h" and option(pinned, "--queues") == "gpu"
    assert pinned.env["CUDA_VISIBLE_DEVICES"] == "2"
    assert option(pinned, "--concurrency") == "1" and option(pinned, "--max-tasks-per-child") == "1"

    unpinned = processes.gpu_worker()
    assert (unpinned.name, option(unpinned, "--hostname"), dict(unpinned.env)) == ("worker-gpu", "gpu@%h", {})


def test_a_process_gets_the_supervisors_environment_with_its_own_laid_over_it(tmp_path):
    seen = tmp_path / "seen"
    script = "import os, sys; open(sys.argv[1], 'w').write(os.environ['CUDA_VISIBLE_DEVICES'] + ' ' + os.environ['KEPT'])"
    child = processes.Child(processes.ProcessSpec("show", [sys.executable, "-c", script, str(seen)], {"CUDA_VISIBLE_DEVICES": "3"}))
    child.start({"KEPT": "from the supervisor", "CUDA_VISIBLE_DEVICES": "0,1,2,3"})
    assert child.process.wait(timeout=30) == 0
    assert seen.read_text() == "3 from the supervisor"


def test_the_main_machine_runs_the_web_server_every_worker_and_beat():
    web = processes.web("127.0.0.1", 8000, workers=2)
    specs = processes.machine_processes(queues=["default", "gpu"], gpus=["0", "1"], web=web)
    assert names(specs) == ["web", "worker-default", "worker-gpu0", "worker-gpu1", "beat"]
    assert [option(spec, "--hostname") for spec in specs[1:4]] == ["default@%h", "gpu0@%h", "gpu1@%h"]
    assert names(processes.machine_processes(queues=["default", "gpu"], gpus=[], web=web)) == ["web", "worker-default", "worker-gpu", "beat"]


def test_a_machine_that_joins_a_deployment_runs_neither_the_web_server_nor_beat():
    assert names(processes.machine_processes(queues=["default", "gpu"], gpus=["0", "2"])) == ["worker-default", "worker-gpu0", "worker-gpu2"]
    assert names(processes.machine_processes(queues=["gpu"], gpus=["0", "2"])) == ["worker-gpu0", "worker-gpu2"]
    assert names(processes.machine_processes(queues=["gpu"], gpus=[])) == ["worker-gpu"]
    assert names(processes.machine_processes(queues=["default"], gpus=["0", "2"])) == ["worker-default"]


def test_gpu_ids_are_distinct_non_negative_integers():
    assert processes.parse_gpu_ids("0,2") == ["0", "2"]
    assert processes.parse_gpu_ids(" 3 , 01") == ["3", "1"]
    for text, why in [("0,0", "more than once"), ("1,01", "more than once"), ("-1", "non-negative integers"), ("a", "non-negative integers"),
                      ("", "non-negative integers"), ("0,,1", "non-negative integers"), ("1.5", "non-negative integers"), ("²", "non-negative integers")]:
        with pytest.raises(ValueError, match=why):
            processes.parse_gpu_ids(text)


@pytest.mark.parametrize(("arguments", "message"), [
    (["--gpus", "0,0"], "names a GPU more than once"),
    (["--gpus", "0,x"], "'0,x' is not a list of GPU indexes"),
    (["--gpus", ""], "is not a list of GPU indexes"),
    (["--queues", "default,cpu"], "Unknown queue 'cpu': choose among default, gpu"),
    (["--queues", ""], "Unknown queue ''"),
])
def test_serve_refuses_bad_gpus_and_queues_before_starting_anything(arguments, message):
    with pytest.raises(CommandError, match=message):
        call_command("serve", "--workers-only", *arguments)


def test_queue_names_keep_their_order_once_each():
    assert queue_names("gpu") == ["gpu"]
    assert queue_names("gpu, default,gpu") == ["gpu", "default"]


def fake_nvidia_smi(folder, body: str) -> str:
    """An nvidia-smi on a PATH of its own that answers the query serve sends with ``body`` (a shell script)."""
    command = folder / "nvidia-smi"
    command.write_text(f'#!/bin/sh\n[ "$1 $2" = "--query-gpu=index --format=csv,noheader" ] || exit 64\n{body}\n')
    command.chmod(command.stat().st_mode | stat.S_IXUSR)
    return str(folder)


def test_without_gpus_serve_takes_cuda_visible_devices_first(tmp_path):
    path = fake_nvidia_smi(tmp_path, "printf '0\\n1\\n2\\n3\\n'")
    assert processes.visible_gpus({"CUDA_VISIBLE_DEVICES": "1,3", "PATH": path}) == (["1", "3"], "from CUDA_VISIBLE_DEVICES")
    assert processes.visible_gpus({"CUDA_VISIBLE_DEVICES": "", "PATH": path}) == ([], "CUDA_VISIBLE_DEVICES is empty")


def test_without_cuda_visible_devices_serve_asks_nvidia_smi(tmp_path):
    assert processes.visible_gpus({"PATH": fake_nvidia_smi(tmp_path, "printf '0\\n1\\n'")}) == (["0", "1"], "from nvidia-smi")


def test_no_gpu_where_nvidia_smi_fails_or_is_missing(tmp_path, caplog):
    failing = fake_nvidia_smi(tmp_path, "echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'; exit 9")
    assert processes.visible_gpus({"PATH": failing}) == ([], "no CUDA_VISIBLE_DEVICES and no working nvidia-smi")
    assert "nvidia-smi failed (exit 9): NVIDIA-SMI has failed" in caplog.text
    empty = tmp_path / "empty"
    empty.mkdir()
    assert processes.visible_gpus({"PATH": str(empty)}) == ([], "no CUDA_VISIBLE_DEVICES and no working nvidia-smi")


def test_serve_says_which_gpu_workers_start_on_which_gpu():
    assert gpu_workers_sentence(["0", "2"], "from --gpus") == "gpu workers: worker-gpu0 on GPU 0, worker-gpu2 on GPU 2 (from --gpus)."
    assert gpu_workers_sentence([], "CUDA_VISIBLE_DEVICES is empty") == "One gpu worker, pinned to no GPU: none found (CUDA_VISIBLE_DEVICES is empty)."


@pytest.mark.django_db
def test_a_workers_only_machine_is_warned_of_what_only_this_machine_can_reach(settings):
    from django.db import connection

    from annotation.management.commands.serve import machine_local_services

    settings.CELERY_BROKER_URL, settings.ARTIFACTS_URL = "filesystem://", "/srv/prefloop"
    warnings = machine_local_services()
    assert any("embedded filesystem broker" in w for w in warnings) and any("/srv/prefloop" in w for w in warnings)
    assert any("SQLite" in w for w in warnings) == (connection.vendor == "sqlite")
    settings.CELERY_BROKER_URL, settings.ARTIFACTS_URL = "redis://broker:6379/0", "s3://bucket/prefloop"
    assert [w for w in machine_local_services() if "SQLite" not in w] == []
