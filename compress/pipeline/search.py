"""`compress search`: the most accurate student under a latency budget, on the machine it runs on.

1. Latency table, measured: every candidate shape the stages can make (a depth of teacher layers,
   kept heads and FFN neurons per layer, a precision) is built with random weights, written by
   export's own code, quantized by quantize's, and timed by bench's ORT timing at the searched
   shape. Latency does not depend on weight values, so the table is cached per machine, threads,
   device, shape, runs, library versions and teacher architecture: the next search reads it.
   A search that reads the cache times its smallest shape again and warns when the machine's
   state has moved the time by more than timing noise (MARGIN): shared cores come and go.
   Shapes are measured smallest first; a shape is skipped once a shape it contains already
   exceeds the budget by more than timing noise (MARGIN) in every precision (more layers, heads
   or neurons are never faster).
2. Proxy: of the candidates under the budget, those contained in another one of the same
   precision that fits with room to spare (which keeps more of the teacher at no cost) are
   dropped; the rest are built from the teacher as the stages build them (distill's layer copy,
   prune's per-layer Taylor cut, int8 quantized from the plain graph: the same values as the kept
   one) with no training, and ranked by their KL divergence from the teacher on training rows.
   It costs seconds per candidate; how well it ranks trained accuracy is measured in
   benchmarks/results/search-<task>.json.
3. The K best by proxy are trained through the ordinary stages, as one recipe, and benched; their
   latency is then timed in turn, ROUNDS rounds (a slow spell of a shared machine falls on all).
4. The most accurate one whose measured latency meets the budget is written as a recipe that
   `compress run` reproduces, with the search's record beside it for the report.
"""

from __future__ import annotations

import copy
import hashlib
import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import onnxruntime as ort
import torch

from compress.configs import KD, PruneConfig, QuantizeConfig, SearchConfig, TrainConfig, parse_list
from compress.data.batches import check_max_length
from compress.data.tasks import Task
from compress.errors import UserError
from compress.machine import machine, training_precision
from compress.model.arch import keep_layers, make_student, select_layers
from compress.model.checkpoint import from_config, load_classifier, load_config, load_tokenizer
from compress.model.structure import SHARING_KEY, STRUCTURE_KEY, apply_structure, record
from compress.runtime import ort as runtime
from compress.runtime.export import MODEL, RAW, write_graphs
from compress.runtime.inference import predict_logits
from compress.runtime.latency import alternating, ort_latency_ms
from compress.stages.bench import PROVIDERS, key_here, parse_shapes
from compress.stages.prune import apply_pruning, current_structure, scoring_batches
from compress.stages.quantize import calibration_reader, ort_quantize
from compress.variant import Variant, main_metric, parent_path, relative_to_workspace
from compress.workspace import ONNX_DIR, inside, write_json, write_text

QUANTIZE_MODE = {"int8-dynamic": "dynamic", "int8-static": "static", "fp16": "fp16"}  # fp32 is the export itself
PRECISIONS = {"cpu": "fp32,int8-dynamic,int8-static", "cuda": "fp32,fp16"}
CACHE = "search/latency.json"
ROUNDS = 5  # the trials are timed in turn, this many rounds: their p50 is the median over rounds
MARGIN = 1.1  # timing noise on shared cores: a shape is only this much over (or under) the budget for sure
RECIPE_MARK = "# compress search:"  # the first line of every recipe it writes, so it replaces only its own


@dataclass(frozen=True, order=True)
class Shape:
    """A student's shape: depth, and the heads and FFN neurons every layer keeps."""

    depth: int
    heads: int
    neurons: int

    def contains(self, other: Shape) -> bool:
        return self.depth >= other.depth and self.heads >= other.heads and self.neurons >= other.neurons

    @property
    def key(self) -> str:
        return f"L{self.depth}-h{self.heads}-f{self.neurons}"


@dataclass(frozen=True)
class Candidate:
    shape: Shape
    precision: str
    latency_ms: dict  # p50, p90, runs at the searched shape

    @property
    def name(self) -> str:
        return f"{self.shape.key}-{self.precision}"


def _fractions(text: str, flag: str) -> list[float]:
    values = sorted(set(parse_list(text, flag, float)), reverse=True)
    if not values or not all(0 < v <= 1 for v in values):
        raise UserError(f"{flag} {text}: each fraction kept must be above 0 and at most 1")
    return values


def shapes(config: SearchConfig, teacher_config) -> list[Shape]:
    """The grid of shapes, smallest first. Default depths: a sixth, a quarter, a third, half and two
    thirds of the teacher's layers (12 layers: 2, 3, 4, 6, 8)."""
    depth = teacher_config.num_hidden_layers
    if config.depths:
        depths = sorted(set(parse_list(config.depths, "--depths", int)))
        if not depths or not all(1 <= d < depth for d in depths):
            raise UserError(f"--depths {config.depths}: the teacher has {depth} layers; choose from 1 to {depth - 1}")
    else:
        depths = sorted({max(1, round(depth * f)) for f in (1 / 6, 1 / 4, 1 / 3, 1 / 2, 2 / 3)} - {depth})
    heads, width = teacher_config.num_attention_heads, teacher_config.intermediate_size
    kept_heads = sorted({max(1, round(f * heads)) for f in _fractions(config.heads, "--keep-heads")})
    kept_neurons = sorted({max(1, round(f * width)) for f in _fractions(config.ffn, "--keep-ffn")})
    return sorted(Shape(d, h, n) for d in depths for h in kept_heads for n in kept_neurons)


def precisions(config: SearchConfig) -> list[str]:
    names = list(dict.fromkeys(parse_list(config.precisions or PRECISIONS[config.device], "--precisions")))
    allowed = parse_list(PRECISIONS[config.device], "--precisions")
    wrong = [p for p in names if p not in allowed]
    if wrong or not names:
        raise UserError(f"--precisions {config.precisions}: on {config.device} choose from {', '.join(allowed)}")
    return names


def check(config: SearchConfig) -> None:
    """Every flag that needs no teacher, checked before a teacher is fine-tuned for the search."""
    if len(parse_shapes(config.shape, "--shape")) != 1:
        raise UserError(f"--shape takes one BATCHxSEQUENCE shape, not '{config.shape}'")
    if config.device == "cuda" and not (torch.cuda.is_available()
                                        and PROVIDERS["cuda"] in ort.get_available_providers()):
        raise UserError("--device cuda needs a CUDA GPU that PyTorch sees and ONNX Runtime's CUDA provider "
                        "(pip install -e '.[gpu]')")
    _fractions(config.heads, "--keep-heads")
    _fractions(config.ffn, "--keep-ffn")
    precisions(config)


def random_student(teacher_config, shape: Shape):
    """A student of `shape` with random weights: the teacher's layers cut as distill cuts them (so
    per-layer attention types follow), then widths as a pruned checkpoint is rebuilt (its config
    records the per-layer shapes, so export tells ORT's optimizer the kept head count)."""
    config = copy.deepcopy(teacher_config)
    for key in (STRUCTURE_KEY, SHARING_KEY, "auto_map"):
        config.__dict__.pop(key, None)
    model = from_config(config, attn_implementation="eager")
    keep_layers(model, select_layers(teacher_config.num_hidden_layers, shape.depth, "alternate"))
    structure = current_structure(model)
    if (shape.heads, shape.neurons) != (structure["full_heads"], structure["full_neurons"]):
        structure["heads"] = [list(range(shape.heads))] * shape.depth
        structure["neurons"] = [shape.neurons] * shape.depth
        apply_structure(model, structure)
        record(model, STRUCTURE_KEY, structure)
    return model.eval()


def artifacts(model, tokenizer, folder: Path, wanted: list[str], calibration, optimize: bool = True
              ) -> dict[str, Path]:
    """The ONNX file of each precision, made as export and quantize make them (`optimize`: with the
    export's choice of graph, which changes the time, not the logits)."""
    write_graphs(model, tokenizer, folder, optimize=optimize)
    paths = {}
    for precision in wanted:
        if precision == "fp32":
            paths[precision] = folder / MODEL
            continue
        out, scratch = folder / precision, folder / f".{precision}-scratch"
        out.mkdir()
        scratch.mkdir()
        reader = calibration(folder / RAW) if precision == "int8-static" else None
        ort_quantize(folder, out / MODEL, scratch, QUANTIZE_MODE[precision], False, reader, False)
        paths[precision] = out / MODEL
    return paths


def twin_sessions(teacher_config, tokenizer, shape: Shape, wanted: list[str], calibration, threads: int,
                  device: str) -> dict[str, ort.InferenceSession]:
    """{precision: ORT session} of a random-weight `shape`, written and quantized as the stages do: what the
    table times, and the twin a trained trial is timed beside."""
    with tempfile.TemporaryDirectory(prefix="compress-search-") as tmp:
        files = artifacts(random_student(teacher_config, shape), tokenizer, Path(tmp), wanted, calibration)
        return {p: runtime.session(path, threads=threads, provider=PROVIDERS[device]) for p, path in files.items()}


def timing_calibration(task: Task, tokenizer, max_length: int):
    """Static int8's calibration for a graph that is only timed: a few rows (the scales change the values,
    not the time)."""
    return lambda raw: calibration_reader(raw, task, tokenizer, max_length, 16)


def beyond_budget(shape: Shape, table: dict, budget_ms: float) -> bool:
    """Whether a shape that `shape` contains was measured over the budget, by more than timing noise
    (MARGIN), in every precision."""
    return any(shape.contains(done) and all(t is not None and t["p50"] > budget_ms * MARGIN
                                            for t in by_precision.values())
               for done, by_precision in table.items())


def broken_pairs(shapes_table: dict, precision: str) -> set[Shape]:
    """The shapes of every pair in which the larger (which contains the smaller) measured faster by more than
    timing noise (MARGIN): a slow spell of shared cores during one of them, to be timed again side by side."""
    timed = [(shape, by[precision]["p50"]) for shape, by in shapes_table.items() if by.get(precision)]
    return {shape for big, big_p50 in timed for small, small_p50 in timed if big != small and big.contains(small)
            and big_p50 * MARGIN < small_p50 for shape in (big, small)}


def monotone(shapes_table: dict, precision: str) -> list[dict]:
    """Raise each shape's predicted p50 to the slowest shape it contains (more layers, heads or neurons are
    never faster), in place; returns what was raised. Sorted shapes list every contained shape first."""
    raised = []
    for shape in sorted(shapes_table):
        timing = shapes_table[shape].get(precision)
        if not timing:
            continue
        floor = max((by[precision]["p50"] for other, by in shapes_table.items()
                     if other != shape and shape.contains(other) and by.get(precision)), default=0.0)
        if floor > timing["p50"]:
            shapes_table[shape] = {**shapes_table[shape], precision: {**timing, "p50": floor,
                                                                       "measured_p50": timing["p50"]}}
            raised.append({"candidate": f"{shape.key}-{precision}", "measured_p50_ms": timing["p50"],
                           "raised_to_ms": floor})
    return raised


def cache_key(teacher_config, config: SearchConfig) -> str:
    """What a timing depends on: the machine, threads and device, the shape and runs, the libraries that
    write and run the graph, and the teacher's architecture (its whole config but depth and label names)."""
    arch = {k: v for k, v in teacher_config.to_dict().items()
            if k not in ("num_hidden_layers", "layer_types", "id2label", "label2id", "_name_or_path", "architectures",
                         "transformers_version", "auto_map", STRUCTURE_KEY, SHARING_KEY)}
    arch["num_labels"] = teacher_config.num_labels
    digest = hashlib.sha256(json.dumps(arch, sort_keys=True, default=str).encode()).hexdigest()[:12]
    versions = machine()["versions"]
    libraries = ", ".join(f"{name} {versions.get(name)}" for name in ("onnxruntime", "onnx", "torch", "transformers"))
    return (f"{key_here(config.threads, config.device)} | {config.shape}, {config.runs} runs | {libraries} | "
            f"{teacher_config.model_type} {teacher_config.hidden_size} hidden, {teacher_config.num_attention_heads} "
            f"heads, FFN {teacher_config.intermediate_size} ({digest})")


def _read_cache(path: Path, log) -> dict:
    """The cached tables; an unreadable file is measured afresh (it is only a cache) and said so."""
    try:
        cache = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        cache = None
    if not isinstance(cache, dict) or not all(isinstance(v, dict) for v in cache.values()):
        log(f"  {path} is unreadable: measuring afresh")
        return {}
    return cache


def _timings(entry) -> dict:
    """The well-formed timings of one cached shape."""
    entry = entry if isinstance(entry, dict) else {}
    return {p: t for p, t in entry.items()
            if isinstance(t, dict) and all(isinstance(t.get(k), (int, float)) for k in ("p50", "p90"))}


def latency_table(teacher: Variant, task: Task, config: SearchConfig, log=print) -> dict:
    """{shape: {precision: timing | None (skipped)}} for the grid, from the cache where it has them, and the
    drift: the smallest shape read from the cache, timed again now against its cached time."""
    teacher_config, tokenizer = load_config(teacher.path), load_tokenizer(teacher.path)
    wanted = precisions(config)
    (batch, sequence), = parse_shapes(config.shape, "--shape")
    cache_path = inside(teacher.workspace, teacher.workspace / "reports" / CACHE)
    cache = _read_cache(cache_path, log)
    key = cache_key(teacher_config, config)
    measured = cache.setdefault(key, {})
    threads = config.threads or torch.get_num_threads()
    calibration = timing_calibration(task, tokenizer, teacher.record.max_length)

    def timed(shape: Shape, precisions_here: list[str], timing) -> dict:
        """{precision: timing(session)} of a random-weight `shape`."""
        sessions = twin_sessions(teacher_config, tokenizer, shape, precisions_here, calibration, threads, config.device)
        return {p: timing(sess) for p, sess in sessions.items()}

    table, started, fresh = {}, time.perf_counter(), set()
    for shape in shapes(config, teacher_config):
        known = _timings(measured.get(shape.key))
        if beyond_budget(shape, table, config.budget_ms) and not all(p in known for p in wanted):
            table[shape] = {p: known.get(p) for p in wanted}
            continue
        missing = [p for p in wanted if p not in known]
        if missing:
            known.update(timed(shape, missing, lambda sess: ort_latency_ms(sess, batch, sequence, config.runs,
                                                                           vocab_size=teacher_config.vocab_size)))
            measured[shape.key] = known
            fresh.add(shape)
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            write_json(cache_path, cache)  # after every shape: an interrupted table keeps what it measured
            log(f"  {shape.key}: " + ", ".join(f"{p} {known[p]['p50']:.2f} ms" for p in missing))
        table[shape] = {p: known[p] for p in wanted}
    retimed, raised = [], []
    for precision in wanted:
        suspects = sorted(broken_pairs(table, precision))
        if suspects:  # timed again in turn, so that one slow spell falls on all of them
            sessions = {shape: twin_sessions(teacher_config, tokenizer, shape, [precision], calibration, threads,
                                             config.device)[precision] for shape in suspects}
            rounds = alternating(sessions, batch, sequence, ROUNDS, config.runs, vocab_size=teacher_config.vocab_size)
            for shape in suspects:
                before, now = table[shape][precision]["p50"], round(statistics.median(rounds[shape]), 3)
                measured[shape.key][precision] = table[shape][precision] = {**table[shape][precision], "p50": now,
                                                                             "retimed_from": before}
                retimed.append({"candidate": f"{shape.key}-{precision}", "before_p50_ms": before, "after_p50_ms": now})
            write_json(cache_path, cache)
            log("  timed again, in turn (a larger shape measured faster than one it contains): " + ", ".join(
                f"{r['candidate']} {r['before_p50_ms']:.2f} -> {r['after_p50_ms']:.2f} ms"
                for r in retimed[-len(suspects):]))
        raised += monotone(table, precision)
    drift = None
    reused = [shape for shape, by in table.items() if shape not in fresh and any(by.values())]
    if reused:  # measured on this machine, but a shared machine's state changes: time the smallest again
        shape = reused[0]
        precision = next(p for p in wanted if table[shape][p])
        now = timed(shape, [precision], lambda sess: statistics.median(alternating(
            {"probe": sess}, batch, sequence, ROUNDS, config.runs, vocab_size=teacher_config.vocab_size)["probe"])
        )[precision]
        cached = table[shape][precision]["p50"]
        drift = {"candidate": f"{shape.key}-{precision}", "cached_p50_ms": cached, "now_p50_ms": round(now, 3),
                 "ratio": round(now / cached, 3)}
    return {"key": key, "shapes": table, "measured_now": len(fresh), "drift": drift, "cache": str(cache_path),
            "retimed": retimed, "raised": raised, "wall_s": round(time.perf_counter() - started, 1)}


def under_budget(table: dict, budget_ms: float) -> list[Candidate]:
    """Candidates whose measured latency meets the budget, less those that another one of the same
    precision contains and that fits with room to spare (MARGIN): the larger keeps more of the teacher,
    while a larger one close to the budget may measure over it once trained, so its smaller ones stay."""
    fits = [Candidate(shape, precision, timing) for shape, by_precision in table["shapes"].items()
            for precision, timing in by_precision.items() if timing is not None and timing["p50"] <= budget_ms]
    return [c for c in fits if not any(o.precision == c.precision and o.shape != c.shape and o.shape.contains(c.shape)
                                       and o.latency_ms["p50"] * MARGIN <= budget_ms for o in fits)]


def prune_fractions(shape: Shape, teacher_config) -> tuple[float, float]:
    """prune's --heads and --neurons (fractions removed, per layer) that leave `shape`'s widths."""
    heads, width = teacher_config.num_attention_heads, teacher_config.intermediate_size
    return (heads - shape.heads) / heads, (width - shape.neurons) / width


def proxy(teacher: Variant, task: Task, candidates: list[Candidate], config: SearchConfig, seed: int,
          log=print) -> dict[str, float]:
    """{candidate name: KL(teacher || candidate)} on `config.proxy_examples` training rows, each candidate
    built from the teacher as the stages build it but not trained, and run as its ONNX file (int8 ones
    quantized from the plain graph, which computes what the kept graph does)."""
    tokenizer, teacher_config = load_tokenizer(teacher.path), load_config(teacher.path)
    teacher_model = load_classifier(teacher.path).eval()
    max_length = teacher.record.params["max_length"]
    batches = scoring_batches(task, tokenizer, max_length, config.proxy_examples, seed, teacher=teacher)
    rows = task.encode(task.train.shuffle(seed=seed).select(range(min(config.proxy_examples, len(task.train)))),
                       tokenizer, max_length)  # the rows the batches were drawn from
    reference = predict_logits(teacher_model, rows, tokenizer)
    depth = teacher_config.num_hidden_layers

    def calibration(raw: Path):  # as many rows as quantize calibrates on
        return calibration_reader(raw, task, tokenizer, max_length, QuantizeConfig.calibration)

    by_shape: dict[Shape, list[str]] = {}
    for c in candidates:
        by_shape.setdefault(c.shape, []).append(c.precision)
    kl = {}
    for shape, wanted in sorted(by_shape.items()):
        model = make_student(teacher_model, select_layers(depth, shape.depth, "alternate"))
        heads, neurons = prune_fractions(shape, teacher_config)
        if heads or neurons:
            apply_pruning(model, current_structure(model), PruneConfig(heads=heads, neurons=neurons, scope="per-layer"),
                          batches, seed, task.kind)
        with tempfile.TemporaryDirectory(prefix="compress-proxy-") as tmp:
            files = artifacts(model.eval(), tokenizer, Path(tmp), wanted, calibration, optimize=False)
            for precision, path in files.items():
                logits = runtime.logits(runtime.session(path), rows, tokenizer)
                name = Candidate(shape, precision, {}).name
                kl[name] = task.kind.divergence(logits, reference)
                log(f"  {name}: KL {kl[name]:.4f}")
    return kl


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)  # numbers, and strings as TOML basic strings


def _ours(recipe: Path) -> bool:
    try:
        return recipe.is_file() and not recipe.is_symlink() and recipe.read_text().startswith(RECIPE_MARK)
    except (OSError, UnicodeDecodeError):
        return False


def recipe_text(teacher_table: dict, stages: list[dict], header: str) -> str:
    lines = [f"{RECIPE_MARK} {header.splitlines()[0]}"] + [f"# {line}" for line in header.splitlines()[1:]]
    lines += ["", "[teacher]"]
    lines += [f"{key} = {_toml_value(value)}" for key, value in teacher_table.items()]
    for stage in stages:
        lines += ["", "[[stages]]"] + [f"{key} = {_toml_value(value)}" for key, value in stage.items()]
    return "\n".join(lines) + "\n"


def teacher_table(teacher: Variant, task_params: dict) -> dict:
    """The recipe's [teacher]: this teacher, its task flags, and how to fine-tune it again in a fresh workspace."""
    params = teacher.record.params
    base = str(Path(params["base"]).resolve()) if Path(params["base"]).exists() else params["base"]  # a local folder
    return {"name": teacher.record.name, "base": base, **task_params,
            **{key.replace("_", "-"): params[key] for key in ("epochs", "lr", "batch_size", "max_length", "seed")
               if key in params}}


def _trained_name(base: str, *params: dict) -> str:
    """`base` and a digest of the teacher, data and training that make it: a search with another schedule,
    other data or a teacher fine-tuned again makes its own trials instead of remaking (in place) those
    that an earlier search's record and recipe name."""
    return f"{base}-{hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:6]}"


def chain(candidate: Candidate, teacher_config, origin: dict, config: SearchConfig, train: TrainConfig,
          kd: KD | None = None) -> list[dict]:
    """The recipe stages that make `candidate` from the teacher (`origin`: its fine-tune and the data, for the
    names): distill its depth with the KD settings given (`kd`: the pruned and quantized stages inherit
    them from it), prune its widths, quantize it. A precision that `auto` picks here is left to `auto`,
    so the recipe trains well on another CPU."""
    shape = candidate.shape
    precision = {} if train.precision == training_precision("auto") else {"precision": train.precision}
    given = {key.replace("_", "-"): value for key, value in (kd.as_dict() if kd else {}).items() if value is not None}
    distill = {"layers": shape.depth, "epochs": train.epochs, "lr": train.lr, "batch-size": train.batch_size,
               "max-length": train.max_length, "seed": train.seed, **precision, **given}
    stages = [{"verb": "distill", "from": "teacher",
               "name": _trained_name(f"search-L{shape.depth}", origin, distill), **distill}]
    heads, neurons = prune_fractions(shape, teacher_config)
    if heads or neurons:
        prune = {"heads": round(heads, 6), "neurons": round(neurons, 6), "scope": "per-layer",
                 "recover-epochs": config.recover_epochs, "batch-size": train.batch_size, "seed": train.seed,
                 **precision}
        stages.append({"verb": "prune", "from": stages[-1]["name"],
                       "name": _trained_name(f"search-{shape.key}", origin, distill, prune), **prune})
    if candidate.precision != "fp32":
        stages.append({"verb": "quantize", "from": stages[-1]["name"], "name": f"{stages[-1]['name']}-"
                       f"{candidate.precision}", "mode": QUANTIZE_MODE[candidate.precision]})
    return stages


def label(task: str, budget_ms: float) -> str:
    return f"search-{task}-{budget_ms:g}ms"


def train_seconds(variant: Variant, stop: Path) -> dict[str, float]:
    """{variant path: training seconds} along `variant`'s lineage up to `stop` (the teacher)."""
    seconds = {}
    while variant.path.resolve() != stop.resolve():
        seconds[str(variant.path)] = (variant.record.extra.get("train") or {}).get("wall_s", 0.0)
        variant = Variant.load(parent_path(variant))
    return seconds


def search(teacher: Variant, task: Task, config: SearchConfig, train: TrainConfig, task_params: dict,
           command: str, log=print, kd: KD | None = None) -> dict:
    """Steps 1 to 4 of the module's docstring; returns the record written to reports/<label>.json.

    `kd`: the distillation settings every trial trains with (intermediate losses, augmentation...). The
    trials run as a recipe in the teacher's workspace, the teacher taken as it is (`compress run --keep-teacher`).
    """
    check(config)
    started = time.perf_counter()
    workspace, name = teacher.workspace, label(task.name, config.budget_ms)
    recipe_path = inside(workspace, workspace / f"{name}.toml")
    if recipe_path.exists() and not _ours(recipe_path):
        raise UserError(f"{recipe_path} exists and compress search did not write it: move it away first")
    teacher_config = load_config(teacher.path)
    (batch, sequence), = parse_shapes(config.shape, "--shape")
    check_max_length(sequence, load_tokenizer(teacher.path), teacher_config, flag="--shape sequence")
    table, ranked, kl, proxy_s = rank_candidates(teacher, task, config, train.seed, log)
    chosen = ranked[:config.trials]
    chains = {c.name: chain(c, teacher_config, {"teacher": teacher.made, "data": task.fingerprint}, config, train, kd)
              for c in chosen}
    table_of_teacher = teacher_table(teacher, task_params)
    train_trials(teacher, chains, table_of_teacher, name, command, log)
    trials, train_s = measure_trials(teacher, task, chosen, chains, kl, config, log)
    eligible = [t for t in trials if t["measured_p50_ms"] <= config.budget_ms
                and (config.max_drop is None or t["drop_points"] <= config.max_drop)]
    winner = max(eligible, key=lambda t: (t["score"], -t["measured_p50_ms"])) if eligible else None
    key, runtime_name = key_here(config.threads or torch.get_num_threads(), config.device), f"ort-{config.device}"
    handmade = handmade_under_budget(teacher, task, key, runtime_name, config)
    if handmade:
        best = handmade[0]
        log(f"already in the workspace under {config.budget_ms:g} ms (as benched): " + "; ".join(
            f"{h['variant']} {h['score']:.4f} at {h['p50_ms']:.2f} ms" for h in handmade))
        if winner:
            log(f"the search's winner is {'better than' if winner['score'] > best['score'] else 'no better than'} "
                f"the best of them, {best['variant']} ({winner['score']:.4f} against {best['score']:.4f})")
    result = {
        "teacher": teacher.record.name, "task": task.name, "teacher_accuracy": teacher.record.metrics["dev"].get("accuracy"),
        "budget_ms": config.budget_ms, "shape": config.shape, "machine_key": key, "command": command,
        "config": asdict(config), "table": table_record(table, config), "proxy": {
            "what": "KL(teacher || candidate) at T=1 on training rows, each candidate built from the teacher "
                    "(layer copy, per-layer Taylor cut, artifact) and not trained; lower ranks first",
            "examples": config.proxy_examples, "wall_s": proxy_s,
            "candidates": {c.name: {"kl": round(kl[c.name], 5), "predicted_p50_ms": c.latency_ms["p50"]}
                           for c in ranked}},
        "trials": trials, "handmade_under_budget": handmade, "train_s_total": train_s, "winner": winner,
        "recipe": None,
    }
    if winner:
        headline = task.kind.headline
        write_text(recipe_path, recipe_text(
            table_of_teacher, chains[winner["candidate"]],
            f"Found by `{command}`\non {key}: {winner['candidate']}, dev {headline} {winner['dev'][headline]:.4f}, "
            f"{winner['measured_p50_ms']:.2f} ms at {config.shape} (budget {config.budget_ms:g} ms).\n"
            f"Reproduce here: compress run {recipe_path.name} --keep-teacher (the trials made it: nothing runs again);\n"
            f"in a fresh workspace: compress run {recipe_path.name} (the teacher first)."))
        result["recipe"] = recipe_path.name
    elif recipe_path.exists():  # an earlier search's winner at this budget is not this one's
        recipe_path.unlink()
    result["wall_s"] = round(time.perf_counter() - started, 1)
    write_json(inside(workspace, workspace / "reports" / f"{name}.json"), result)
    if winner is None:
        raise UserError(no_winner(trials, handmade, config, name))
    return result


def rank_candidates(teacher: Variant, task: Task, config: SearchConfig, seed: int, log) -> tuple:
    """Steps 1 and 2: the latency table, the candidates under the budget, and their proxy, best first.
    Returns (table, ranked candidates, proxy KL by name, the proxy's seconds)."""
    log(f"latency table at {config.shape} ({key_here(config.threads, config.device)}):")
    table = latency_table(teacher, task, config, log)
    drift = table["drift"]
    if drift and not 1 / MARGIN <= drift["ratio"] <= MARGIN:
        log(f"warning: {drift['candidate']} takes {drift['ratio']:.2f}x its cached time now: this machine's state "
            "has changed since the table was measured (shared cores?) and every prediction may be off as much; "
            f"delete {table['cache']} to measure the table afresh")
    fits = under_budget(table, config.budget_ms)
    if not fits:
        fastest = min((t["p50"], f"{s.key}-{p}") for s, by in table["shapes"].items() for p, t in by.items() if t)
        raise UserError(f"no candidate meets {config.budget_ms:g} ms at {config.shape}: the fastest, {fastest[1]}, "
                        f"takes {fastest[0]:.2f} ms; raise --budget-ms or add smaller --depths/--keep-heads/--keep-ffn")
    log(f"{len(fits)} candidates under {config.budget_ms:g} ms; proxy (KL from the teacher, untrained):")
    proxy_started = time.perf_counter()
    kl = proxy(teacher, task, fits, config, seed, log)
    ranked = sorted(fits, key=lambda c: (kl[c.name], c.latency_ms["p50"]))
    return table, ranked, kl, round(time.perf_counter() - proxy_started, 1)


def train_trials(teacher: Variant, chains: dict, table_of_teacher: dict, name: str, command: str, log) -> None:
    """Step 3: every chosen candidate's chain, written as one recipe and run in the teacher's workspace
    (a stage two chains share runs once)."""
    from compress.pipeline import recipe

    workspace = teacher.workspace
    stages = {}
    for stages_of_one in chains.values():
        for stage in stages_of_one:
            stages.setdefault(stage["name"], stage)
    trials_recipe = inside(workspace, workspace / "reports" / "search" / f"{name}-trials.toml")
    trials_recipe.parent.mkdir(parents=True, exist_ok=True)
    write_text(trials_recipe, recipe_text(table_of_teacher, list(stages.values()),
                                          f"The trials of `{command}`: the {len(chains)} candidates ranked first by "
                                          "the proxy."))
    recipe.execute(recipe.plan(trials_recipe, workspace, keep_teacher=True), workspace, log=log)


def measure_trials(teacher: Variant, task: Task, chosen: list, chains: dict, kl: dict, config: SearchConfig,
                   log) -> tuple[list[dict], float]:
    """Step 4: each trial's accuracy on its artifact and its own bench record, then each timed in turn with
    its random-weight twin from the table: how far training moved the time, apart from how far the
    machine's state moved since the table was measured. Returns the trials' records and their training seconds."""
    from compress.runtime.export import export, needs_export
    from compress.stages.bench import bench

    (batch, sequence), = parse_shapes(config.shape, "--shape")
    teacher_config, tokenizer = load_config(teacher.path), load_tokenizer(teacher.path)
    students = teacher.workspace / "students" / teacher.record.name / task.name
    threads = config.threads or torch.get_num_threads()
    key, runtime_name = key_here(threads, config.device), f"ort-{config.device}"
    variants = {}
    for candidate in chosen:
        variant = Variant.load(students / chains[candidate.name][-1]["name"])
        if needs_export(variant):  # an fp32 trial; int8 ones have their own artifact
            export(variant)
        variants[candidate.name] = bench(variant, [(batch, sequence)], threads, config.device, config.runs)
    sessions = {name: runtime.session(v.path / ONNX_DIR / MODEL, threads=threads, provider=PROVIDERS[config.device])
                for name, v in variants.items()}
    calibration = timing_calibration(task, tokenizer, teacher.record.max_length)
    for c in chosen:
        sessions[f"{c.name} twin"] = twin_sessions(teacher_config, tokenizer, c.shape, [c.precision], calibration,
                                                   threads, config.device)[c.precision]
    rounds = alternating(sessions, batch, sequence, ROUNDS, config.runs, vocab_size=teacher_config.vocab_size)
    trials, trained = [], {}
    log(f"trials at {config.shape}, timed in turn with their random-weight twins ({ROUNDS} rounds):")
    for candidate in chosen:
        variant = variants[candidate.name]
        entry = variant.benches[key]
        timing = entry["latency_ms"][runtime_name][config.shape]
        p50, twin = statistics.median(rounds[candidate.name]), statistics.median(rounds[f"{candidate.name} twin"])
        seconds = train_seconds(variant, teacher.path)
        trained.update(seconds)
        metric = main_metric(entry["dev"])
        log(f"  {candidate.name}: {p50:.2f} ms (predicted {candidate.latency_ms['p50']:.2f}, its twin {twin:.2f} now), "
            f"{metric} {entry['dev'][metric]:.4f}")
        if not 1 / MARGIN <= twin / candidate.latency_ms["p50"] <= MARGIN:
            log(f"  warning: {candidate.name}'s twin takes {twin / candidate.latency_ms['p50']:.2f}x its time in the "
                "table: this machine's state moved between the table and the trials")
        trials.append({
            "candidate": candidate.name, "variant": str(variant.path.relative_to(teacher.workspace)),
            "proxy_kl": round(kl[candidate.name], 5), "predicted_p50_ms": candidate.latency_ms["p50"],
            "measured_p50_ms": round(p50, 3), "measured_p50_range_ms": [min(rounds[candidate.name]),
                                                                         max(rounds[candidate.name])],
            "bench_p50_ms": timing["p50"], "bench_p90_ms": timing["p90"],
            "measured_over_predicted": round(p50 / candidate.latency_ms["p50"], 4),
            "twin_p50_ms": round(twin, 3), "measured_over_twin": round(p50 / twin, 4),
            "accuracy": entry["dev"].get("accuracy"), "score": entry["dev"][metric], "dev": entry["dev"],
            "accuracy_from": entry["accuracy_from"],
            "drop_points": round(100 * (teacher.record.score - entry["dev"][metric]), 3),
            "train_s": round(sum(seconds.values()), 1),
        })
    return trials, round(sum(trained.values()), 1)


def table_record(table: dict, config: SearchConfig) -> dict:
    """The latency table as the search's record keeps it: each candidate's row, and how it was measured."""
    return {"key": table["key"], "wall_s": table["wall_s"], "shapes_measured_now": table["measured_now"],
            "drift": table["drift"], "retimed": table["retimed"], "raised": table["raised"],
            "rows": [{"candidate": f"{shape.key}-{p}", **asdict(shape), "precision": p,
                      **({"p50_ms": t["p50"], "p90_ms": t["p90"]} if t else {"skipped": True}),
                      "under_budget": bool(t and t["p50"] <= config.budget_ms)}
                     for shape, by in table["shapes"].items() for p, t in by.items()]}


def no_winner(trials: list[dict], handmade: list[dict], config: SearchConfig, name: str) -> str:
    """Why no trial won, in one line: the closest one, how far over the budget and how many points down."""
    closest = min(trials, key=lambda t: (max(t["measured_p50_ms"] / config.budget_ms, 1),
                                         max(t["drop_points"] - (config.max_drop or 0), 0)))
    over = 100 * (closest["measured_p50_ms"] / config.budget_ms - 1)
    return (f"none of the {len(trials)} trained candidates met {config.budget_ms:g} ms"
            + (f" within --max-drop {config.max_drop:g} points" if config.max_drop is not None else "")
            + f" when measured; the closest, {closest['candidate']}, took {closest['measured_p50_ms']:.2f} ms"
            + (f" ({over:.0f}% over)" if over > 0 else "")
            + f" at {closest['drop_points']:.2f} points below the teacher"
            + (f"; {handmade[0]['variant']} already meets it" if handmade else "")
            + f": see reports/{name}.json")


def handmade_under_budget(teacher: Variant, task: Task, key: str, runtime_name: str, config: SearchConfig
                          ) -> list[dict]:
    """The workspace's own variants of this teacher and task that a bench on this machine put under the
    budget at the searched shape, the best first: what the search has to beat (every search's trials,
    this one's included, are named search-...)."""
    from compress.variant import find_variants

    found = []
    for variant in find_variants(teacher.workspace, teacher.record.name, task.name):
        entry = variant.benches.get(key)
        timing = (entry or {}).get("latency_ms", {}).get(runtime_name, {}).get(config.shape)
        made_by_a_search = variant.record.name.startswith("search-")
        if variant.record.stage == "teacher" or made_by_a_search or not timing or timing["p50"] > config.budget_ms:
            continue
        dev = entry["dev"]
        found.append({"variant": relative_to_workspace(variant), "p50_ms": timing["p50"],
                      "score": dev[main_metric(dev)], "accuracy": dev.get("accuracy")})
    return sorted(found, key=lambda h: (-h["score"], h["p50_ms"]))
