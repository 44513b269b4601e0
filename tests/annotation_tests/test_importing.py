"""The file parser alone: every accepted format, and broken files rejected with the line number."""

import gzip
import io
import json
import os
from pathlib import Path

import pytest

from annotation.importing import ImportFileError, content_hash, parse_file, parse_hh_transcript

# The real HH-RLHF sample lies in shared/, beside the repository (CI always has it; a plain clone may not).
HH_FILE = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "hh-rlhf-harmless-base-test.jsonl.gz"
needs_hh_file = pytest.mark.skipif(
    not HH_FILE.exists() and os.environ.get("CI") != "true", reason=f"{HH_FILE} is not beside the repository"
)


def jsonl(*rows) -> io.BytesIO:
    return io.BytesIO("".join(json.dumps(row) + "\n" for row in rows).encode())


def parse_error(data: bytes, filename: str = "") -> ImportFileError:
    with pytest.raises(ImportFileError) as caught:
        parse_file(io.BytesIO(data), filename)
    return caught.value


def test_prompt_strings_become_one_user_message():
    rows = parse_file(jsonl({"prompt": "Hi there?", "id": 7, "topic": "greeting"}))
    assert rows[0].messages == [{"role": "user", "content": "Hi there?"}]
    assert rows[0].external_id == "7"
    assert rows[0].metadata == {"topic": "greeting"}
    assert not rows[0].is_preference


def test_messages_keep_system_and_turns_and_drop_extra_keys():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!", "name": "bot"},
        {"role": "user", "content": "How are you?"},
    ]
    rows = parse_file(jsonl({"messages": messages, "split": "test", "metadata": {"lang": "en"}}))
    assert rows[0].messages[2] == {"role": "assistant", "content": "Hello!"}
    assert rows[0].split == "heldout"
    assert rows[0].metadata == {"lang": "en"}


def test_trl_preference_rows_with_strings():
    row = parse_file(jsonl({"prompt": "2+2?", "chosen": "4", "rejected": "5"}))[0]
    assert row.messages == [{"role": "user", "content": "2+2?"}]
    assert (row.chosen, row.rejected) == ("4", "5")
    assert row.is_preference


def test_trl_conversational_preference_rows():
    row = parse_file(
        jsonl(
            {
                "prompt": [{"role": "user", "content": "Capital of France?"}],
                "chosen": [{"role": "assistant", "content": "Paris."}],
                "rejected": [{"role": "assistant", "content": "Lyon."}],
            }
        )
    )[0]
    assert row.messages == [{"role": "user", "content": "Capital of France?"}]
    assert (row.chosen, row.rejected) == ("Paris.", "Lyon.")


def test_trl_implicit_prompt_rows_share_all_but_the_last_turn():
    prompt = [{"role": "user", "content": "Name a color."}]
    row = parse_file(
        jsonl(
            {
                "chosen": prompt + [{"role": "assistant", "content": "Blue."}],
                "rejected": prompt + [{"role": "assistant", "content": "Seven."}],
            }
        )
    )[0]
    assert row.messages == prompt
    assert (row.chosen, row.rejected) == ("Blue.", "Seven.")


def test_hh_rows_split_the_shared_conversation_from_the_replies():
    shared = "\n\nHuman: Hi\n\nAssistant: Hello, how can I help?\n\nHuman: Tell me a joke"
    row = parse_file(jsonl({"chosen": shared + "\n\nAssistant: Why did the chicken...", "rejected": shared + "\n\nAssistant: No."}))[0]
    assert row.messages == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello, how can I help?"},
        {"role": "user", "content": "Tell me a joke"},
    ]
    assert (row.chosen, row.rejected) == ("Why did the chicken...", "No.")


def test_hh_prompt_string_with_trl_prompt_column():
    row = parse_file(jsonl({"prompt": "\n\nHuman: Hi\n\nAssistant:", "chosen": " Hello!", "rejected": " Go away."}))[0]
    assert row.messages == [{"role": "user", "content": "Hi"}]


@needs_hh_file
def test_the_real_hh_file_parses_completely():
    with open(HH_FILE, "rb") as stream:
        rows = parse_file(stream, HH_FILE.name)
    assert len(rows) == 2312
    assert all(row.is_preference and row.messages[-1]["role"] == "user" for row in rows)
    # Row 1951 (line) has a reply split over two Assistant turns on one side: it still parses.
    assert rows[1950].messages[-1]["content"].startswith("I want to snatch purses")


def test_csv_with_prompt_column_and_multiline_cells():
    data = b'prompt,id,split\n"first\nprompt",a,train\nsecond prompt,b,heldout\n'
    rows = parse_file(io.BytesIO(data), "prompts.csv")
    assert [row.messages[0]["content"] for row in rows] == ["first\nprompt", "second prompt"]
    assert [row.line for row in rows] == [2, 4]
    assert rows[1].split == "heldout"


def test_csv_with_messages_as_json_and_preference_columns():
    messages = json.dumps([{"role": "user", "content": "Hi"}])
    data = f'messages\n"{messages.replace(chr(34), chr(34) * 2)}"\n'.encode()
    assert parse_file(io.BytesIO(data), "m.csv")[0].messages == [{"role": "user", "content": "Hi"}]
    pref = b"prompt,chosen,rejected\nQ?,good,bad\n"
    row = parse_file(io.BytesIO(pref), "p.csv")[0]
    assert (row.chosen, row.rejected) == ("good", "bad")


def test_json_array_and_gzip_are_detected_from_content():
    data = json.dumps([{"prompt": "a"}, {"prompt": "b"}]).encode()
    assert len(parse_file(io.BytesIO(gzip.compress(data)), "upload")) == 2


def test_content_hash_is_canonical():
    assert content_hash([{"role": "user", "content": "x"}]) == content_hash([{"content": "x", "role": "user"}])
    assert content_hash([{"role": "user", "content": "x"}]) != content_hash([{"role": "user", "content": "y"}])


def test_parse_hh_transcript():
    assert parse_hh_transcript("Human: a\n\nAssistant: b") == [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
    ]


@pytest.mark.parametrize(
    ("data", "filename", "line", "reason"),
    [
        (b'{"prompt": "ok"}\n{"prompt": "ok2"\n', "", 2, "invalid JSON"),
        (b'{"prompt": "ok"}\n\n{"text": "no prompt"}\n', "", 3, "expected a `prompt`, `messages`"),
        (b'{"prompt": ""}\n', "", 1, "`prompt` is empty"),
        (b'{"prompt": 3}\n', "", 1, "must be a string or a list"),
        (b'{"messages": []}\n', "", 1, "non-empty list"),
        (b'{"messages": [{"role": "robot", "content": "x"}]}\n', "", 1, "role` must be one of"),
        (b'{"messages": [{"role": "system", "content": "x"}, {"role": "assistant", "content": "y"}]}\n', "", 1, "must end with a user turn"),
        (b'{"messages": [{"role": "user", "content": "x"}, {"role": "system", "content": "y"}, {"role": "user", "content": "z"}]}\n', "", 1, "system message may only come first"),
        (b'{"prompt": "q", "chosen": "a"}\n', "", 1, "needs both `chosen` and `rejected`"),
        (b'{"chosen": "no markers", "rejected": "none here"}\n', "", 1, "share no"),
        (b'{"chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "rejected": "text"}\n', "", 1, "both be strings or both be message lists"),
        (b'{"prompt": "q", "split": "dev"}\n', "", 1, "`split` must be train or heldout"),
        (b'{"prompt": "q", "metadata": [1]}\n', "", 1, "`metadata` must be an object"),
        (b'[1, 2]\n', "", 1, "expected an object"),
        (b'prompt\nok\n"unterminated\n', "x.csv", 3, "invalid CSV"),
        (b"prompt,id\nfine,1\nextra,2,3\n", "x.csv", 3, "3 values for 2 columns"),
        (b'messages\nnot json\n', "x.csv", 2, "column `messages` is not valid JSON"),
        (b"", "", 0, "no rows"),
        (b"\xff\xfe\x00garbage", "x.jsonl", 0, "not UTF-8"),
        (b"\x1f\x8bnot really gzip", "x.jsonl.gz", 0, "could not be read"),
    ],
)
def test_broken_files_name_the_line_and_the_reason(data, filename, line, reason):
    error = parse_error(data, filename)
    assert error.line == line
    assert reason in str(error)
    if line:
        assert str(error).startswith(f"line {line}:")
