"""compress run: a recipe runs the whole chain, skips what is unchanged, re-runs what changed."""

import tomllib
from pathlib import Path

import pytest

from compress.variant import Variant

from conftest import write_learnable_csv, write_recipe


@pytest.fixture
def recipe_run(run_cli, tmp_path, tiny_base, learnable_csv):
    workspace = tmp_path / "ws"
    code, out, err = run_cli("init", workspace)
    assert code == 0, err
    recipe = write_recipe(workspace / "recipe.toml", tiny_base, learnable_csv)
    code, out, err = run_cli("--workspace", workspace, "run", recipe)
    assert code == 0, err
    return workspace, recipe, out


def test_a_recipe_runs_the_chain_then_skips_it_and_reruns_only_what_changed(run_cli, recipe_run, tiny_base,
                                                                            learnable_csv):
    workspace, recipe, out = recipe_run
    students = workspace / "students" / "tiny" / "reviews"
    chain = [workspace / "teachers" / "tiny" / "reviews", students / "L1", students / "L1-pruned",
             students / "L1-pruned-int8"]
    metas = [Variant.load(path).meta for path in chain]
    records = [(path / "variant.json").read_bytes() for path in chain]
    stamps = [Variant.load(path).recipe_stamp for path in chain]
    assert [m["stage"] for m in metas] == ["teacher", "distill", "prune", "quantize"]
    assert all(s["hash"] for s in stamps) and all(Variant.load(p).benches for p in chain)  # stamped, measured
    assert all("recipe" not in m for m in metas)  # the stamp is a file of its own: variant.json is the stage's
    assert Variant.load(chain[0]).export and (workspace / "reports" / "tiny-reviews.html").is_file()
    assert "report: " in out

    code, out, err = run_cli("--workspace", workspace, "run", recipe)
    assert code == 0, err
    assert out.count("unchanged, skipped") == 4 and "$ compress" not in out
    assert [Variant.load(p).recipe_stamp for p in chain] == stamps
    assert [(p / "variant.json").read_bytes() for p in chain] == records  # written once, by the stage

    # a shape added to [bench] measures the skipped stages again, and only that
    write_recipe(recipe, tiny_base, learnable_csv, shapes="1x16,2x8")
    code, out, err = run_cli("--workspace", workspace, "run", recipe)
    assert code == 0, err
    assert out.count("unchanged, skipped") == 4 and out.count("accuracy") == 4
    for path in chain:
        (timings,) = Variant.load(path).benches.values()
        assert all(set(by_shape) == {"1x16", "2x8"} for by_shape in timings["latency_ms"].values())
    write_recipe(recipe, tiny_base, learnable_csv)

    write_recipe(recipe, tiny_base, learnable_csv, heads=0.25)
    code, out, err = run_cli("--workspace", workspace, "run", recipe, "--dry-run")
    assert code == 0, err
    lines = [line for line in out.splitlines() if "->" in line]
    assert ["skipped" in line for line in lines] == [True, True, False, False]  # prune and what follows it
    code, out, err = run_cli("--workspace", workspace, "run", recipe)
    assert code == 0, err
    assert Variant.load(students / "L1-pruned").meta["structure"]["removed"]["heads"] == 1  # 25% of 4 heads
    assert Variant.load(chain[1]).recipe_stamp == stamps[1]  # the student was not redone

    # a variant made by hand (no stamp) is remade, unless --adopt takes it as the recipe's own
    (chain[0] / "recipe.json").unlink()
    code, out, _ = run_cli("--workspace", workspace, "run", recipe, "--dry-run")
    assert out.count("to run") == 4
    code, out, _ = run_cli("--workspace", workspace, "run", recipe, "--dry-run", "--adopt")
    assert out.count("unchanged, skipped") == 4

    code, out, err = run_cli("--workspace", workspace, "list")
    assert code == 0, err
    assert "students/tiny/reviews/L1-pruned-int8" in out and "quantize" in out


def test_a_kept_teacher_fine_tuned_again_has_its_students_made_again(run_cli, recipe_run, tiny_base, learnable_csv):
    """--keep-teacher takes the teacher as it is, so the stages follow that very fine-tune, not its recipe table."""
    workspace, recipe, _ = recipe_run
    teacher = workspace / "teachers" / "tiny" / "reviews"
    stamp = (teacher / "recipe.json").read_bytes()
    code, out, err = run_cli("--workspace", workspace, "run", recipe, "--keep-teacher")
    assert code == 0, err
    assert out.count("unchanged, skipped") == 4 and "$ compress" not in out  # the recipe's own teacher: as made
    assert (teacher / "recipe.json").read_bytes() == stamp
    code, _, err = run_cli("--workspace", workspace, "teacher", "--base", tiny_base, "--name", "tiny", "--task",
                           learnable_csv, "--text-column", "sentence", "--epochs", "1", "--lr", "0.001",
                           "--batch-size", "16", "--max-length", "32", "--precision", "fp32", "--force")
    assert code == 0, err
    code, out, err = run_cli("--workspace", workspace, "run", recipe, "--keep-teacher", "--dry-run")
    assert code == 0, err
    lines = [line for line in out.splitlines() if "->" in line]
    assert ["skipped" in line for line in lines] == [True, False, False, False]  # the same table, a new teacher
    code, out, err = run_cli("--workspace", workspace, "run", recipe, "--keep-teacher")
    assert code == 0, err
    assert not (teacher / "recipe.json").exists()  # kept: not stamped as the recipe's
    code, out, err = run_cli("--workspace", workspace, "run", recipe, "--keep-teacher", "--dry-run")
    assert code == 0, err
    assert out.count("unchanged, skipped") == 4  # and its students, remade, are now skipped

    write_learnable_csv(learnable_csv, 500)  # other data under the same task name: the kept teacher's
    code, out, err = run_cli("--workspace", workspace, "run", recipe, "--keep-teacher", "--dry-run")
    assert code == 0, err
    assert out.count("unchanged, skipped") == 1


def test_bad_recipes_are_clear_errors(run_cli, tmp_path, tiny_base, learnable_csv):
    good = write_recipe(tmp_path / "good.toml", tiny_base, learnable_csv).read_text()
    cases = {
        "not toml": ("[teacher\n", "is not valid TOML"),
        "unknown section": (good + "\n[deploy]\n", "unknown section(s) deploy"),
        "no teacher": ("[[stages]]\nverb = \"distill\"\n", "needs a [teacher] table with a base"),
        "unknown verb": (good.replace('verb = "prune"', 'verb = "sparsify"'), "verb must be one of"),
        "unknown parameter": (good.replace("heads = 0.5", "headz = 0.5"), "unknown parameter 'headz'"),
        "from nowhere": (good.replace('verb = "quantize"', 'verb = "quantize"\nfrom = "L9"'), "from = 'L9' names no"),
        "list value": (good.replace("heads = 0.5", "heads = [0.5]"), "'heads' takes one value"),
    }
    workspace = tmp_path / "ws"
    for name, (text, message) in cases.items():
        recipe = tmp_path / f"{name.replace(' ', '-')}.toml"
        recipe.write_text(text)
        code, out, err = run_cli("--workspace", workspace, "run", recipe)
        assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, (name, err)
        assert not workspace.exists(), name


@pytest.mark.parametrize("recipe", ["compress/recipes/demo.toml", "benchmarks/headline-sst2.toml",
                                    "benchmarks/headline-mrpc.toml", "benchmarks/search-handmade-sst2.toml",
                                    "benchmarks/search-handmade-mrpc.toml"])
def test_committed_recipes_plan_cleanly(run_cli, tmp_path, glue_dir, monkeypatch, recipe):
    monkeypatch.setenv("COMPRESS_DATA", str(glue_dir))
    path = Path(__file__).resolve().parents[1] / recipe
    code, out, err = run_cli("--workspace", tmp_path / "ws", "run", path, "--dry-run")
    assert code == 0, err
    stages = tomllib.loads(path.read_text())["stages"]
    assert out.count("[to run]") == 1 + len(stages)


def test_the_small_data_preset_chains_tinybert_distillation_gradual_pruning_and_qat(run_cli, tmp_path):
    import tomllib

    from compress import api

    code, out, err = run_cli("init", tmp_path / "ws", "--preset", "small-data")
    assert code == 0, err
    recipe = tomllib.loads((tmp_path / "ws" / "recipe.toml").read_text())
    distill, prune, quantize = recipe["stages"]
    assert (distill["intermediate"], distill["augment"]) == ("hidden,attention", 2)
    assert prune["steps"] > 1 and "intermediate" not in prune and "augment" not in prune  # inherited
    assert quantize["qat-epochs"] == 1
    code, out, err = run_cli("--workspace", tmp_path / "ws", "run", tmp_path / "ws" / "recipe.toml", "--dry-run")
    assert code == 0, err  # every stage's flags are checked by its verb
    assert [line.split()[0] for line in out.splitlines()[2:5]] == ["distill", "prune", "quantize"], out
    # the API writes the same file; the demo stays the default
    assert api.init(str(tmp_path / "api"), "small-data").read_text() == (tmp_path / "ws" / "recipe.toml").read_text()
    assert "intermediate" not in api.init(tmp_path / "demo").read_text()
    code, _, err = run_cli("init", tmp_path / "x", "--preset", "large")
    assert code == 2 and "is not one of 'demo', 'small-data'" in err
