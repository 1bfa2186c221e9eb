"""The command line: every verb documented, and bad input ending in one line and exit code 2."""

import subprocess
import sys

import pytest


def test_help_lists_every_verb_and_their_flags(run_cli):
    from compress.cli import cli
    from compress.stages import STAGES

    verbs = list(cli.commands)
    assert set(STAGES) <= set(verbs)  # every stage of the table is a verb
    code, out, _ = run_cli("--help")
    assert code == 0
    for verb in verbs:
        assert verb in out
        code, verb_help, _ = run_cli(verb, "--help")
        assert code == 0 and "--" in verb_help
    _, teacher_help, _ = run_cli("teacher", "--help")
    for flag in ("--base", "--task", "--name", "--epochs", "--lr", "--batch-size", "--max-length", "--seed"):
        assert flag in teacher_help


@pytest.fixture
def workspace(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


def bad_inputs(tmp_path, tiny_base, glue_dir):
    """(name, arguments) pairs, each of which must be refused."""
    (tmp_path / "words.csv").write_text("sentence,label\n" + "good film,1\nbad film,0\n" * 10)
    (tmp_path / "strings.csv").write_text("sentence,label\n" + "good film,pos\nbad film,neg\n" * 10)
    (tmp_path / "empty.csv").write_text("sentence,label\n")
    (tmp_path / "notes.txt").write_text("sentence label\n")
    (tmp_path / "split").mkdir()
    (tmp_path / "split" / "train.csv").write_text("s,label\n" + "a,0\nb,1\n" * 5)
    (tmp_path / "split" / "dev.csv").write_text("s,label\na,0\nb,7\n")
    corrupt = tmp_path / "corrupt-model"
    corrupt.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (corrupt / name).write_bytes((tiny_base / name).read_bytes())
    (corrupt / "model.safetensors").write_bytes(b"not a safetensors file")
    base = ["teacher", "--base", str(tiny_base)]
    recipe = f'[teacher]\nbase = "{tiny_base}"\n'
    (tmp_path / "bad.toml").write_text("[teacher\n")
    (tmp_path / "stage.toml").write_text(recipe + '[[stages]]\nverb = "sparsify"\n')
    (tmp_path / "type.toml").write_text(recipe + '[[stages]]\nverb = "distill"\nlayers = "three"\n')
    (tmp_path / "range.toml").write_text(recipe + '[[stages]]\nverb = "distill"\n[[stages]]\nverb = "prune"\nheads = 1.5\n')
    return [
        ("missing data file", [*base, "--task", str(tmp_path / "nope.csv")]),
        ("unknown task", [*base, "--task", "imdb"]),
        ("unknown base", ["teacher", "--base", "bert-bsae"]),
        ("unreachable hub id", ["teacher", "--base", "compress-tests/not-a-model"]),
        ("folder that is no model", ["teacher", "--base", str(tmp_path / "split")]),
        ("corrupt checkpoint", ["teacher", "--base", str(corrupt), "--task", str(tmp_path / "words.csv"), "--text-column", "sentence"]),
        ("wrong text column", [*base, "--task", str(tmp_path / "words.csv"), "--text-column", "review"]),
        ("wrong label column", [*base, "--task", str(tmp_path / "words.csv"), "--text-column", "sentence", "--label-column", "y"]),
        ("no text column given", [*base, "--task", str(tmp_path / "words.csv")]),
        ("non-integer labels", [*base, "--task", str(tmp_path / "strings.csv"), "--text-column", "sentence"]),
        ("dev label unseen in train", [*base, "--task", str(tmp_path / "split"), "--text-column", "s"]),
        ("empty split", [*base, "--task", str(tmp_path / "empty.csv"), "--text-column", "sentence"]),
        ("unsupported file type", [*base, "--task", str(tmp_path / "notes.txt"), "--text-column", "sentence"]),
        ("glue folder missing", [*base, "--task", "sst2", "--data-dir", str(tmp_path)]),
        ("max length over the model's limit", [*base, "--task", "mrpc", "--data-dir", str(glue_dir), "--max-length", "4096"]),
        ("zero epochs", [*base, "--epochs", "0"]),
        ("non-numeric learning rate", [*base, "--lr", "fast"]),
        ("unknown precision", [*base, "--precision", "int4"]),
        ("unknown verb", ["distil-everything"]),
        ("prune a folder that is no variant", ["prune", str(tiny_base), "--heads", "0.5"]),
        ("prune ratio out of range", ["prune", str(tiny_base), "--heads", "1.5"]),
        ("prune negative recovery", ["prune", str(tiny_base), "--neurons", "0.5", "--recover-epochs", "-1"]),
        ("layerdrop rate out of range", ["layerdrop", str(tiny_base), "--rate", "1"]),
        ("layerdrop of no variant", ["layerdrop", str(tmp_path / "nowhere")]),
        ("share without groups", ["share", str(tiny_base)]),
        ("share zero groups", ["share", str(tiny_base), "--groups", "0"]),
        ("share unknown part", ["share", str(tiny_base), "--groups", "1", "--what", "heads"]),
        ("recipe missing", ["run", str(tmp_path / "none.toml")]),
        ("recipe not TOML", ["run", str(tmp_path / "bad.toml")]),
        ("recipe unknown stage", ["run", str(tmp_path / "stage.toml")]),
        ("recipe wrong type", ["run", str(tmp_path / "type.toml")]),
        ("recipe out-of-range number", ["run", str(tmp_path / "range.toml")]),
        ("list an empty workspace", ["list"]),
        ("bench an empty workspace", ["bench"]),
        ("report an empty workspace", ["report"]),
        ("quantize a folder that is no variant", ["quantize", str(tiny_base)]),
    ]


def test_bad_input_is_one_line_and_exit_2_with_nothing_written(run_cli, workspace, tmp_path, tiny_base, glue_dir):
    for name, args in bad_inputs(tmp_path, tiny_base, glue_dir):
        code, out, err = run_cli("--workspace", workspace, *args)
        assert code == 2, (name, code, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("compress: error: "), (name, err)
        assert "Traceback" not in err + out, name
        assert list(workspace.iterdir()) == [], (name, list(workspace.iterdir()))


def test_bad_input_in_a_real_process_has_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "compress", "--workspace", str(tmp_path), "teacher", "--base", "bert-bsae"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "compress: error: unknown base 'bert-bsae': choose one of bert-base, minilm-l6, mpnet-base, "
        "a local folder, or a hub id such as org/name"
    )


def test_teacher_command_trains_and_then_reports_the_existing_teacher(run_cli, workspace, tiny_base, learnable_csv):
    args = ["--workspace", workspace, "teacher", "--base", tiny_base, "--name", "tiny", "--task", learnable_csv,
            "--text-column", "sentence", "--epochs", "2", "--lr", "1e-3", "--max-length", "32", "--precision", "fp32"]
    code, out, err = run_cli(*args)
    assert code == 0, err
    assert f"teacher {workspace}/teachers/tiny/reviews: dev accuracy" in out
    code, out, _ = run_cli(*args)
    assert code == 0 and "exists (dev" in out and "--force" in out


def test_export_says_which_graph_it_kept_in_words():
    from compress.stages import graph_kept

    assert graph_kept({"optimized": True, "fused_ops": {"Attention": 6, "SkipLayerNormalization": 12}}) == \
        "optimized graph, fused: 6 Attention, 12 SkipLayerNormalization"
    assert graph_kept({"optimized": False, "fused_ops": {"Attention": 6}}) == \
        "plain graph (the optimizer's graph was not faster)"
    assert graph_kept({"optimized": False}) == "plain graph (--no-optimize)"
