"""Truncation, ragged arrays, the text encoder, and `dualenc prepare` end to end."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from dualenc.cli import main
from dualenc.errors import DataError
from dualenc.features import (
    Ragged,
    RaggedWriter,
    TextEncoder,
    truncate_context,
    truncate_response,
)
from dualenc.prepare import PrepareOptions, load_prepared, prepare


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as file:
        csv.writer(file).writerows(rows)
    return path


def test_contexts_keep_their_most_recent_tokens() -> None:
    assert truncate_context([1, 2, 3, 4, 5], 3) == [3, 4, 5]
    assert truncate_context([1, 2], 3) == [1, 2]
    assert truncate_context(np.array([7, 8, 9]), 1).tolist() == [9]


def test_responses_keep_their_first_tokens() -> None:
    assert truncate_response([1, 2, 3, 4, 5], 3) == [1, 2, 3]
    assert truncate_response([1, 2], 3) == [1, 2]
    assert truncate_response(np.array([7, 8, 9]), 1).tolist() == [7]


def test_ragged_writer_and_batch(tmp_path) -> None:
    with RaggedWriter(tmp_path, "rows", chunk_size=2) as writer:
        writer.append([1, 2, 3])
        writer.append([])
        writer.extend(np.array([4, 5, 6]), np.array([1, 2]))  # rows [4] and [5, 6]
    ragged = Ragged.load(tmp_path, "rows")
    assert len(ragged) == 4
    assert ragged.lengths.tolist() == [3, 0, 1, 2]
    assert np.load(tmp_path / "rows.offsets.npy").tolist() == [0, 3, 3, 4, 6]
    assert np.load(tmp_path / "rows.ids.npy").dtype == np.int32
    assert ragged.row(3).tolist() == [5, 6]

    ids, lengths = ragged.batch(np.array([3, 1, 0]))
    assert ids.dtype == lengths.dtype == np.int64
    assert ids.tolist() == [[5, 6, 0], [0, 0, 0], [1, 2, 3]]  # T = 3, the longest row
    assert lengths.tolist() == [2, 0, 3]
    ids, lengths = ragged.batch(np.array([1]))
    assert ids.tolist() == [[0]] and lengths.tolist() == [0]  # T is at least 1


def test_ragged_load_reports_missing_files(tmp_path) -> None:
    with pytest.raises(DataError, match="rows.ids.npy"):
        Ragged.load(tmp_path, "rows")


# A hand-made set. With min_frequency 2 the training counts give
#   __eou__ 5, __eot__ 3, a 2, b 2, c 2, d 1 (below the cut)
# so the ids are <pad> 0, <unk> 1, __eou__ 2, __eot__ 3, a 4, b 5, c 6.
TRAIN = [
    ["Context", "Utterance", "Label"],
    ["a b __eou__ __eot__ ", "b c __eou__", "1"],  # context 4 tokens, response 3
    ["a __eou__ __eot__ c __eou__ __eot__ ", "d __eou__", "0"],  # context 6, response 2
]
VALID = [
    ["Context", "Ground Truth Utterance", "Distractor_0", "Distractor_1"],
    ["b __eou__ __eot__ ", "c __eou__", "e __eou__", "a a a __eou__"],
]
TINY = PrepareOptions(
    min_frequency=2, max_context_len=4, max_response_len=2, hash_buckets=0, progress=False
)


@pytest.fixture
def sets(tmp_path) -> Path:
    write_csv(tmp_path / "sets" / "train.csv", TRAIN)
    write_csv(tmp_path / "sets" / "valid.csv", VALID)
    return tmp_path / "sets"


def test_prepare_tiny_set(sets, tmp_path) -> None:
    out = tmp_path / "prepared"
    manifest = prepare(sets, out, TINY)

    assert (out / "vocab.txt").read_text().split() == [
        "<pad>", "<unk>", "__eou__", "__eot__", "a", "b", "c",
    ]
    train = out / "train"
    # Context 2 is [a __eou__ __eot__ c __eou__ __eot__] = [4 2 3 6 2 3]: its last 4 kept.
    assert np.load(train / "context.ids.npy").tolist() == [4, 5, 2, 3, 3, 6, 2, 3]
    assert np.load(train / "context.offsets.npy").tolist() == [0, 4, 8]
    assert np.load(train / "context.lengths.npy").tolist() == [4, 4]
    # Responses [b c __eou__] and [d __eou__] keep their first 2; d is unknown (1).
    assert np.load(train / "response.ids.npy").tolist() == [5, 6, 1, 2]
    assert np.load(train / "response.offsets.npy").tolist() == [0, 2, 4]
    assert np.load(train / "response.lengths.npy").tolist() == [2, 2]
    labels = np.load(train / "label.npy")
    assert labels.dtype == np.int8 and labels.tolist() == [1, 0]
    # Candidates [c __eou__], [e __eou__], [a a a __eou__] -> [6 2], [1 2], [4 4].
    assert np.load(out / "valid" / "context.ids.npy").tolist() == [5, 2, 3]
    assert np.load(out / "valid" / "candidates.ids.npy").tolist() == [6, 2, 1, 2, 4, 4]
    assert np.load(out / "valid" / "candidates.offsets.npy").tolist() == [0, 2, 4, 6]
    assert not (out / "test").exists()

    assert manifest["counts"] == {"train": 2, "valid": 1}
    assert manifest["num_candidates"] == {"valid": 3}
    assert manifest["train_labels"] == {"positive": 1, "negative": 1, "positive_fraction": 0.5}
    assert manifest["vocab_size"] == 7
    assert manifest["coverage"]["train"] == pytest.approx(14 / 15)  # 15 tokens, 1 "d"
    assert manifest["coverage"]["valid"] == pytest.approx(10 / 11)  # 11 tokens, 1 "e"
    context = manifest["lengths"]["train"]["context"]
    assert context["before"] == {"mean": 5.0, "median": 5.0, "p95": 5.9, "max": 6}
    assert context["after"]["max"] == 4 and context["truncated"] == 1
    assert manifest["lengths"]["valid"]["candidates"]["truncated"] == 1
    assert manifest["skipped"] == {"train": 0, "valid": 0}
    assert manifest["options"]["tokenizer"] == {"kind": "default", "lowercase": True}
    source = manifest["sources"]["train"]
    assert (source["file"], source["bytes"]) == ("train.csv", (sets / "train.csv").stat().st_size)
    assert len(source["sha256"]) == 64


def test_prepare_hashes_unknown_tokens_into_buckets(sets, tmp_path) -> None:
    options = PrepareOptions(**{**vars(TINY), "hash_buckets": 4})
    manifest = prepare(sets, tmp_path / "prepared", options)
    # The 7 ids of the tiny vocabulary, then <hash:0> .. <hash:3> as ids 7 to 10. CRC-32 of
    # "d" is 2564639436 (bucket 0, id 7) and of "e" 4024072794 (bucket 2, id 9).
    assert manifest["vocab_size"] == 11 and manifest["options"]["hash_buckets"] == 4
    train = tmp_path / "prepared" / "train"
    assert np.load(train / "response.ids.npy").tolist() == [5, 6, 7, 2]
    valid = tmp_path / "prepared" / "valid"
    assert np.load(valid / "candidates.ids.npy").tolist() == [6, 2, 9, 2, 4, 4]
    # Coverage counts the tokens with an id of their own, as without buckets.
    assert manifest["coverage"]["train"] == pytest.approx(14 / 15)
    assert manifest["coverage"]["valid"] == pytest.approx(10 / 11)


def test_load_prepared(sets, tmp_path) -> None:
    prepare(sets, tmp_path / "prepared", TINY)
    prepared = load_prepared(tmp_path / "prepared")
    assert (prepared.max_context_len, prepared.max_response_len) == (4, 2)
    assert len(prepared.train) == 2 and prepared.train.label.tolist() == [1, 0]
    assert prepared.train.context.row(1).tolist() == [3, 6, 2, 3]
    assert prepared.valid.num_candidates == 3 and len(prepared.valid) == 1
    assert prepared.test is None
    assert prepared.vocab.token_to_id("c") == 6

    encoder = prepared.encoder()
    assert encoder.encode_context("a __eou__ __eot__ c __eou__ __eot__ ") == [3, 6, 2, 3]
    assert encoder.encode_context(["A", "c"]) == [3, 6, 2, 3]  # turns get the markers
    assert encoder.encode_response("B, c") == [5, 1]  # "," is unknown
    assert TextEncoder.from_prepared(tmp_path / "prepared") == encoder


def test_load_prepared_refuses_an_incomplete_folder(sets, tmp_path) -> None:
    out = tmp_path / "prepared"
    prepare(sets, out, TINY)
    (out / "train" / "label.npy").unlink()
    with pytest.raises(DataError, match="label.npy"):
        load_prepared(out)
    (out / "vocab.txt").unlink()
    with pytest.raises(DataError, match="vocab.txt is missing"):
        load_prepared(out)
    with pytest.raises(DataError, match="manifest.json is missing"):
        load_prepared(tmp_path)


def test_prepare_refuses_an_existing_output_unless_overwrite(sets, tmp_path) -> None:
    out = tmp_path / "prepared"
    prepare(sets, out, TINY)
    with pytest.raises(FileExistsError, match="--overwrite"):
        prepare(sets, out, TINY)
    options = PrepareOptions(min_frequency=1, overwrite=True, progress=False)
    assert prepare(sets, out, options)["vocab_size"] == 8 + 4096  # "d" now has an id


def test_prepare_xu_folder(tmp_path) -> None:
    folder = tmp_path / "sets"
    folder.mkdir()
    (folder / "train.txt").write_text("1\thi\tthere\tyes\n0\thi\tthere\tno\n")
    lines = [f"{int(i == 4)}\thi\tnew {i}\n" for i in range(10)]
    (folder / "test.txt").write_text("".join(lines))
    options = PrepareOptions(min_frequency=1, hash_buckets=0, progress=False)
    manifest = prepare(folder, tmp_path / "out", options)
    assert manifest["counts"] == {"train": 2, "test": 1}
    assert manifest["num_candidates"] == {"test": 10}
    prepared = load_prepared(tmp_path / "out")
    vocab = prepared.vocab
    # The context "hi __eou__ __eot__ there __eou__ __eot__ " of both pairs.
    assert [vocab.id_to_token(i) for i in prepared.train.context.row(0)] == [
        "hi", "__eou__", "__eot__", "there", "__eou__", "__eot__",
    ]
    truth = prepared.test.candidates.row(0)  # "new 4", moved first; "new" and "4" unknown
    assert truth.tolist() == [1, 1]
    assert prepared.test.candidates.lengths.tolist() == [2] * 10


BAD_ROWS = [
    ["", "fine", "1"],  # empty context, line 3
    ["ok", "fine", "2"],  # label 2, line 4
]


def test_skip_bad_rows_counts_them(sets, tmp_path) -> None:
    write_csv(sets / "train.csv", TRAIN[:2] + BAD_ROWS + TRAIN[2:])
    with pytest.raises(DataError, match="line 3, field 'Context': empty context"):
        prepare(sets, tmp_path / "prepared", TINY)
    assert not (tmp_path / "prepared").exists()

    options = PrepareOptions(**{**vars(TINY), "skip_bad": True})
    manifest = prepare(sets, tmp_path / "prepared", options)
    assert manifest["skipped"] == {"train": 2, "valid": 0}
    assert manifest["counts"]["train"] == 2
    assert np.load(tmp_path / "prepared" / "train" / "context.ids.npy").tolist() == [
        4, 5, 2, 3, 3, 6, 2, 3,
    ]


def test_cli_refuses_train_without_label_column(tmp_path, capsys) -> None:
    write_csv(tmp_path / "sets" / "train.csv", [["Context", "Utterance"], ["a", "b"]])
    out = tmp_path / "prepared"
    status = main(["prepare", str(tmp_path / "sets"), "--out", str(out), "--no-progress"])
    assert status == 1
    err = capsys.readouterr().err
    assert "train.csv, line 1, field 'Label': missing column 'Label'" in err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["sets"]  # no temporary folder left


def test_cli_prepares_with_flags(sets, tmp_path) -> None:
    out = tmp_path / "prepared"
    argv = ["prepare", str(sets), "--out", str(out), "--no-progress", "--min-frequency", "2"]
    argv += ["--max-context-len", "4", "--max-response-len", "2", "--tokenizer", "whitespace"]
    assert main(argv) == 0
    prepared = load_prepared(out)
    assert prepared.manifest["options"]["tokenizer"]["kind"] == "whitespace"
    assert prepared.train.response.row(0).tolist() == [5, 6]
    assert main(argv) == 1  # the output exists now


def test_prepare_reports_bad_options(sets, tmp_path) -> None:
    options = PrepareOptions(min_frequency=0, max_context_len=0, progress=False)
    with pytest.raises(Exception, match="min_frequency.*max_context_len"):
        prepare(sets, tmp_path / "prepared", options)
    with pytest.raises(DataError, match="no train.csv"):
        prepare(tmp_path, tmp_path / "prepared", TINY)


def test_prepare_refuses_a_training_file_without_pairs(sets, tmp_path) -> None:
    write_csv(sets / "train.csv", TRAIN[:1])
    with pytest.raises(DataError, match="no training pairs"):
        prepare(sets, tmp_path / "prepared", TINY)
    assert not (tmp_path / "prepared").exists()
