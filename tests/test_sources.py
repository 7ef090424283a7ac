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
        read_documents(source, text_fields=["title", "text"])  # named explicitly: required
    source = write_jsonl(tmp_path / "n.jsonl", [{"_id": "1", "title": "T"}])
    with pytest.raises(SourceError, match=r"line 1: missing text field 'text'"):
        read_documents(source)  # only the default title is optional
    source = write_jsonl(tmp_path / "d.jsonl", [{"_id": "1", "title": "", "text": 5}])
    with pytest.raises(SourceError, match=r"line 1: text field 'text' must be a string"):
        read_documents(source)
    with pytest.raises(SourceError, match=r"no text fields given"):
        read_documents(source, text_fields=[])


def test_default_fields_take_documents_without_a_title(tmp_path):
    """{"id", "text"} is the most common JSONL shape: a missing or null title is an empty one."""
    source = write_jsonl(tmp_path / "c.jsonl", [{"id": "a", "text": "alpha"}, {"id": "b", "title": None, "text": "b"}])
    docs = read_documents(source)
    assert [(d.id, d.text) for d in docs] == [("a", "alpha"), ("b", "b")]
    assert docs[0].fields == {"text": "alpha"}  # nothing is added to what the user gave


@pytest.mark.parametrize("name", ["hybrid_vector", "hybrid_hash", "hybrid_text", "hybrid_id", "hybrid_id.x",
                                  "_source", ""])
def test_fields_named_like_internal_ones_are_refused(tmp_path, name):
    source = write_jsonl(tmp_path / "c.jsonl", [{"_id": "1", "text": "a", name: "x"}])
    with pytest.raises(SourceError, match=rf"c\.jsonl, line 1: field (name )?{name!r}"):
        read_documents(source)


def test_doc_id_is_an_ordinary_field_now(tmp_path):
    source = write_jsonl(tmp_path / "c.jsonl", [{"_id": "1", "text": "a", "doc_id": "mine"}])
    assert read_documents(source)[0].fields["doc_id"] == "mine"


def test_encoding_errors_and_byte_order_marks(tmp_path):
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(b'{"_id": "1", "text": "ok"}\n{"_id": "2", "text": "caf\xe9"}\n')
    with pytest.raises(SourceError, match=r"latin1\.jsonl, line 2: not UTF-8 \(byte 0xe9"):
        read_documents(latin1)
    csv_latin1 = tmp_path / "latin1.csv"
    csv_latin1.write_bytes(b"id,text\n1,ok\n2,caf\xe9\n")
    with pytest.raises(SourceError, match=r"latin1\.csv, line 3: not UTF-8"):
        read_documents(csv_latin1, text_fields=["text"])
    bom_csv = tmp_path / "excel.csv"
    bom_csv.write_bytes("\ufeffid,text\r\n1,hello\r\n".encode())
    assert read_documents(bom_csv, text_fields=["text"])[0].id == "1"
    bom_jsonl = tmp_path / "bom.jsonl"
    bom_jsonl.write_bytes("\ufeff".encode() + b'{"_id": "1", "text": "x"}\n')
    assert read_documents(bom_jsonl)[0].id == "1"


def test_line_separators_inside_text_do_not_split_records(tmp_path):
    """U+2028, U+2029, NEL and a lone CR are text, not line ends: only a newline byte ends a record."""
    text = "a\u2028b\u2029c\x85d\re\x00f"
    source = tmp_path / "c.jsonl"
    source.write_bytes((json.dumps({"_id": "1", "text": text}, ensure_ascii=False) + "\n").encode())
    assert read_documents(source)[0].fields["text"] == text


def test_unreadable_file_and_bad_numbers(tmp_path):
    # A file whose read fails, for root too (who may read a chmod 000 file): its path and reason, one line.
    with pytest.raises(SourceError, match=r"^/proc/self/mem: cannot read it \(Input/output error\)$"):
        read_documents("/proc/self/mem")
    nan = tmp_path / "nan.jsonl"
    nan.write_text('{"_id": "1", "text": "a", "score": NaN}\n')
    with pytest.raises(SourceError, match=r"nan\.jsonl, line 1: not valid JSON \(NaN is not a JSON number\)"):
        read_documents(nan)


def test_overlong_id_is_refused(tmp_path):
    source = write_jsonl(tmp_path / "c.jsonl", [{"_id": "é" * 257, "text": "a"}])
    with pytest.raises(SourceError, match=r"line 1: id is 514 bytes long; at most 512"):
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


def test_an_id_with_a_lone_surrogate_is_refused(tmp_path):
    """OpenSearch keeps ids as UTF-8, where every lone surrogate becomes U+FFFD: two ids would merge."""
    source = tmp_path / "c.jsonl"
    source.write_text('{"_id": "a\\ud800", "text": "x", "note": "b\\udfff"}\n')
    with pytest.raises(SourceError, match=r"line 1: the id holds a lone surrogate \(U\+D800\)"):
        read_documents(source)


def test_json_that_python_would_bend_is_refused(tmp_path):
    source = tmp_path / "c.jsonl"
    source.write_text('{"_id": "1", "text": "a", "size": 1e400}\n')
    with pytest.raises(SourceError, match=r"line 1: not valid JSON \(1e400 is too large for a number\)"):
        read_documents(source)
    source.write_text('{"_id": "1", "text": "a", "text": "b"}\n')
    with pytest.raises(SourceError, match=r"line 1: not valid JSON \(field 'text' appears twice\)"):
        read_documents(source)
    (tmp_path / "c.csv").write_text("id,text\n1,\"" + "x" * 200_000 + "\"\n")
    with pytest.raises(SourceError, match=r"c\.csv, line \d+: not valid CSV \(field larger than field limit"):
        read_documents(tmp_path / "c.csv", text_fields=["text"])
