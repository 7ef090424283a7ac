"""Reading sources: every bad input names the file, the line and the field."""

import json

import pytest

from hybrid.errors import SourceError
from hybrid.sources import read_documents


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_reads_beir_jsonl_with_metadata(tmp_path):
    source = write_jsonl(tmp_path / "c.jsonl", [{"_id": "1", "title": "T", "text": "body", "lang": "en"}])
    [doc] = read_documents(source)
    assert doc.id == "1" and doc.text == "T\nbody" and doc.fields["lang"] == "en"


def test_reads_csv_and_folder(tmp_path):
    (tmp_path / "c.csv").write_text("id,text,topic\n7,hello world,greeting\n")
    [doc] = read_documents(tmp_path / "c.csv", text_fields=["text"])
    assert (doc.id, doc.text, doc.fields["topic"]) == ("7", "hello world", "greeting")
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.md").write_text("# A\nalpha")
    (folder / "sub" / "b.txt").write_text("beta")
    (folder / "skip.bin").write_text("x")
    docs = read_documents(folder)
    assert [(d.id, d.fields["title"]) for d in docs] == [("a.md", "a"), ("sub/b.txt", "b")]


def test_hash_changes_with_content_only(tmp_path):
    a = read_documents(write_jsonl(tmp_path / "a.jsonl", [{"_id": "1", "title": "", "text": "x"}]))[0]
    b = read_documents(write_jsonl(tmp_path / "b.jsonl", [{"_id": "1", "title": "", "text": "x"}]))[0]
    c = read_documents(write_jsonl(tmp_path / "c.jsonl", [{"_id": "1", "title": "", "text": "y"}]))[0]
    assert a.hash == b.hash != c.hash


def test_malformed_json_line_names_file_and_line(tmp_path):
    source = tmp_path / "c.jsonl"
    source.write_text('{"_id": "1", "title": "", "text": "ok"}\n{"_id": "2", "text": \n')
    with pytest.raises(SourceError, match=r"c\.jsonl, line 2: not valid JSON"):
        read_documents(source)


def test_missing_id_names_field_and_line(tmp_path):
    source = write_jsonl(tmp_path / "c.jsonl", [{"_id": "1", "title": "", "text": "a"}, {"title": "", "text": "b"}])
    with pytest.raises(SourceError, match=r"line 2: missing id field '_id' or 'id'"):
        read_documents(source)
    with pytest.raises(SourceError, match=r"line 1: missing id field 'doc'"):
        read_documents(source, id_field="doc")


def test_missing_or_wrong_text_field_names_field_and_line(tmp_path):
    source = write_jsonl(tmp_path / "c.jsonl", [{"_id": "1", "title": "", "text": "a"}, {"_id": "2", "text": "b"}])
    with pytest.raises(SourceError, match=r"line 2: missing text field 'title'"):
        read_documents(source)
    source = write_jsonl(tmp_path / "d.jsonl", [{"_id": "1", "title": "", "text": 5}])
    with pytest.raises(SourceError, match=r"line 1: text field 'text' must be a string"):
        read_documents(source)


def test_empty_source_and_missing_file(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(SourceError, match=r"empty\.jsonl: no documents found"):
        read_documents(tmp_path / "empty.jsonl")
    with pytest.raises(SourceError, match="no such file"):
        read_documents(tmp_path / "absent.jsonl")


def test_duplicate_id_names_both_lines(tmp_path):
    source = write_jsonl(tmp_path / "c.jsonl", [{"_id": "1", "title": "", "text": "a"}] * 2)
    with pytest.raises(SourceError, match=r"line 2: duplicate id '1' \(first seen at line 1\)"):
        read_documents(source)


def test_csv_row_with_extra_values(tmp_path):
    (tmp_path / "c.csv").write_text("id,text\n1,a,b\n")
    with pytest.raises(SourceError, match=r"c\.csv, line 2: more values"):
        read_documents(tmp_path / "c.csv", text_fields=["text"])
