"""Every stage's settings as data (TextBrewer's way): each default, choice, range and help text once.

The stages take these dataclasses; the CLI builds its flags from their fields (`cli_options`),
and a recipe's keys are those flags, so the three share one definition. Nothing here imports
torch: the CLI can read it and still start fast.
"""

import math
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

# Upper bounds on sizes no run means: past them a typo exhausts memory or time instead of failing.
MAX_THREADS = 4 * (os.cpu_count() or 1)  # oversubscribed beyond this; 100,000 threads abort ORT
MAX_BATCH = 4096
MAX_SEQUENCE = 8192  # the longest position table of the supported encoders (ModernBERT)
MAX_EPOCHS = 1000
MAX_EXAMPLES = 10_000_000  # examples to score, calibrate or probe on
MAX_SEED = 2**32 - 1  # numpy's seeds are 32-bit


def setting(default, help: str, choices: tuple | None = None, low=None, high=None, low_open: bool = False,
            high_open: bool = False, flag: str | None = None, cli: bool = True, **more):
    """A dataclass field that also describes its command-line flag (`cli=False`: API only)."""
    return field(default=default, metadata={"help": help, "choices": choices, "range": (low, high, low_open, high_open),
                                             "flag": flag, "cli": cli, **more})


def parse_list(text: str, flag: str, item=str) -> list:
    """A list-valued setting's text (like 1,3 or hidden=1,attention=0.5) as a list, each part read by `item`:
    int, float, str or a reader raising ValueError whose `example` attribute shows its form. The one reader
    of every such setting, so each refuses bad text with the same line; empty parts are skipped."""
    from compress.errors import UserError

    parts = [part.strip() for part in text.split(",") if part.strip()]
    try:
        return [item(part) for part in parts]
    except ValueError:
        example = getattr(item, "example", None) or LIST_EXAMPLES[item]
        raise UserError(f"{flag} takes {example}, not '{text}'") from None


LIST_EXAMPLES = {int: "integers like 1,3", float: "numbers like 1,0.5", str: "names like a,b"}


def reader(convert, example: str):
    """An item reader for `parse_list`: `convert` (raising ValueError on bad text) and the form it reads."""
    def read(part: str):
        return convert(part)
    read.example = example
    return read


def _shape(part: str) -> tuple[int, int]:
    batch, sequence = (int(x) for x in part.lower().split("x"))
    return batch, sequence


def _weighted(part: str) -> tuple[str, float]:
    name, equals, weight = part.partition("=")
    if not name or (equals and not weight):
        raise ValueError(part)
    return name.strip(), float(weight) if weight else 1.0


SHAPE = reader(_shape, "BATCHxSEQUENCE pairs like 1x128,32x128")
WEIGHTED = reader(_weighted, "names with optional weights like hidden=1,attention=0.5")
TEACHER_LAYER_IDS = reader(int, "teacher layer ids like 1,3,5")
COUNT_OR_LAYER_IDS = reader(int, "a count N or layer ids like 1,3")


def inherited(fallback, help: str, **kwargs):
    """A KD setting that defaults to None: the one the parent variant was trained with (compress.training.kd),
    else `fallback`."""
    return setting(None, help, fallback=fallback, **kwargs)


class Settings:
    """A stage's settings; built by the CLI from flags or by hand through the API, checked the same way."""

    def __post_init__(self):
        validate(self)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Settings):
    epochs: float = setting(3.0, "Epochs; fractions allowed (0: the model is saved untrained; not for a teacher).",
                            low=0, high=MAX_EPOCHS)
    lr: float = setting(5e-5, "Peak learning rate (linear warm-up over 10%, then decay).", low=0, low_open=True,
                        high=1)
    batch_size: int = setting(32, "Examples per training step.", low=1, high=MAX_BATCH)
    max_length: int = setting(128, "Tokens per example; longer ones are truncated.", low=1, high=MAX_SEQUENCE)
    seed: int = setting(42, "Seeds the new head, the data order and dropout.", low=0, high=MAX_SEED)
    precision: str = setting("auto", "auto: bf16 autocast where the CPU or GPU has it, else fp32 (CPU) or fp16 (GPU).",
                             choices=("auto", "bf16", "fp16", "fp32"))
    warmup: float = setting(0.1, "Fraction of the steps spent warming the learning rate up.", low=0, high=1,
                            high_open=True, cli=False)
    weight_decay: float = setting(0.01, "AdamW weight decay.", low=0, high=1, cli=False)

    def __post_init__(self):
        super().__post_init__()
        if self.precision == "auto":  # recorded as what ran, never as "auto"
            from compress.machine import training_precision

            object.__setattr__(self, "precision", training_precision("auto"))


LABEL_COLUMN = "label"  # your own files' label column, unless --label-column says otherwise
MAX_LABELS = 100_000  # classes a task may have: a head of 100,000 x 768 is large, beyond that a mistake
RECOVERY_TRAINING = {"epochs": 1.0, "lr": 3e-5}  # a shrunk variant's KD recovery: shorter and gentler


@dataclass(frozen=True, kw_only=True)
class TaskConfig(Settings):
    """Which data a verb reads: a named task, or your own files and their columns."""

    task: str = setting("rotten-tomatoes", "sst2, mrpc, cola, stsb, rotten-tomatoes, wnut17 (NER), embeddings "
                        "(sentence embeddings, scored on STS-B dev), or a CSV/TSV/JSONL file or folder (train.* and "
                        "dev.*); CoNLL files or JSONL with tokens and tags are NER; SQuAD v1.1 JSON (a file, or a folder "
                        "with train.json and dev.json) is extractive question answering.")
    data_dir: str | None = setting(None, "Folder holding GLUE's SST-2/, MRPC/, ... or wnut17/ (env COMPRESS_DATA).",
                                   envvar="COMPRESS_DATA")
    text_column: str | None = setting(None, "For your own files: the text column, or two as a,b for pairs.")
    label_column: str = setting(LABEL_COLUMN, "For your own files: the integer label column.")
    num_labels: int | None = setting(None, "Classes the task has, when training lacks some [default: the labels seen, "
                                     "0..K-1].", low=2, high=MAX_LABELS)
    corpus: str | None = setting(None, "For --task embeddings: a text file, one sentence a line, to distil on "
                                 "[default: the sentences of STS-B's train split].")
    doc_stride: int | None = setting(None, "For a SQuAD task: tokens two windows of a long context share [default: "
                                     "half of --max-length].", low=1, high=MAX_SEQUENCE)
    max_answer_length: int | None = setting(None, "For a SQuAD task: the longest answer, in tokens, that span decoding "
                                            "returns [default: 30].", low=1, high=MAX_SEQUENCE)

    def load(self):
        from compress.data.tasks import load_task

        return load_task(self.task, self.data_dir, self.text_column, self.label_column, self.num_labels, self.corpus,
                         self.doc_stride, self.max_answer_length)


@dataclass(frozen=True, kw_only=True)
class KD(Settings):
    """The soft-target terms every distillation and every KD recovery uses (Hinton et al. 2015).

    None means "not given": a stage then trains with what its parent variant was trained with, else
    with the field's fallback (compress.training.kd decides, and records where each value came from).
    """

    temperature: float | None = inherited(2.0, "Softmax temperature T of the soft term.", low=0, low_open=True,
                                          high=100)
    alpha: float | None = inherited(0.5, "Weight of the soft (KL) term; 1 - alpha weighs the labels (embeddings: "
                                    "of the squared distance to the teacher's embedding; 1 - alpha weighs 1 - cosine).",
                                    low=0, high=1)
    intermediate: str | None = inherited("", "Intermediate-layer losses and their weights, like hidden=1,attention=1 "
                                         "(names: hidden, hidden-cosine, embeddings, attention, value-relation; "
                                         "'' for none); runs the teacher live.", items=WEIGHTED)
    layer_map: str | None = inherited("", "The teacher layer each layer of the model trained here (before any cut) "
                                      "learns from, like 1,3,5; by default the one it learned from, else the one it "
                                      "was made from.", items=TEACHER_LAYER_IDS)
    intermediate_epochs: float | None = inherited(0.0, "TinyBERT's two phases: this many epochs on the intermediate "
                                                  "losses alone first, then the epochs on the logits.", low=0,
                                                  high=MAX_EPOCHS)
    augment: int | None = inherited(0, "New examples per training example: words swapped for their nearest "
                                    "neighbours in the teacher's embeddings, learned from the teacher's soft targets "
                                    "only (made once per task, N and seed, then cached).", low=0, high=100)
    augment_seed: int | None = inherited(None, "Seed of the augmented examples; by default --seed.", low=0,
                                         high=MAX_SEED)


@dataclass(frozen=True, kw_only=True)
class DistillConfig(KD):
    layers: int = setting(3, "Student depth N.", low=1)
    init: str = setting("alternate", "Teacher layers to copy: alternate (evenly spread, ends included), first, last, "
                        "or a list like 0,2,4.")
    kd: bool = setting(True, "Train the same student on labels alone: the baseline.", flag="--no-kd")


@dataclass(frozen=True, kw_only=True)
class PruneConfig(KD):
    heads: float = setting(0.0, "Fraction of the variant's attention heads to remove.", low=0, high=1, high_open=True)
    neurons: float = setting(0.0, "Fraction of its FFN neurons to remove.", low=0, high=1, high_open=True)
    layers: str = setting("", "Whole layers to remove: a count N (the least important), or ids like 1,3 (one id: 3,).",
                          items=COUNT_OR_LAYER_IDS)
    importance: str = setting("taylor", "taylor: |dL/d mask| over training batches; random: the control.",
                              choices=("taylor", "magnitude", "random"))
    scope: str = setting("global", "Rank heads and neurons across layers, or remove the same fraction from each layer.",
                         choices=("global", "per-layer"))
    score_examples: int = setting(1024, "Training examples to score on.", low=1, high=MAX_EXAMPLES)
    steps: int = setting(1, "Prune gradually: reach the fractions over N rounds on a cubic schedule (Zhu & Gupta "
                         "2017: after round t, fraction * (1 - (1 - t/N)^3)), each cut followed by 1/N of the "
                         "recovery epochs (and of --intermediate-epochs).", low=1, high=100)


@dataclass(frozen=True, kw_only=True)
class LayerDropConfig(KD):
    rate: float = setting(0.2, "Probability of skipping each layer in a training step.", low=0, high=1, high_open=True)
    keep: str = setting("every-other", "Layers to keep afterwards: every-other, a count N (evenly spread) "
                        "or ids like 0,2,4 (one id: 3,).")


@dataclass(frozen=True, kw_only=True)
class ShareConfig(KD):
    groups: int = setting(MISSING, "Groups of consecutive layers that share parameters (1: all layers, as ALBERT).",
                          low=1)
    what: str = setting("all", "Which parameters to tie.", choices=("all", "attention", "ffn"))
    init: str = setting("first", "Start each shared tensor from the group's first layer or from the group's mean.",
                        choices=("first", "mean"))


@dataclass(frozen=True, kw_only=True)
class QuantizeConfig(KD):  # the KD settings apply to --qat-epochs
    mode: str = setting("dynamic", "dynamic: int8 weights, activations quantized on the fly (the default for "
                        "transformers); static: int8 QDQ calibrated on training examples; fp16: for GPUs.",
                        choices=("dynamic", "static", "fp16"))
    per_channel: bool = setting(False, "One int8 scale per output channel instead of per tensor.")
    fp32_ffn_output: bool = setting(False, "Dynamic int8: keep the FFN output projections in fp32 (static always "
                                    "does): they read the GELU's outliers; most of the accuracy back for some of "
                                    "the speed.")
    qat_epochs: float = setting(0.0, "Quantization-aware KD recovery first: epochs in which the Linear layers see "
                                "the int8 rounding ORT dynamic int8 applies (dynamic mode only).", low=0,
                                high=MAX_EPOCHS)
    calibration: int = setting(256, "Training examples to calibrate static int8 on.", low=1, high=MAX_EXAMPLES)
    backend: str = setting("ort", "ort: ONNX Runtime; torch: PyTorch dynamic int8, the baseline.", choices=("ort", "torch"))
    max_drop: float | None = setting(None, "Refuse (and write nothing) if the dev main metric (accuracy; MCC for CoLA, Spearman for "
                                     "regression) falls by more than this many points.", low=0, high=100)


@dataclass(frozen=True, kw_only=True)
class ExportConfig(Settings):
    opset: int = setting(17, "ONNX opset.", low=14, high=21)
    optimize: bool = setting(True, "Skip ORT's transformer optimizer (by default its fused graph is kept only where "
                             "it is faster).", flag="--no-optimize")


@dataclass(frozen=True, kw_only=True)
class BenchConfig(Settings):
    shapes: str = setting("1x32,1x128,32x128", "BATCHxSEQUENCE shapes, comma-separated "
                          "(batch 1 short and long, and a served batch).", items=SHAPE)
    threads: int | None = setting(None, "Intra-op threads [default: torch's count here].", low=1, high=MAX_THREADS)
    device: str = setting("cpu", "Where to measure: the CPU, or the GPU (PyTorch fp32/fp16/bf16, eager and CUDA "
                          "graph; ORT's CUDA provider with the gpu extra).", choices=("cpu", "cuda"))
    runs: int = setting(30, "Timed runs per shape, after a warm-up (median and p90 need 30).", low=30, high=100_000)
    rounds: int = setting(1, "Then time the ONNX Runtime artifacts of all the variants again in turn, this many "
                          "rounds of --runs each, and keep those figures: a slow spell of a shared machine falls "
                          "on all of them alike (CPU only).", low=1, high=1000)


@dataclass(frozen=True, kw_only=True)
class SearchConfig(Settings):
    budget_ms: float = setting(MISSING, "Latency budget: p50 milliseconds at --shape on this machine.", low=0,
                               low_open=True, high=3_600_000)
    shape: str = setting("1x128", "The BATCHxSEQUENCE shape the budget is for.", items=SHAPE)
    device: str = setting("cpu", "Where the student will be served: ORT on the CPU, or ORT's CUDA provider (gpu extra).",
                          choices=("cpu", "cuda"))
    threads: int | None = setting(None, "Intra-op threads [default: torch's count here].", low=1, high=MAX_THREADS)
    runs: int = setting(30, "Timed runs per candidate after a warm-up, and per round when the trials are "
                            "timed in turn.", low=30, high=100_000)
    trials: int = setting(3, "Candidates to train, the best by the proxy.", low=1, high=100)
    max_drop: float | None = setting(None, "Accept only a winner at most this many points of the main metric (accuracy; MCC for CoLA) below the teacher.",
                                     low=0, high=100)
    depths: str = setting("", "Student depths to consider, like 2,3,4,6 [default: 1/6, 1/4, 1/3, 1/2 and 2/3 of the "
                          "teacher's layers].", items=int)
    heads: str = setting("1,0.5,0.25", "Fractions of each layer's attention heads to keep.", flag="--keep-heads",
                         items=float)
    ffn: str = setting("1,0.5,0.25", "Fractions of each layer's FFN neurons to keep.", flag="--keep-ffn", items=float)
    precisions: str = setting("", "Precisions to consider [default: fp32,int8-dynamic,int8-static on the CPU; "
                              "fp32,fp16 on a GPU].", items=str)
    proxy_examples: int = setting(256, "Training rows the proxy (KL from the teacher, untrained) is measured on.",
                                  low=1, high=MAX_EXAMPLES)
    recover_epochs: float = setting(1.0, "KD recovery epochs after pruning, in every trial.", low=0, high=MAX_EPOCHS)


def flag_of(f) -> str:
    """A field's command-line flag; a recipe's key is the flag without its dashes."""
    return f.metadata["flag"] or f"--{f.name.replace('_', '-')}"


def cli_options(config_class, only: tuple[str, ...] | None = None, inherits: bool = False, **defaults: Any):
    """Click options for `config_class`'s fields (or `only` those), named as the fields; `defaults`
    overrides a default for one verb (a recovery's shorter schedule). An untyped KD flag stays None;
    with `inherits` (a verb that trains from VARIANT) its help says that VARIANT's setting applies."""
    import click

    def option(f):
        meta = f.metadata
        required = f.default is MISSING and f.name not in defaults
        default = defaults.get(f.name, None if required else f.default)
        low, high, low_open, high_open = meta["range"]
        optional = getattr(f.type, "__args__", None)  # `int | None`: an optional number of that kind
        kind = f.type if isinstance(f.type, type) else optional[0]
        if kind is bool:
            flag = flag_of(f)
            inverted = flag.startswith("--no-")  # a switch that turns a default-on setting off
            return click.option(flag, f.name, is_flag=True, flag_value=not default if inverted else True,
                                default=default, show_default=False, help=meta["help"])
        if meta["choices"]:
            kind = click.Choice(meta["choices"])
        elif low is not None or high is not None:
            kind = (click.IntRange if kind is int else click.FloatRange)(low, high, min_open=low_open, max_open=high_open)
        shown = default != ""
        if "fallback" in meta:
            fallback = "" if meta["fallback"] in ("", None) else str(meta["fallback"])
            shown = (f"VARIANT's, else {fallback}" if fallback else "VARIANT's") if inherits else (fallback or False)
        # a required flag gets no default at all: click takes default=None as a given value (and the stage a None)
        given = {} if required else {"default": default}
        return click.option(flag_of(f), f.name, type=kind, **given, required=required, help=meta["help"],
                            callback=finite, show_default=shown, envvar=meta.get("envvar"))

    chosen = [f for f in fields(config_class) if f.metadata.get("cli") and (only is None or f.name in only)]

    def decorate(fn):
        for f in reversed(chosen):
            fn = option(f)(fn)
        return fn

    return decorate


def finite(ctx, param, value):
    """A click callback: FloatRange lets inf and nan through, and no setting here means either."""
    import click

    if isinstance(value, float) and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number")
    return value


def take(config_class, params: dict, **fixed):
    """Build `config_class` from a command's parsed params, removing the fields it takes from them."""
    names = {f.name for f in fields(config_class)}
    return config_class(**{name: params.pop(name) for name in list(params) if name in names}, **fixed)


def table_keys(config_class, only: tuple[str, ...] | None = None, **renamed: str) -> dict:
    """{recipe key: field} for `config_class`'s flags (or `only` those); `renamed` gives a field another key
    (a recovery's epochs are `recover-epochs`)."""
    return {renamed.get(f.name) or flag_of(f)[2:]: f for f in fields(config_class)
            if f.metadata.get("cli") and (only is None or f.name in only)}


def from_table(config_class, table: dict, keys: dict, where: str, **defaults):
    """Build `config_class` from a recipe table, as HfArgumentParser.parse_dict does: each of `keys` found in
    `table` sets its field (a `--no-x` switch sets it to the opposite), an absent one takes its flag's
    environment variable or `defaults`, and the settings check the values as the flags are checked."""
    from compress.errors import UserError

    values = dict(defaults)
    for key, f in keys.items():
        if key not in table:
            if os.environ.get(f.metadata.get("envvar") or ""):
                values[f.name] = os.environ[f.metadata["envvar"]]
            continue
        value = table[key]
        if isinstance(value, list) and f.metadata.get("items") and all(
                isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
            value = ",".join(map(str, value))  # a TOML array of a list-valued setting: its flag's text
        if isinstance(value, (dict, list)):
            raise UserError(f"{where}: '{key}' takes one value, not {value!r}")
        kind = getattr(f.type, "__args__", (f.type,))[0]
        if kind is bool:
            if not isinstance(value, bool):
                raise UserError(f"{where}: '{key}' is a switch: give true or false, not {value!r}")
            value = not value if key.startswith("no-") else value
        values[f.name] = _as_kind(value, kind)
    return config_class(**values)


def _as_kind(value, kind):
    """A recipe's value as its setting's kind, where the flag would take it: 2 for a text setting (prune's
    --layers 2), "0.5" for a number; what cannot be is left for the settings' check to refuse."""
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if kind in (int, float) and isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            return value
    return value


def validate(config) -> None:
    """Check `config`'s values against its fields' types, choices and ranges, as the CLI does for flags.

    Every Settings dataclass calls it when built, so a config made by hand through the API is refused
    as its flag would be: with a UserError naming the flag (or, for API-only fields, the field).
    """
    from compress.errors import UserError

    for f in fields(config):
        value, meta = getattr(config, f.name), f.metadata
        flag = flag_of(f) if meta["cli"] else f"{type(config).__name__}.{f.name}"
        kinds = getattr(f.type, "__args__", (f.type,))  # `int | None`: that kind, or None
        if value is None and type(None) in kinds:
            continue
        kind = kinds[0]
        if not _is_kind(value, kind):
            expected = {bool: "True or False", int: "an integer", float: "a number", str: "a string"}[kind]
            raise UserError(f"{flag} must be {expected}, not {value!r}")
        if kind is bool:
            continue
        if meta.get("items") and value:
            parse_list(value, flag, meta["items"])
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{flag} {value} is not a finite number")
        if meta["choices"] and value not in meta["choices"]:
            raise UserError(f"{flag} must be one of {', '.join(meta['choices'])}, not {value!r}")
        low, high, low_open, high_open = meta["range"]
        below = low is not None and (value <= low if low_open else value < low)
        above = high is not None and (value >= high if high_open else value > high)
        if below or above:
            interval = f"{'(' if low_open else '['}{low if low is not None else '-inf'}, " \
                       f"{high if high is not None else 'inf'}{')' if high_open or high is None else ']'}"
            raise UserError(f"{flag} {value} is outside {interval}")


def _is_kind(value, kind) -> bool:
    """Whether `value` is of a setting's kind: bools are not numbers, and an int is a float setting's number."""
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    return isinstance(value, (int, float)) if kind is float else isinstance(value, kind)
