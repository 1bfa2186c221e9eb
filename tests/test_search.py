"""compress search: a latency table by measurement, a proxy, trials through the stages, a recipe that reproduces."""

import json
import tomllib

import pytest

from compress.pipeline.search import Shape, under_budget
from compress.variant import Variant

from conftest import CONFIGS

# two shapes x two precisions of the 2-layer tiny teacher's 1-layer students: seconds, not minutes
SMALL = ("--depths", "1", "--keep-heads", "1,0.5", "--keep-ffn", "1", "--precisions", "fp32,int8-dynamic", "--shape", "1x16",
         "--epochs", "1", "--lr", "1e-3", "--batch-size", "16", "--max-length", "32", "--precision", "fp32",
         "--recover-epochs", "0", "--proxy-examples", "32")


@pytest.fixture
def searched(run_cli, tiny_teacher):
    teacher, task = tiny_teacher
    workspace = teacher.workspace
    code, out, err = run_cli("--workspace", workspace, "search", "--teacher", "tiny", "--task",
                             teacher.record.data["source"], "--text-column", "sentence",
                             "--budget-ms", "1000", "--trials", "2", *SMALL)
    assert code == 0, err
    return workspace, out


def test_search_trains_the_best_by_proxy_and_writes_a_recipe_that_reproduces(searched, run_cli):
    workspace, out = searched
    record = json.loads((workspace / "reports" / "search-reviews-1000ms.json").read_text())
    rows = record["table"]["rows"]
    assert {r["candidate"] for r in rows} == {"L1-h2-f128-fp32", "L1-h2-f128-int8-dynamic", "L1-h4-f128-fp32",
                                              "L1-h4-f128-int8-dynamic"}
    assert all(r["p50_ms"] > 0 and r["under_budget"] for r in rows)
    # the 2-head students are contained in the 4-head ones of their precision: only the latter reach the proxy
    assert set(record["proxy"]["candidates"]) == {"L1-h4-f128-fp32", "L1-h4-f128-int8-dynamic"}
    assert all(c["kl"] >= 0 for c in record["proxy"]["candidates"].values())
    assert len(record["trials"]) == 2
    for trial in record["trials"]:
        variant = Variant.load(workspace / trial["variant"])
        assert trial["accuracy"] == variant.benches[record["machine_key"]]["dev"]["accuracy"]
        assert trial["measured_p50_ms"] > 0 and trial["train_s"] > 0
        low, high = trial["measured_p50_range_ms"]  # the median of the rounds it was timed in turn with the others
        assert low <= trial["measured_p50_ms"] <= high
        assert trial["bench_p50_ms"] == variant.benches[record["machine_key"]]["latency_ms"]["ort-cpu"]["1x16"]["p50"]
    winner = record["winner"]
    assert winner["accuracy"] == max(t["accuracy"] for t in record["trials"])
    assert f"winner {winner['candidate']}" in out
    code, _, err = run_cli("--workspace", workspace, "bench", "--shapes", "1x16")  # every variant, for the plot
    assert code == 0, err
    code, _, err = run_cli("--workspace", workspace, "report")
    assert code == 0, err
    page = (workspace / "reports" / "tiny-reviews.html").read_text()
    assert "Search: the most accurate student under 1000 ms at 1x16" in page
    assert f"Winner: <b>{winner['candidate']}</b>" in page and "search winner (1000 ms)" in page

    recipe = workspace / record["recipe"]
    stages = tomllib.loads(recipe.read_text())["stages"]
    assert stages[0] == {**stages[0], "verb": "distill", "layers": 1}
    assert [s["verb"] for s in stages] == ["distill"] + (["quantize"] if "int8" in winner["candidate"] else [])
    teacher = workspace / "teachers" / "tiny" / "reviews"
    before = {p: p.stat().st_mtime_ns for p in teacher.rglob("*") if p.is_file()}
    code, out, err = run_cli("--workspace", workspace, "run", recipe, "--keep-teacher")
    assert code == 0, err
    assert out.count("unchanged, skipped") == len(stages) + 1 and "$ compress" not in out
    assert {p: p.stat().st_mtime_ns for p in teacher.rglob("*") if p.is_file()} == before  # not even stamped

    # the table is cached for this machine: a second search measures nothing
    code, out, err = run_cli("--workspace", workspace, "search", "--teacher", "tiny", "--task",
                             Variant.load(teacher).record.data["source"], "--text-column", "sentence",
                             "--budget-ms", "1000", "--trials", "1", *SMALL)
    assert code == 0, err
    again = json.loads((workspace / "reports" / "search-reviews-1000ms.json").read_text())
    assert again["table"]["shapes_measured_now"] == 0 and record["table"]["shapes_measured_now"] == 2
    assert record["table"]["drift"] is None and again["table"]["drift"]["candidate"] == "L1-h2-f128-fp32"
    assert again["table"]["drift"]["ratio"] > 0
    assert [r["p50_ms"] for r in again["table"]["rows"]] == [r["p50_ms"] for r in rows]
    # the same schedule trains nothing again; another one makes its own trials and leaves these alone
    assert again["trials"][0]["variant"] == record["trials"][0]["variant"]
    assert again["trials"][0]["train_s"] == record["trials"][0]["train_s"]
    made = {t["variant"]: (workspace / t["variant"] / "variant.json").read_bytes() for t in record["trials"]}
    longer = dict(zip(SMALL[::2], SMALL[1::2]), **{"--epochs": "2"})
    code, out, err = run_cli("--workspace", workspace, "search", "--teacher", "tiny", "--task",
                             Variant.load(teacher).record.data["source"], "--text-column", "sentence",
                             "--budget-ms", "1000", "--trials", "1", *[x for pair in longer.items() for x in pair])
    assert code == 0, err
    other = json.loads((workspace / "reports" / "search-reviews-1000ms.json").read_text())
    assert other["trials"][0]["variant"] not in made
    assert {v: (workspace / v / "variant.json").read_bytes() for v in made} == made


def test_a_machine_that_changed_since_its_cached_table_is_named(run_cli, searched):
    """A cached time 100x too fast stands for a machine whose state moved: the search re-times a shape and says so."""
    workspace, _ = searched
    cache_path = workspace / "reports" / "search" / "latency.json"
    cache = json.loads(cache_path.read_text())
    for by_shape in cache.values():
        for timings in by_shape.values():
            for timing in timings.values():
                timing["p50"] /= 100
    cache_path.write_text(json.dumps(cache))
    teacher = Variant.load(workspace / "teachers" / "tiny" / "reviews")
    code, out, err = run_cli("--workspace", workspace, "search", "--teacher", "tiny", "--task",
                             teacher.record.data["source"], "--text-column", "sentence", "--budget-ms", "1000",
                             "--trials", "1", *SMALL)
    assert code == 0, err
    assert "its cached time now: this machine's state has changed" in out and "to measure the table afresh" in out
    record = json.loads((workspace / "reports" / "search-reviews-1000ms.json").read_text())
    assert record["table"]["drift"]["ratio"] > 10


def test_the_winner_is_judged_on_the_rounds_not_on_one_bench_block(run_cli, tiny_teacher, monkeypatch):
    """Trials whose median over the rounds (timed in turn) is over the budget do not win, whatever their
    single bench block said: here the rounds are given, to put every trial over (a table's shapes timed
    again, keyed by Shape, stay under it)."""
    import compress.pipeline.search as search

    teacher, _ = tiny_teacher
    monkeypatch.setattr(search, "alternating", lambda sessions, batch, sequence, rounds, runs, **kwargs:
                        {name: [2000.0 if isinstance(name, str) else 1.0] * rounds for name in sessions})
    code, out, err = run_cli("--workspace", teacher.workspace, "search", "--teacher", "tiny", "--task",
                             teacher.record.data["source"], "--text-column", "sentence",
                             "--budget-ms", "1000", "--trials", "2", *SMALL)
    assert code == 2 and "none of the 2 trained candidates met 1000 ms when measured" in err
    record = json.loads((teacher.workspace / "reports" / "search-reviews-1000ms.json").read_text())
    assert record["winner"] is None and record["recipe"] is None
    assert all(t["measured_p50_ms"] == 2000.0 and t["bench_p50_ms"] < 1000 for t in record["trials"])


def test_a_corrupt_cache_is_measured_afresh_and_a_users_recipe_is_never_replaced(run_cli, tiny_teacher):
    teacher, _ = tiny_teacher
    workspace = teacher.workspace
    (workspace / "reports" / "search").mkdir(parents=True)
    (workspace / "reports" / "search" / "latency.json").write_text("[1, 2")
    (workspace / "search-reviews-0.001ms.toml").write_text("# my own recipe\n")
    args = ("--workspace", workspace, "search", "--teacher", "tiny", "--task", teacher.record.data["source"],
            "--text-column", "sentence", *SMALL)
    code, out, err = run_cli(*args, "--budget-ms", "0.001")
    assert code == 2 and "compress search did not write it" in err
    code, out, err = run_cli(*args, "--budget-ms", "0.002")
    assert code == 2 and "no candidate meets" in err and "unreadable: measuring afresh" in out
    cache = json.loads((workspace / "reports" / "search" / "latency.json").read_text())
    # measured again, into a whole file: the smaller shape; the larger contains it, far over budget: skipped
    assert list(next(iter(cache.values()))) == ["L1-h2-f128"]
    assert (workspace / "search-reviews-0.001ms.toml").read_text() == "# my own recipe\n"


def test_the_report_skips_a_search_record_it_cannot_read(run_cli, tiny_teacher):
    teacher, _ = tiny_teacher
    (teacher.workspace / "reports").mkdir()
    (teacher.workspace / "reports" / "search-reviews-3ms.json").write_text('{"task": "reviews", "teacher": "tiny"}')
    code, _, err = run_cli("--workspace", teacher.workspace, "report")
    assert code == 0, err
    assert "Search:" not in (teacher.workspace / "reports" / "tiny-reviews.html").read_text()


def timing(ms):
    return {"p50": ms, "p90": ms, "runs": 30}


def test_only_candidates_no_other_contains_go_on():
    big, small, other = Shape(2, 4, 64), Shape(1, 2, 64), Shape(1, 4, 32)
    table = {"shapes": {big: {"fp32": timing(9), "int8-dynamic": timing(4)},
                        small: {"fp32": timing(3), "int8-dynamic": timing(2)},
                        other: {"fp32": timing(3), "int8-dynamic": None}}}
    kept = {c.name for c in under_budget(table, 5)}
    # fp32: big is over the budget, so the two smaller ones stay; int8: big contains small
    assert kept == {"L1-h2-f64-fp32", "L1-h4-f32-fp32", "L2-h4-f64-int8-dynamic"}
    table["shapes"][big]["int8-dynamic"] = timing(4.8)  # fits, but too close to the budget to rely on
    assert "L1-h2-f64-int8-dynamic" in {c.name for c in under_budget(table, 5)}


def test_a_shape_containing_one_over_budget_in_every_precision_is_not_measured():
    from compress.pipeline.search import beyond_budget

    table = {Shape(1, 2, 32): {"fp32": timing(6), "int8-dynamic": timing(4)}}
    assert not beyond_budget(Shape(2, 2, 32), table, 5)  # it fits in int8: the deeper one may too
    table[Shape(1, 2, 32)]["int8-dynamic"] = timing(5.3)
    assert not beyond_budget(Shape(2, 2, 32), table, 5)  # over, but within timing noise of the budget
    table[Shape(1, 2, 32)]["int8-dynamic"] = timing(5.6)
    assert beyond_budget(Shape(2, 2, 32), table, 5)
    assert not beyond_budget(Shape(1, 1, 32), table, 5)  # smaller: not contained


@pytest.mark.parametrize("flags, message", [
    (("--budget-ms", "0.000001"), "no candidate meets"),
    (("--budget-ms", "5", "--keep-heads", "0"), "--keep-heads 0: each fraction kept must be above 0"),
    (("--budget-ms", "5", "--heads", "0.5"), "search --heads is now --keep-heads (the fraction of each layer's"),
    (("--budget-ms", "5", "--ffn", "0.5"), "search --ffn is now --keep-ffn"),
    (("--budget-ms", "5", "--depths", "2"), "the teacher has 2 layers"),
    (("--budget-ms", "5", "--precisions", "fp16"), "on cpu choose from fp32, int8-dynamic, int8-static"),
    (("--budget-ms", "5", "--shape", "1by16"), "BATCHxSEQUENCE"),
    (("--budget-ms", "5", "--shape", "1x16,1x32"), "--shape takes one BATCHxSEQUENCE shape"),
    (("--budget-ms", "5", "--shape", "1x4096"), "--shape sequence 4096 is outside what this model takes"),
    (("--budget-ms", "5", "--device", "cuda"), "--device cuda needs a CUDA GPU"),
])
def test_bad_search_input_is_one_line(run_cli, tiny_teacher, flags, message):
    teacher, _ = tiny_teacher
    small = dict(zip(SMALL[::2], SMALL[1::2]))
    small.update(dict(zip(flags[::2], flags[1::2])))
    code, out, err = run_cli("--workspace", teacher.workspace, "search", "--teacher", "tiny", "--task",
                             teacher.record.data["source"], "--text-column", "sentence",
                             *[x for pair in small.items() for x in pair])
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (teacher.workspace / "students").exists()


@pytest.mark.parametrize("arch", CONFIGS)
def test_a_random_candidate_has_the_shape_the_stages_give(arch):
    """Its layers are cut as distill cuts them (ModernBERT's attention types follow), its widths as pruned."""
    from compress.model.arch import select_layers
    from compress.pipeline.search import random_student
    from compress.stages.prune import current_structure

    config = CONFIGS[arch]
    model = random_student(config, Shape(3, 2, 32))
    structure = current_structure(model)
    assert model.config.num_hidden_layers == 3 and structure["neurons"] == [32] * 3
    assert [len(h) for h in structure["heads"]] == [2] * 3
    ids = select_layers(config.num_hidden_layers, 3, "alternate")
    if getattr(config, "layer_types", None):
        assert model.config.layer_types == [config.layer_types[i] for i in ids]


def test_a_larger_shape_is_never_predicted_faster_than_one_it_contains():
    from compress.pipeline.search import broken_pairs, monotone

    small, wide, deep = Shape(1, 2, 32), Shape(1, 4, 32), Shape(2, 4, 32)
    table = {small: {"fp32": timing(3.36)}, wide: {"fp32": timing(2.12)}, deep: {"fp32": timing(3.2)}}
    # the wide one contains the small one and measured 37% faster: beyond noise, both are timed again
    assert broken_pairs(table, "fp32") == {small, wide}
    table[wide]["fp32"] = timing(3.2)  # within timing noise (MARGIN) of 3.36: not timed again ...
    assert broken_pairs(table, "fp32") == set()
    raised = monotone(table, "fp32")  # ... but raised to it, as is every shape that contains it
    assert [r["candidate"] for r in raised] == ["L1-h4-f32-fp32", "L2-h4-f32-fp32"]
    assert table[wide]["fp32"]["p50"] == table[deep]["fp32"]["p50"] == 3.36
    assert table[wide]["fp32"]["measured_p50"] == 3.2 and monotone(table, "fp32") == []


def test_a_search_without_a_winner_names_the_closest_trial_and_what_already_meets_the_budget(
        run_cli, tiny_teacher, monkeypatch):
    import compress.pipeline.search as search

    teacher, task = tiny_teacher
    workspace, source = teacher.workspace, teacher.record.data["source"]
    code, _, err = run_cli("--workspace", workspace, "distill", "--teacher", "tiny", "--task", source, "--text-column",
                           "sentence", "--layers", "1", "--epochs", "1", "--max-length", "32", "--precision", "fp32",
                           "--name", "mine")
    assert code == 0, err
    mine = workspace / "students" / "tiny" / "reviews" / "mine"
    for command in (("export", mine), ("bench", mine, "--shapes", "1x16")):  # the search compares ORT timings
        code, _, err = run_cli("--workspace", workspace, *command)
        assert code == 0, err
    slower = iter([1500.0, 1200.0])
    monkeypatch.setattr(search, "alternating", lambda sessions, batch, sequence, rounds, runs, **kwargs:
                        {name: [1.0 if isinstance(name, search.Shape) else 900.0 if name.endswith("twin")
                                else next(slower)] * rounds for name in sessions})
    code, out, err = run_cli("--workspace", workspace, "search", "--teacher", "tiny", "--task", source,
                             "--text-column", "sentence", "--budget-ms", "1000", "--trials", "2", *SMALL)
    assert code == 2
    assert "the closest, " in err and "took 1200.00 ms (20% over)" in err
    assert "students/tiny/reviews/mine already meets it" in err
    assert "its twin 900.00 now" in out and "this machine's state moved between the table and the trials" in out
    record = json.loads((workspace / "reports" / "search-reviews-1000ms.json").read_text())
    assert [h["variant"] for h in record["handmade_under_budget"]] == ["students/tiny/reviews/mine"]
    assert all(t["twin_p50_ms"] == 900.0 for t in record["trials"])


def test_exporting_a_pruned_candidate_keeps_ortss_width_note_off_the_console(tmp_path, caplog):
    """Told the pruned attention width on purpose, ORT's fusion warns "Input hidden size (N) is not same as ..."."""
    import logging

    from transformers import AutoTokenizer, BertConfig

    from compress.model.registry import resolve_base
    from compress.pipeline.search import random_student
    from compress.runtime.export import write_graphs

    tokenizer = AutoTokenizer.from_pretrained(resolve_base("minilm-l6"))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_attention_heads=4, num_hidden_layers=2,
                        intermediate_size=128)
    model = random_student(config, Shape(2, 2, 64)).eval()  # 2 of 4 heads: attention 32 wide in a 64-wide model
    with caplog.at_level(logging.WARNING):
        record = write_graphs(model, tokenizer, tmp_path)
    assert "fused_ops" in record and "Input hidden size" not in caplog.text


def test_every_trial_distils_with_the_kd_settings_given():
    """Only the distill stage names them: prune and quantize inherit them from the student (compress.training.kd)."""
    from compress.configs import KD, SearchConfig, TrainConfig
    from compress.pipeline.search import Candidate, chain

    config = CONFIGS["bert"]
    candidate = Candidate(Shape(2, 2, 32), "int8-dynamic", {"p50": 1.0})
    train = TrainConfig(epochs=1, precision="fp32")
    plain = chain(candidate, config, {"teacher": "t"}, SearchConfig(budget_ms=5), train)
    tiny = chain(candidate, config, {"teacher": "t"}, SearchConfig(budget_ms=5), train,
                 KD(intermediate="hidden,attention", augment=2))
    assert [s["verb"] for s in tiny] == ["distill", "prune", "quantize"]
    assert tiny[0]["intermediate"] == "hidden,attention" and tiny[0]["augment"] == 2
    assert "intermediate" not in plain[0] and all("augment" not in s for s in tiny[1:])
    assert tiny[0]["name"] != plain[0]["name"]  # trained otherwise: trials of their own
