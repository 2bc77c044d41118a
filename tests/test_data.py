"""Reading, normalising and validating instruction data; order-independent shards."""

import json

import pytest

from selectit.data import (DataPolicy, normalise, prepare_samples, read_records, shard_of, split_shards,
                           write_shard)
from selectit.errors import InputError


def alpaca(n=5):
    return [{"instruction": f"Question {i}?", "input": "", "output": f"Answer {i}."} for i in range(n)]


def test_alpaca_input_joined_with_configurable_joiner():
    recs = [{"instruction": "Summarise.", "input": "Some text.", "output": "Short."}]
    table, _ = normalise(recs, "x.json")
    assert table.loc[0, "instruction"] == "Summarise.\nSome text."
    table, _ = normalise(recs, "x.json", policy=DataPolicy(input_joiner=" "))
    assert table.loc[0, "instruction"] == "Summarise. Some text."


def test_ids_do_not_depend_on_order():
    a, _ = normalise(alpaca(), "a")
    b, _ = normalise(list(reversed(alpaca())), "b")
    assert sorted(a["id"]) == sorted(b["id"])
    assert a.set_index("id").loc[b["id"], "instruction"].tolist() == b["instruction"].tolist()
    assert b["index"].tolist() == list(range(5))


def test_sharegpt_first_human_assistant_pair():
    recs = [{"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "Hi?"},
                               {"from": "gpt", "value": "Hello."}, {"from": "human", "value": "More"}]},
            {"conversations": [{"from": "human", "value": "Alone"}]}]
    table, report = normalise(recs, "chat.json")
    assert table[["instruction", "response"]].values.tolist() == [["Hi?", "Hello."]]
    assert report["counts"]["dropped_no_assistant_turn"] == 1
    assert report["details"]["dropped_no_assistant_turn"] == [1]
    with pytest.raises(InputError, match="record 1: no human turn followed by an assistant"):
        normalise(recs, "chat.json", policy=DataPolicy(no_assistant_turn="error"))


def test_messages_first_user_assistant_pair_without_the_system_turn():
    recs = [{"messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi?"},
                          {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "More"},
                          {"role": "assistant", "content": "No."}]},
            {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "Alone"}]},
            {"messages": [{"role": "assistant", "content": "first"}, {"role": "user", "content": "Then?"},
                          {"role": "assistant", "content": "Then this."}]}]
    table, report = normalise(recs, "chat.jsonl")  # detected from the `messages` key
    assert report["format"] == "messages"
    assert table[["instruction", "response"]].values.tolist() == [["Hi?", "Hello."], ["Then?", "Then this."]]
    assert table["index"].tolist() == [0, 2]
    assert report["counts"]["dropped_no_assistant_turn"] == 1
    assert report["details"]["dropped_no_assistant_turn"] == [1]
    with pytest.raises(InputError, match="chat.jsonl: record 1: no human turn followed by an assistant"):
        normalise(recs, "chat.jsonl", fmt="messages", policy=DataPolicy(no_assistant_turn="error"))


@pytest.mark.parametrize("record, message", [
    ({"messages": "Hi"}, "record 0: 'messages' must be a list of turns"),
    ({"messages": [{"role": "user", "text": "Hi"}]}, "record 0: turn 0 needs 'role' and 'content'"),
    ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": None}]},
     r"record 0: field 'messages\[1\].content' is missing"),
    ({"messages": [{"role": "user", "content": [{"type": "text"}]}, {"role": "assistant", "content": "x"}]},
     r"record 0: field 'messages\[0\].content' must be text, got list"),
])
def test_malformed_messages_name_file_record_and_turn(record, message):
    with pytest.raises(InputError, match=message) as info:
        normalise([record], "chat.json", fmt="messages")
    assert "chat.json" in str(info.value)


def test_messages_and_policies_load_from_jsonl_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    recs = [{"messages": [{"role": "user", "content": f"Q{i}?"}, {"role": "assistant", "content": f"A{i}."}]}
            for i in range(3)]
    recs += [{"messages": [{"role": "user", "content": "Q0?"}, {"role": "assistant", "content": "A0."}]},
             {"messages": [{"role": "user", "content": "Empty?"}, {"role": "assistant", "content": " "}]}]
    jsonl = tmp_path / "chat.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in recs))
    parquet = tmp_path / "chat.parquet"  # how Hub datasets in this format are stored: a list-of-structs column
    pq.write_table(pa.Table.from_pylist(recs), parquet)
    for path in (jsonl, parquet):
        samples, report = tmp_path / f"{path.suffix[1:]}.parquet", tmp_path / f"{path.suffix[1:]}.json"
        prepare_samples({"path": str(path)}, samples, report)
        got = json.loads(report.read_text())
        assert got["format"] == "messages"
        assert (got["counts"]["kept"], got["counts"]["dropped_duplicates"], got["counts"]["dropped_empty_response"]) \
            == (3, 1, 1)
        assert pq.read_table(samples).column("response").to_pylist() == ["A0.", "A1.", "A2."]


def test_json_and_jsonl_with_a_utf8_byte_order_mark(tmp_path):
    bom = "\ufeff".encode("utf-8")
    as_json = tmp_path / "bom.json"
    as_json.write_bytes(bom + json.dumps(alpaca(2), ensure_ascii=False).encode("utf-8"))
    as_jsonl = tmp_path / "bom.jsonl"
    as_jsonl.write_bytes(bom + "".join(json.dumps(r) + "\r\n" for r in alpaca(2)).encode("utf-8"))
    assert read_records(as_json) == alpaca(2)
    assert read_records(as_jsonl) == alpaca(2)
    bad = tmp_path / "bom_bad.json"  # the mark does not shift the byte offset an encoding error names
    bad.write_bytes(bom + '[{"instruction": "caf\xe9", "output": "x"}]'.encode("latin-1"))
    with pytest.raises(InputError, match="bom_bad.json: not valid UTF-8 at byte 24 .line 1."):
        read_records(bad)


def test_schema_formats_are_the_loader_formats():
    from pathlib import Path

    import yaml

    from selectit.data import FORMATS

    schema = yaml.safe_load((Path(__file__).resolve().parents[1] / "schemas/config.schema.yaml").read_text())
    assert schema["properties"]["datasets"]["additionalProperties"]["properties"]["format"]["enum"] == list(FORMATS)


def test_policies_are_counted():
    recs = alpaca(3) + [{"instruction": "Empty?", "input": "", "output": "  "}, alpaca(1)[0],
                        {"instruction": 42, "input": "", "output": "Forty-two."}]
    table, report = normalise(recs, "d.json")
    c = report["counts"]
    assert (c["read"], c["kept"]) == (6, 4)
    assert c["dropped_empty_response"] == 1 and report["details"]["dropped_empty_response"] == [3]
    assert c["dropped_duplicates"] == 1 and report["details"]["dropped_duplicates"][0]["duplicate_of"] == 0
    assert c["coerced_non_string"] == 1
    with pytest.raises(InputError, match="record 3: the response is empty"):
        normalise(recs, "d.json", policy=DataPolicy(empty_response="error"))
    with pytest.raises(InputError, match="record 4 duplicates record 0"):
        normalise(recs, "d.json", policy=DataPolicy(duplicates="error"))
    with pytest.raises(InputError, match="record 5: field 'instruction' must be text"):
        normalise(recs, "d.json", policy=DataPolicy(non_string="error"))


@pytest.mark.parametrize("record, message", [
    ({"instruction": "q"}, "record 0: field 'output' is missing"),
    ({"instruction": ["a"], "output": "x"}, "record 0: field 'instruction' must be text, got list"),
    ("just a string", "record 0 is a str, not an object"),
])
def test_malformed_records_name_file_and_record(record, message):
    with pytest.raises(InputError, match=message) as info:
        normalise([record], "bad.json", fmt="alpaca")
    assert "bad.json" in str(info.value)


def test_file_errors(tmp_path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('[{"instruction": "a", "output": "b"},')
    with pytest.raises(InputError, match=r"bad.json: invalid JSON .* line 1"):
        read_records(bad_json)
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"instruction": "a", "output": "b"}\n{oops\n')
    with pytest.raises(InputError, match="d.jsonl: line 2 is not valid JSON"):
        read_records(jsonl)
    latin = tmp_path / "latin.json"
    latin.write_bytes('[{"instruction": "caf\xe9", "output": "x"}]'.encode("latin-1"))
    with pytest.raises(InputError, match="latin.json: not valid UTF-8 at byte 21 .line 1."):
        read_records(latin)
    with pytest.raises(InputError, match="does not exist"):
        read_records(tmp_path / "missing.json")


def test_long_response_is_kept_and_reported():
    recs = [{"instruction": "Write a lot.", "input": "", "output": "word " * 40000}]
    table, report = normalise(recs, "long.json")
    assert len(table.loc[0, "response"]) == 200000 and report["max_response_chars"] == 200000


def test_shard_membership_independent_of_order_and_insertions(tmp_path):
    base, _ = normalise(alpaca(40), "a")
    more, _ = normalise(alpaca(40) + [{"instruction": "New?", "input": "", "output": "Yes."}], "b")
    a, b = split_shards(base, 4), split_shards(more, 4)
    changed = [s for s in a if a[s]["id"].tolist() != b[s]["id"].tolist()]
    assert len(changed) == 1
    assert shard_of(base["id"], 4).tolist() == shard_of(base["id"], 4).tolist()


def test_unchanged_shard_file_is_byte_identical(tmp_path):
    f = tmp_path / "d.json"
    f.write_text(json.dumps(alpaca(40)))
    prepare_samples({"path": str(f), "n_shards": 4}, tmp_path / "s1.parquet", tmp_path / "r1.json")
    f.write_text(json.dumps([{"instruction": "New?", "input": "", "output": "Yes."}] + alpaca(40)))
    prepare_samples({"path": str(f), "n_shards": 4}, tmp_path / "s2.parquet", tmp_path / "r2.json")
    same = 0
    for shard in ["shard000", "shard001", "shard002", "shard003"]:
        write_shard(tmp_path / "s1.parquet", 4, shard, tmp_path / f"a_{shard}.parquet")
        write_shard(tmp_path / "s2.parquet", 4, shard, tmp_path / f"b_{shard}.parquet")
        same += (tmp_path / f"a_{shard}.parquet").read_bytes() == (tmp_path / f"b_{shard}.parquet").read_bytes()
    assert same == 3
