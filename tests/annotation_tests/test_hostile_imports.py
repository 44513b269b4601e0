"""Hostile input that once cost a web worker its memory or answered a 500: gzip bombs, whole-file reads, JSON nested
thousands deep, unpaired surrogates, NUL characters and more prompt ids than a query takes. Each test performs the
attack; each is refused with a 400 (or the form's 422) that says why, and memory stays flat."""

import gzip
import io
import json
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from rest_framework.authtoken.models import Token

from annotation import services
from annotation.importing import ImportFileError, Limits, parse_file
from annotation.labeling import InvalidInput, assignment_next, ranking_submit
from generation import jobs
from generation.models import ModelVersion
from tests.factories import make_item

REPO = Path(__file__).resolve().parents[2]
DEEP = 5000
MB = 1024**2


def deep_json(depth: int = DEEP) -> str:
    return "[" * depth + "]" * depth


def as_admin(api_client, admin_user):
    token, _ = Token.objects.get_or_create(user=admin_user)
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return api_client


def gzip_bomb(path: Path, line_mb: int) -> None:
    """A valid first row, then one line of ``line_mb`` MB: written a megabyte at a time (about 1 KB per MB)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip container
    chunk = b"a" * MB
    with open(path, "wb") as out:
        out.write(compressor.compress(b'{"prompt": "fine"}\n{"prompt": "'))
        for _ in range(line_mb):
            out.write(compressor.compress(chunk))
        out.write(compressor.compress(b'"}\n'))
        out.write(compressor.flush())


def import_in_child(path: Path, filename: str) -> tuple[str, float]:
    """Import ``path`` with the default limits in a fresh interpreter; returns its outcome and its peak RSS (MB).

    The parser is pure Python (no Django), so the child's peak is the parser's own: VmHWM, the high-water mark of the
    child's resident memory, C allocations included (which tracemalloc would miss). Not ``ru_maxrss``: after exec
    it still holds the peak of the process it was forked from (this test process)."""
    code = (
        "import re, sys\n"
        "from annotation.importing import ImportFileError, read_rows\n"
        "try:\n"
        "    with open(sys.argv[1], 'rb') as stream:\n"
        "        outcome = f'{sum(1 for _ in read_rows(stream, sys.argv[2]))} rows'\n"
        "except ImportFileError as exc:\n"
        "    outcome = str(exc)\n"
        "peak_kb = re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read())[1]\n"
        "print(int(peak_kb) / 1024, outcome)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path), filename], cwd=REPO, capture_output=True, text=True, check=True)
    peak, outcome = done.stdout.strip().split(" ", 1)
    return outcome, float(peak)


# --- gzip bombs and whole-file reads -------------------------------------------------------------------------------


def test_a_gzip_bomb_of_one_long_line_is_refused_at_the_line_cap_with_flat_memory(tmp_path):
    bomb = tmp_path / "bomb.jsonl.gz"
    gzip_bomb(bomb, line_mb=400)
    assert bomb.stat().st_size < 1 * MB  # 400 MB of one line
    outcome, peak_mb = import_in_child(bomb, bomb.name)
    assert outcome == "line 2: the line is longer than 10 MB", peak_mb
    print(f"gzip bomb: peak RSS {peak_mb:.0f} MB")
    assert peak_mb < 150  # the whole line would take 400 MB of bytes, then as much again as text


def test_a_gzip_file_is_refused_past_the_decompressed_cap_with_the_line():
    rows = "".join(json.dumps({"prompt": f"row {n} " + "x" * 100}) + "\n" for n in range(20_000)).encode()  # 2.3 MB
    with pytest.raises(ImportFileError) as refused:
        parse_file(io.BytesIO(gzip.compress(rows)), "rows.jsonl.gz", Limits(decompressed_bytes=1 * MB))
    assert "the file decompresses to more than 1 MB" in str(refused.value)
    assert 8_000 < refused.value.line < 10_000  # about where the first megabyte ends
    assert len(parse_file(io.BytesIO(gzip.compress(rows)), "rows.jsonl.gz", Limits(decompressed_bytes=3 * MB))) == 20_000


@pytest.mark.django_db
def test_the_import_service_reads_both_caps_from_the_settings(project, settings):
    settings.PREFLOOP_MAX_IMPORT_DECOMPRESSED_BYTES = 100_000
    rows = "".join(json.dumps({"prompt": f"row {n}"}) + "\n" for n in range(10_000)).encode()
    with pytest.raises(ImportFileError, match="decompresses to more than 100,000 bytes"):
        services.prompts_import_file(project=project, stream=io.BytesIO(gzip.compress(rows)), filename="r.jsonl.gz")
    settings.PREFLOOP_MAX_IMPORT_LINE_BYTES = 1000
    long_row = json.dumps({"prompt": "y" * 2000}).encode()
    for name, data in [("r.jsonl", long_row), ("r.json", b"[" + long_row + b"]"), ("r.csv", b"prompt\n" + b"y" * 2000)]:
        with pytest.raises(ImportFileError, match="longer than 1,000 bytes"):
            services.prompts_import_file(project=project, stream=io.BytesIO(data), filename=name)
    assert not project.prompts.exists()


def test_a_large_json_array_is_parsed_a_row_at_a_time(tmp_path):
    array = tmp_path / "rows.json"
    with open(array, "w") as out:
        out.write("[\n")
        for n in range(60_000):
            row = {"messages": [{"role": "user", "content": f"question {n} " + "z" * 800}], "metadata": {"n": n, "w": 0.5}}
            out.write(("" if n == 0 else ",\n") + json.dumps(row))
        out.write("\n]\n")
    assert array.stat().st_size > 50 * MB
    outcome, peak_mb = import_in_child(array, array.name)
    assert outcome == "60000 rows"
    print(f"JSON array: peak RSS {peak_mb:.0f} MB")
    assert peak_mb < 100  # json.load of the whole array took about 5x the file


def test_a_json_array_row_keeps_its_numbers_and_is_numbered():
    rows = parse_file(io.BytesIO(b'[{"prompt": "a", "metadata": {"w": 0.25, "n": 3}}, {"prompt": "b"}]'), "r.json")
    assert [row.line for row in rows] == [1, 2]
    assert rows[0].metadata == {"w": 0.25, "n": 3} and isinstance(rows[0].metadata["w"], float)
    with pytest.raises(ImportFileError, match="line 2: invalid JSON"):
        parse_file(io.BytesIO(b'[{"prompt": "a"}, {"prompt": }]'), "r.json")
    with pytest.raises(ImportFileError, match="line 1: a .json file must hold a list of rows"):
        parse_file(io.BytesIO(b'{"prompt": "a"}'), "r.json")


# --- JSON nested too deeply ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "data", "line"),
    [
        ("deep.jsonl", '{"prompt": "ok"}\n{"prompt": "q", "metadata": {"x": %s}}\n' % deep_json(), 2),
        ("deep.json", '[{"prompt": "ok"}, {"prompt": "q", "metadata": {"x": %s}}]' % deep_json(), 2),
        ("deep.csv", 'prompt,metadata\nok,\nq,"{""x"": %s}"\n' % deep_json(), 3),
        ("deep.jsonl", '{"prompt": "ok"}\n{"prompt": "q", "metadata": {"x": %s}}\n' % deep_json(200), 2),
    ],
)
@pytest.mark.django_db
def test_json_nested_thousands_deep_in_an_import_file_is_a_400_with_the_line(api_client, admin_user, project, filename, data, line):
    client = as_admin(api_client, admin_user)
    upload = SimpleUploadedFile(filename, data.encode())
    response = client.post(reverse("api_prompts_import", args=[project.slug]), {"file": upload}, format="multipart")
    assert response.status_code == 400, response.content
    assert response.json()["line"] == line
    assert "nested too deeply" in response.json()["detail"]
    assert not project.prompts.exists()


@pytest.mark.django_db
def test_json_nested_thousands_deep_in_a_request_body_is_a_400(api_client, admin_user, project):
    client = as_admin(api_client, admin_user)
    for url in (reverse("api_projects"), reverse("api_prompts_import", args=[project.slug])):
        response = client.post(url, data='{"rows": %s}' % deep_json(), content_type="application/json")
        assert response.status_code == 400, response.content
        assert "nested more than 100 levels deep" in response.json()["detail"]


# --- unpaired surrogates and NUL characters ------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_unpaired_surrogate_in_an_import_row_is_a_400_naming_the_line_and_field(api_client, admin_user, project):
    client = as_admin(api_client, admin_user)
    data = b'{"prompt": "fine"}\n{"prompt": "q", "chosen": "a \\ud800 b", "rejected": "c"}\n'
    response = client.post(reverse("api_prompts_import", args=[project.slug]), {"file": SimpleUploadedFile("s.jsonl", data)}, format="multipart")
    assert response.status_code == 400, response.content
    assert response.json() == {"line": 2, "detail": "line 2: `chosen` contains an unpaired surrogate (\\ud800), which is not valid text"}
    rows = '{"rows": [{"prompt": "fine"}, {"messages": [{"role": "user", "content": "\\udc00"}]}]}'
    response = client.post(reverse("api_prompts_import", args=[project.slug]), data=rows, content_type="application/json")
    assert response.status_code == 400, response.content
    assert "rows[1].messages[0].content contains an unpaired surrogate (\\udc00)" in response.json()["detail"]
    paired = '{"rows": [{"prompt": "emoji \\ud83d\\ude00"}]}'  # a surrogate pair is one character: fine
    assert client.post(reverse("api_prompts_import", args=[project.slug]), data=paired, content_type="application/json").status_code == 201
    assert not project.prompts.exclude(messages=[{"role": "user", "content": "emoji \U0001f600"}]).exists()


@pytest.mark.django_db
def test_an_unpaired_surrogate_in_a_rationale_is_a_400(api_client, labeler, project):
    item = make_item(project)
    assert assignment_next(labeler=labeler, project=project).item_id == item.pk
    ids = list(item.candidates.order_by("id").values_list("id", flat=True))
    with pytest.raises(InvalidInput, match="unpaired surrogate"):
        ranking_submit(labeler=labeler, item_id=item.pk, tiers=[[i] for i in ids], rationale="why \ud800")
    client = as_admin(api_client, labeler)
    body = '{"tiers": %s, "rationale": "why \\ud800"}' % json.dumps([[i] for i in ids])
    response = client.post(reverse("api_rank", args=[item.pk]), data=body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert "rationale contains an unpaired surrogate" in response.json()["detail"]


@pytest.mark.django_db
def test_a_nul_character_through_the_html_import_is_refused_with_the_line(client, admin_user, project):
    client.force_login(admin_user)
    data = b'{"prompt": "fine"}\n{"prompt": "nul \\u0000 here"}\n'
    response = client.post(reverse("prompts_import", args=[project.slug]), {"file": SimpleUploadedFile("nul.jsonl", data)})
    assert response.status_code == 422
    assert "Nothing was imported. nul.jsonl, line 2: `prompt` contains a NUL character" in response.content.decode()
    assert not project.prompts.exists()


# --- more prompt ids than a query takes ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_two_hundred_thousand_prompt_ids_are_a_400(api_client, admin_user, project):
    ModelVersion.objects.create(name="policy", base_model="org/policy")
    client = as_admin(api_client, admin_user)
    body = {
        "project": project.slug, "models": [{"model": "policy", "n": project.responses_per_item}],
        "prompts": {"mode": "ids", "ids": [1] * 200_000},
    }
    response = client.post(reverse("api_generation_jobs"), data=json.dumps(body), content_type="application/json")
    assert response.status_code == 400, response.content
    assert "10000" in json.dumps(response.json())
    with pytest.raises(ValidationError, match="At most 10,000 prompt ids"):
        jobs.selected_prompts(project, {"mode": "ids", "ids": [1] * 200_000})
