import json

import pytest

from compress.data.tasks import load_task
from compress.errors import UserError


def data_lines(path):
    """Rows of a GLUE TSV counted independently of the loader: lines minus the header."""
    return len(path.read_text(encoding="utf-8-sig").splitlines()) - 1


def test_sst2_rows_are_exact(glue_dir):
    task = load_task("sst2", str(glue_dir))
    assert (len(task.train), len(task.dev)) == (67_349, 872)
    assert task.num_labels == 2 and not task.is_pair
    assert set(task.train["label"]) == {0, 1}


def test_mrpc_is_read_exactly_despite_bom_and_quotes(glue_dir):
    task = load_task("mrpc", str(glue_dir))
    # The shared train.tsv holds 3,667 data rows (GLUE's release lists 3,668); we read every one.
    assert len(task.train) == data_lines(glue_dir / "MRPC" / "train.tsv") == 3_667
    assert len(task.dev) == data_lines(glue_dir / "MRPC" / "dev.tsv") == 408
    assert task.is_pair and task.metrics == ("accuracy", "f1")
    first = task.train[0]
    assert first["text"].startswith("Amrozi accused his brother")
    assert first["text_pair"].startswith("Referring to him as only")
    assert sum('"' in t for t in task.train["text"]) > 0  # stray quotes kept as text


def test_data_dir_from_environment(glue_dir, monkeypatch):
    monkeypatch.setenv("COMPRESS_DATA", str(glue_dir))
    assert len(load_task("mrpc").dev) == 408


def test_rotten_tomatoes_ships_offline():
    task = load_task("rotten-tomatoes")
    assert len(task.train) + len(task.dev) == 4_866  # 2,455 fresh + 2,411 rotten, plot rows dropped
    assert len(task.dev) == 487
    assert 0.4 < sum(task.train["label"]) / len(task.train) < 0.6


def test_csv_single_file_splits_off_every_tenth_row(learnable_csv):
    task = load_task(str(learnable_csv), text_column="sentence")
    assert (len(task.train), len(task.dev)) == (540, 60)
    assert task.name == "reviews" and task.metrics == ("accuracy", "f1")


def test_jsonl_folder_with_pairs(tmp_path):
    for split, rows in (("train", 12), ("dev", 4)):
        with open(tmp_path / f"{split}.jsonl", "w") as f:
            for i in range(rows):
                f.write(json.dumps({"q": f"question {i}", "a": f"answer {i}", "y": i % 3}) + "\n")
    task = load_task(str(tmp_path), text_column="q,a", label_column="y")
    assert (len(task.train), len(task.dev), task.num_labels, task.is_pair) == (12, 4, 3, True)
    assert task.train[4] == {"text": "question 4", "text_pair": "answer 4", "label": 1}


def test_fingerprint_follows_the_training_rows(tmp_path, learnable_csv):
    first = load_task(str(learnable_csv), text_column="sentence").fingerprint
    assert load_task(str(learnable_csv), text_column="sentence").fingerprint == first
    changed = tmp_path / "changed.csv"
    lines = learnable_csv.read_text().splitlines()
    lines[2] = lines[2][:-1] + ("0" if lines[2].endswith("1") else "1")
    changed.write_text("\n".join(lines) + "\n")
    assert load_task(str(changed), text_column="sentence").fingerprint != first


def write(path, text):
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "content, columns, message",
    [
        ("text,label\n" + "a,0\nb,1\n" * 10, ("sentence", "label"), "no column 'sentence'"),
        ("sentence,y\n" + "a,0\nb,1\n" * 10, ("sentence", "label"), "no column 'label'"),
        ("sentence,label\n" + "a,0\nb,pos\n" * 10, ("sentence", "label"), "'pos' is not an integer class id"),
        ("sentence,label\n" + "a,0\nb,1.5\n" * 10, ("sentence", "label"), "'1.5' is not an integer class id"),
        ("sentence,label\n" + "a,0\nb,-1\n" * 10, ("sentence", "label"), "label -1 is not a class id"),
        ("sentence,label\n", ("sentence", "label"), "the split is empty"),
        ("sentence,label\na,0\nb,1\n", ("sentence", "label"), "too few to split"),
    ],
)
def test_bad_files_are_clear_errors(tmp_path, content, columns, message):
    path = write(tmp_path / "data.csv", content)
    with pytest.raises(UserError, match=message):
        load_task(path, text_column=columns[0], label_column=columns[1])


def test_dev_label_unseen_in_train(tmp_path):
    write(tmp_path / "train.csv", "s,label\n" + "a,0\nb,1\n" * 5)
    write(tmp_path / "dev.csv", "s,label\na,0\nb,2\n")
    with pytest.raises(UserError, match=r"dev labels 2 never occur in train \(train labels: 0, 1; --num-labels K"):
        load_task(str(tmp_path), text_column="s")
    assert load_task(str(tmp_path), text_column="s", num_labels=3).num_labels == 3


@pytest.mark.parametrize("labels, message", [
    ("0,0", r"training has one class only \(label 0\): a classifier needs two or more"),
    ("0,5", r"training labels must be the class ids 0 to K-1, found 0, 5 \(give --num-labels K"),
    ("0,99999", r"found 0, 99999"),
    ("0,100000", r"label 100000 is not a class id from 0 to 99999"),
    ("0,99999999999999999999", r"label 99999999999999999999 is not a class id"),
])
def test_labels_must_be_two_or_more_class_ids_from_zero(tmp_path, labels, message):
    first, second = labels.split(",")
    write(tmp_path / "data.csv", "s,label\n" + f"a,{first}\nb,{second}\n" * 10)
    with pytest.raises(UserError, match=message):
        load_task(str(tmp_path / "data.csv"), text_column="s")


def test_num_labels_declares_classes_training_lacks_and_bounds_every_label(tmp_path):
    write(tmp_path / "data.csv", "s,label\n" + "a,0\nb,2\n" * 10)
    assert load_task(str(tmp_path / "data.csv"), text_column="s", num_labels=4).num_labels == 4
    with pytest.raises(UserError, match=r"--num-labels 2 must lie in 2..100000 and exceed every label \(largest: 2\)"):
        load_task(str(tmp_path / "data.csv"), text_column="s", num_labels=2)


def test_jsonl_lines_must_be_objects(tmp_path):
    write(tmp_path / "data.jsonl", '{"s": "a", "label": 0}\n[1, 2]\n')
    with pytest.raises(UserError, match=r"data.jsonl line 2: not a JSON object"):
        load_task(str(tmp_path / "data.jsonl"), text_column="s")


def test_a_file_name_becomes_a_safe_task_name(tmp_path):
    write(tmp_path / "..csv", "s,label\n" + "a,0\nb,1\n" * 10)
    write(tmp_path / "my reviews (v2).csv", "s,label\n" + "a,0\nb,1\n" * 10)
    assert load_task(str(tmp_path / "..csv"), text_column="s").name == "task"
    assert load_task(str(tmp_path / "my reviews (v2).csv"), text_column="s").name == "my-reviews-v2"


def test_missing_glue_folder_and_unknown_task(tmp_path):
    with pytest.raises(UserError, match="SST-2/train.tsv not found"):
        load_task("sst2", str(tmp_path))
    with pytest.raises(UserError, match="unknown task 'sst3'"):
        load_task("sst3")


def test_a_missing_value_is_reported_at_the_files_own_line(tmp_path):
    rows = ['{"s": "good film", "label": 1}', '{"s": "bad film", "label": 0}', "", '{"s": null, "label": 1}']
    write(tmp_path / "data.jsonl", "\n".join(rows * 5) + "\n")
    with pytest.raises(UserError, match=r"data.jsonl line 4: missing a value"):
        load_task(str(tmp_path / "data.jsonl"), text_column="s")
    write(tmp_path / "data.csv", "s,label\ngood film,1\n\"two\nlines\",0\nbad film\n" + "a,0\nb,1\n" * 5)
    with pytest.raises(UserError, match=r"data.csv line 5: missing a value"):
        load_task(str(tmp_path / "data.csv"), text_column="s")


def test_a_text_that_is_not_a_string_is_refused(tmp_path):
    write(tmp_path / "data.jsonl", '{"s": "good film", "label": 1}\n{"s": ["bad", "film"], "label": 0}\n' * 5)
    with pytest.raises(UserError, match=r"data.jsonl line 2: the text in 's' is a list, not a string"):
        load_task(str(tmp_path / "data.jsonl"), text_column="s")


def test_the_label_column_cannot_be_the_text(tmp_path):
    write(tmp_path / "data.csv", "s,label\n" + "good film,1\nbad film,0\n" * 5)
    with pytest.raises(UserError, match=r"--text-column s,label names the label column 'label'"):
        load_task(str(tmp_path / "data.csv"), text_column="s,label")
