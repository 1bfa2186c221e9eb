"""The stage table: every verb that makes a variant from another, its settings, how it runs and names its output.

The CLI builds those verbs from STAGES, a recipe's stages are checked against it and run through it
(compress.pipeline.recipe), and compress.api runs recipes and searches with it: a new stage is one module plus
one row here. Nothing here imports click, so a pipeline runs without the command line. Each function
says what it did in one line through `log` (the console's result lines).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from compress.configs import (
    RECOVERY_TRAINING,
    BenchConfig,
    DistillConfig,
    ExportConfig,
    LayerDropConfig,
    PruneConfig,
    QuantizeConfig,
    ShareConfig,
    TaskConfig,
    TrainConfig,
    table_keys,
)
from compress.errors import UserError
from compress.variant import main_metric


def say(line: str) -> None:
    """A result line on the console (stdout, at once: it is interleaved with progress bars on stderr)."""
    print(line, flush=True)


TRAINING = ("epochs", "lr", "batch_size", "max_length", "seed", "precision")
RECOVERY = ("lr", "batch_size", "seed", "precision")  # and the epochs: at the variant's own max length


@dataclass(frozen=True)
class Stage:
    """One verb that makes a variant: its settings, its run, its output's default name, and its input."""

    config: type  # the stage's own Settings dataclass
    run: Callable  # (input variant, config, train, name, replace, **switches) -> the variants it made
    name: Callable  # (input variant, config) -> the output's default name
    name_help: str  # that name in words, for --help and the docs
    help: str  # the verb's help text
    line: Callable  # (a variant it made) -> its result line
    takes: str = "variant"  # "teacher": a teacher and a task; "variant": a variant folder
    epochs_key: str | None = None  # the training schedule's epochs flag; None: the stage does not train
    switches: dict[str, str] = field(default_factory=dict)  # flags of their own: {name: help}, each a switch

    def training_keys(self) -> dict:
        """{recipe key: TrainConfig field} this stage's schedule takes (none for a stage that does not train)."""
        if self.epochs_key is None:
            return {}
        if self.takes == "teacher":
            return table_keys(TrainConfig, TRAINING)
        return table_keys(TrainConfig, ("epochs", *RECOVERY), epochs=self.epochs_key)

    def keys(self) -> dict:
        """Every recipe key of this stage but the task's and the teacher's: its flags without the dashes."""
        return {**table_keys(self.config), **self.training_keys()}

    def train_defaults(self) -> dict:
        return RECOVERY_TRAINING if self.takes == "variant" else {}


def summary(kind: str, variant) -> str:
    """A stage's one result line."""
    metrics, train = variant.record.metrics, variant.record.extra.get("train")
    dev = ", ".join(f"{k} {v:.4f}" for k, v in metrics["dev"].items())
    before = metrics.get("dev_before_training")
    return (f"{kind} {variant.path}: dev {dev}"
            + (f" (before training: {main_metric(before)} {before[main_metric(before)]:.4f})" if before else "")
            + (f", {train['wall_s']:.0f} s training" if train else "")
            + (f", retention {metrics['retention']:.3f}" if metrics.get("retention") is not None else ""))


def _distill(teacher, config, train, name, replace, task, reuse_teacher=False):
    from compress.stages.distill import distill

    return [distill(teacher, task, config, train, name, replace=replace, reuse_teacher=reuse_teacher)]


def _prune(parent, config, train, name, replace):
    from compress.stages.prune import prune

    return [prune(parent, config, train, name, replace=replace)]


def _layerdrop(parent, config, train, name, replace, no_baseline=False):
    from compress.stages.layerdrop import layerdrop

    return layerdrop(parent, config, train, name, baseline=not no_baseline, replace=replace)


def _share(parent, config, train, name, replace):
    from compress.stages.share import share

    return [share(parent, config, train, name, replace=replace)]


def _quantize(parent, config, train, name, replace):
    from compress.stages.quantize import quantize

    return [quantize(parent, config, name, replace=replace)]


def _default_name(module: str):
    """The stage module's own default_name(variant, config), imported when asked for."""
    def name(parent, config) -> str:
        from importlib import import_module

        return import_module(f"compress.stages.{module}").default_name(parent, config)

    return name


def _shared_line(variant) -> str:
    return (summary("shared", variant) + f", {variant.record.unique_parameters:,} unique of "
            f"{variant.record.parameters:,} parameters")


def _quantized_line(variant) -> str:
    """The drop is in points of the task's main metric (MCC for CoLA), against the variant quantize was given."""
    record = variant.record
    metrics = record.metrics
    metric = metrics["drop_metric"]
    return (f"quantized {variant.path}: dev {metric} {metrics['dev'][metric]:.4f} "
            f"({-metrics['drop_points']:+.2f} points against {metrics['drop_from']}), {record.size_mb} MB")


STAGES = {
    "distill": Stage(
        DistillConfig, _distill, _default_name("distill"),
        "L<N>-nokd, or L<N>-kd then -<loss> for each intermediate loss, -2phase, -aug<N>",
        "Distil a teacher into an N-layer student in students/<teacher>/<task>/<name>/.",
        lambda variant: summary("student", variant), takes="teacher", epochs_key="epochs",
        switches={"reuse-teacher": "Use the workspace's teacher even if it was fine-tuned on other data under this "
                                    "task's name."}),
    "prune": Stage(
        PruneConfig, _prune, _default_name("prune"), "<variant>-prune-h<%>n<%>-<importance>[-s<steps>]",
        "Remove attention heads, FFN neurons or whole layers of VARIANT physically, then recover it with KD "
        "(the KD settings VARIANT was trained with, unless a flag says otherwise).",
        lambda variant: summary("pruned", variant), epochs_key="recover-epochs"),
    "layerdrop": Stage(
        LayerDropConfig, _layerdrop, _default_name("layerdrop"), "<variant>-ld<rate%>-keep-<keep>",
        "Distil VARIANT with LayerDrop, keep a subset of its layers; and the baseline cut without LayerDrop "
        "(both with the KD settings VARIANT was trained with, unless a flag says otherwise).",
        lambda variant: summary(variant.record.stage, variant), epochs_key="epochs",
        switches={"no-baseline": "Skip the baseline: the same cut of VARIANT, recovered by KD."}),
    "share": Stage(
        ShareConfig, _share, _default_name("share"), "<variant>-share-g<G>-<what>",
        "Tie VARIANT's layers in groups (ALBERT-style), then recover with KD (VARIANT's KD settings, unless a flag "
        "says otherwise); cuts unique parameters, not FLOPs.",
        _shared_line, epochs_key="recover-epochs"),
    "quantize": Stage(
        QuantizeConfig, _quantize, _default_name("quantize"),
        "<variant>-int8-<mode>[-ffn-fp32][-pc], -fp16 or -torch-int8",
        "Quantize VARIANT into a new variant beside it; accuracy is measured on the quantized artifact. The KD "
        "flags apply to --qat-epochs, which otherwise trains with the KD settings VARIANT was trained with.",
        _quantized_line),
}


def report_existing(path: Path, log=say) -> bool:
    """Say so when a stage's output is already there (making it again needs --force)."""
    from compress.variant import Variant

    if not path.exists():
        return False
    if not (path / "variant.json").is_file():
        raise UserError(f"{path} exists and is not a variant compress made: choose another --name")
    variant = Variant.load(path)
    log(f"{path} exists (dev {variant.record.metrics['dev']}); --force makes it again")
    return True


def load_variant(path: Path):
    from compress.variant import Variant

    if not path.is_dir():
        raise UserError(f"no variant folder at {path}")
    return Variant.load(path)


def make_teacher(workspace: Path, base: str, task: TaskConfig, train: TrainConfig, name: str | None,
                 force: bool = False, log=say):
    """Fine-tune `base` on the task as teachers/<name>/<task>/, unless it is there (and not `force`)."""
    from compress.stages import teacher as stage
    from compress.workspace import check_name

    name = check_name(stage.default_name(base) if name is None else name,
                      "the teacher's name (from --base; give --name)" if name is None else "--name")
    data = task.load()
    if not force and report_existing(stage.teacher_dir(workspace, name, data.name), log):
        return
    log(summary("teacher", stage.fine_tune(base, data, workspace, train, name, replace=force)))


def teacher_for(workspace: Path, teacher_name: str, data, config: TrainConfig, log=say):
    """The workspace's teacher of that name fine-tuned on `data`'s task, fine-tuned first if there is none."""
    from compress.stages import teacher as teachers
    from compress.variant import Variant
    from compress.workspace import check_name

    check_name(teacher_name, "--teacher")
    found = teachers.teacher_dir(workspace, teacher_name, data.name)
    if found.exists():
        return Variant.load(found)
    log(f"teacher {teacher_name} has not been fine-tuned on {data.name} yet; fine-tuning it first")
    try:
        return teachers.fine_tune(teacher_name, data, workspace, config, teacher_name)
    except UserError as exc:
        raise UserError(f"no teacher '{teacher_name}' for {data.name} in {found.parent.parent}, "
                        f"and none can be fine-tuned: {exc}") from None


def make(verb: str, source, config, train: TrainConfig | None, name: str | None, force: bool = False, log=say,
         workspace: Path | None = None, task: TaskConfig | None = None, **switches: bool) -> None:
    """Run STAGES[verb] on `source` (a variant folder, or for a stage that takes the teacher, its name in
    `workspace` with `task`) into `name` [default: the stage's], unless that exists (and not `force`).
    `switches`: the stage's own switches, by their names in Python (no_baseline=True)."""
    from compress.variant import derived_dir
    from compress.workspace import check_name

    stage = STAGES[verb]
    extra = dict(switches)
    if stage.takes == "teacher":
        if name is not None:
            check_name(name)
        data = task.load()
        parent = teacher_for(workspace, source, data, train, log)
        extra["task"] = data
    else:
        parent = load_variant(Path(source))
    name = stage.name(parent, config) if name is None else name
    if not force and report_existing(derived_dir(parent, name), log):
        return
    for made in stage.run(parent, config, train, name, force, **extra):
        log(stage.line(made))


def graph_kept(export_record: dict) -> str:
    """Which graph an export kept, and why, in words."""
    if export_record["optimized"]:
        fused = ", ".join(f"{n} {op}" for op, n in export_record.get("fused_ops", {}).items())
        return f"optimized graph, fused: {fused or 'nothing'}"
    if "fused_ops" in export_record:  # the optimizer ran and lost the timing
        return "plain graph (the optimizer's graph was not faster)"
    return "plain graph (--no-optimize)"


def export_variant(path: Path, config: ExportConfig = ExportConfig(), log=say) -> None:
    from compress.runtime.export import export

    result = export(load_variant(path), opset=config.opset, optimize=config.optimize).export
    log(f"exported {path}/onnx/model.onnx ({result['size_mb']} MB, {graph_kept(result)}); "
        f"parity: max |logit diff| {result['parity']['max_abs_diff']:.1e}"
        + (f", agreement {result['parity']['agreement']:.4f}" if "agreement" in result["parity"] else "")
        + (f", cosine >= {result['parity']['min_cosine']:.6f}" if "min_cosine" in result["parity"] else ""))


def ensure_export(variant, log=say) -> None:
    """Export `variant` to ONNX first where it has neither an export nor an artifact of its own (int8, fp16)."""
    from compress.runtime.export import needs_export

    if needs_export(variant):
        export_variant(variant.path, log=log)


def bench_variants(paths: list[Path], config: BenchConfig, workspace: Path, log=say) -> None:
    """Measure `paths` [default: every variant of `workspace`], one line each."""
    from compress.stages.bench import Unmeasurable, bench, bench_in_turn, key_here, parse_shapes
    from compress.variant import find_variants

    parsed = parse_shapes(config.shapes)
    if config.rounds > 1 and config.device != "cpu":
        raise UserError("--rounds times ONNX Runtime in turn on the CPU; a GPU's timings are synchronised run by run")
    targets = [load_variant(Path(v)) for v in paths] or find_variants(workspace)
    if not targets:
        raise UserError(f"no variants in {workspace} to measure")
    measured = []
    for variant in targets:
        try:
            measured.append(bench(variant, parsed, config.threads, config.device, config.runs))
        except Unmeasurable as exc:
            log(f"skipped {exc}")
    if config.rounds > 1 and measured:
        in_turn = bench_in_turn(measured, parsed, config.threads, config.runs, config.rounds)
        log(f"ONNX Runtime timed again in turn, {config.rounds} rounds of {config.runs} runs: {len(in_turn)} variants")
    for variant in measured:
        entry = variant.benches[key_here(config.threads, config.device)]
        timings = [(shape, runtime, t["p50"]) for runtime, by_shape in entry["latency_ms"].items()
                   for shape, t in by_shape.items()]
        if config.device == "cuda":  # six PyTorch runtimes and maybe ORT's: the fastest per shape
            timings = [min((t for t in timings if t[0] == shape), key=lambda t: t[2]) for shape in dict.fromkeys(
                t[0] for t in timings)]
        metric = variant.record.kind.headline
        log(f"{variant.path}: {metric} {entry['dev'][metric]:.4f}; "
            + "; ".join(f"{runtime} {shape} {p50:.2f} ms" for shape, runtime, p50 in timings))
    if not measured:
        raise UserError(f"nothing could be measured on {config.device}")


def write_report(workspace: Path, task: str | None, teacher: str | None, out: Path | None, log=say) -> Path:
    from compress.stages.report import render

    page = render(workspace, task, teacher, out)
    log(f"report: {page}")
    return page


def search(workspace: Path, teacher_name: str, task: TaskConfig, config, kd, train: TrainConfig, command: str,
           log=say) -> dict:
    """`compress search` (compress.pipeline.search): the workspace's teacher of that name, fine-tuned first if missing,
    then the search, its trials run as a recipe; ends with the winner's line."""
    from compress.pipeline import search as stage

    data = task.load()
    stage.check(config)  # before a teacher may be fine-tuned for it
    teacher = teacher_for(workspace, teacher_name, data, train, log)
    typed = {"task": str(Path(task.task).resolve()) if Path(task.task).exists() else task.task,  # the recipe may run
             "data-dir": str(Path(task.data_dir).resolve()) if task.data_dir else None,   # elsewhere
             "text-column": task.text_column, "label-column": task.label_column if task.text_column else None,
             "num-labels": task.num_labels, "corpus": str(Path(task.corpus).resolve()) if task.corpus else None,
             "doc-stride": task.doc_stride, "max-answer-length": task.max_answer_length}
    task_params = {key: value for key, value in typed.items() if value is not None}
    result = stage.search(teacher, data, config, train, task_params, command, log=log, kd=kd)
    winner, headline = result["winner"], data.kind.headline
    log(f"winner {winner['candidate']}: dev {headline} {winner['dev'][headline]:.4f} "
        f"({winner['drop_points']:.2f} points below the teacher), {winner['measured_p50_ms']:.2f} ms at "
        f"{config.shape} (predicted {winner['predicted_p50_ms']:.2f}); recipe: {result['recipe']}; "
        f"record: reports/{stage.label(data.name, config.budget_ms)}.json")
    return result
