import copy
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AlbertConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from compress.configs import DistillConfig, TrainConfig
from compress.data.batches import encode
from compress.errors import UserError
from compress.model.arch import encoder_layers, layout, make_student, select_layers
from compress.model.checkpoint import load_classifier, load_tokenizer
from compress.model.structure import MODELING_FILE
from compress.runtime.inference import predict_logits
from compress.stages.distill import distill
from compress.training.losses import kd_loss
from compress.variant import save_variant
from compress.workspace import partial_dir

from conftest import CONFIGS, TINY, student_meta


@pytest.mark.parametrize("arch", CONFIGS)
def test_student_starts_as_the_chosen_teacher_layers_weight_for_weight(arch):
    torch.manual_seed(0)
    teacher = AutoModelForSequenceClassification.from_config(CONFIGS[arch])
    student = make_student(teacher, [0, 3, 5])
    assert student.config.num_hidden_layers == 3 and len(encoder_layers(student)) == 3
    teacher_layers = encoder_layers(teacher)
    for j, i in enumerate([0, 3, 5]):
        a, b = encoder_layers(student)[j].state_dict(), teacher_layers[i].state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    # everything outside the layer stack (embeddings, pooler, head) is the teacher's
    outside = {k: v for k, v in teacher.state_dict().items() if not k.startswith(layout(teacher.config).layers + ".")}
    student_state = student.state_dict()
    assert all(torch.equal(student_state[k], v) for k, v in outside.items())
    assert encoder_layers(teacher) is teacher_layers and len(teacher_layers) == 6  # teacher untouched
    ids = torch.tensor([[5, 6, 7, 8]])
    assert student(input_ids=ids).logits.shape == (1, 2)


def test_a_modernbert_student_keeps_its_layers_attention_types_and_norms(tmp_path, tiny_base):
    """ModernBERT's layers attend globally or in a sliding window (config.layer_types), and only its
    first layer is built without an attention norm: a student of layers 1, 3, 5 keeps both through a
    reload, with compress or without it (the shipped modeling file)."""
    torch.manual_seed(0)
    teacher = AutoModelForSequenceClassification.from_config(copy.deepcopy(CONFIGS["modernbert"]),
                                                             attn_implementation="eager").eval()
    with torch.no_grad():  # as trained: an initial norm (weight 1) after the embeddings' norm changes almost nothing
        for layer in encoder_layers(teacher)[1:]:
            layer.attn_norm.weight.uniform_(0.5, 1.5)
    ids = torch.randint(5, 120, (2, 11), generator=torch.Generator().manual_seed(0))  # longer than the window
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    student = make_student(teacher, [1, 3, 5])
    assert student.config.layer_types == ["sliding_attention", "full_attention", "sliding_attention"]
    with torch.no_grad():
        expected = student(input_ids=ids).logits
    saved = save_variant(tmp_path / "student", student, tokenizer, student_meta(None, "student"))
    for reloaded in (load_classifier(saved.path, attn_implementation="eager"),
                     AutoModelForSequenceClassification.from_pretrained(saved.path, trust_remote_code=True,
                                                                        attn_implementation="eager")):
        layers = encoder_layers(reloaded)
        assert [layer.attention_type for layer in layers] == student.config.layer_types
        assert all(isinstance(layer.attn_norm, torch.nn.LayerNorm) for layer in layers)
        with torch.no_grad():
            torch.testing.assert_close(reloaded.eval()(input_ids=ids).logits, expected, atol=1e-6, rtol=0)
    # a student that starts with the first layer is what transformers builds: no modeling file needed
    plain = make_student(teacher, [0, 2, 4])
    with torch.no_grad():
        expected = plain(input_ids=ids).logits
    saved = save_variant(tmp_path / "plain", plain, tokenizer, student_meta(None, "plain"))
    assert not (saved.path / MODELING_FILE).exists()
    reloaded = AutoModelForSequenceClassification.from_pretrained(saved.path, attn_implementation="eager").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, expected, atol=1e-6, rtol=0)


def test_unsupported_architecture_is_a_clear_error():
    model = AutoModelForSequenceClassification.from_config(AlbertConfig(**TINY, embedding_size=16))
    with pytest.raises(UserError, match="architecture 'albert' is not supported \\(supported: bert, .*modernbert"):
        make_student(model, [0])


def test_layer_selection():
    assert select_layers(12, 6, "alternate") == [0, 2, 4, 7, 9, 11]  # DistilBERT's choice
    assert select_layers(6, 3, "alternate") == [0, 2, 5]
    assert select_layers(12, 1, "alternate") == [0]
    assert select_layers(12, 4, "first") == [0, 1, 2, 3]
    assert select_layers(12, 4, "last") == [8, 9, 10, 11]
    assert select_layers(12, 3, "1,5,11") == [1, 5, 11]
    with pytest.raises(UserError, match="--layers 13 is impossible: the teacher has 12 layers"):
        select_layers(12, 13, "alternate")
    with pytest.raises(UserError, match="--layers 0 is impossible"):
        select_layers(12, 0, "alternate")
    for bad in ("1,1,2", "0,5,12", "1,2"):
        with pytest.raises(UserError, match="distinct teacher layers"):
            select_layers(12, 3, bad)
    with pytest.raises(UserError, match="alternate, first, last or teacher layer ids like 0,2,4"):
        select_layers(12, 3, "every-other")


def test_kd_loss_equals_a_hand_computation():
    student = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
    teacher = torch.tensor([[1.0, 2.0, 0.0], [-1.0, 0.5, 2.5]])
    labels = torch.tensor([0, 2])
    for temperature, alpha in ((1.0, 0.5), (4.0, 0.7), (2.0, 1.0), (3.0, 0.0)):
        expected = 0.0
        for s, t, y in zip(student.tolist(), teacher.tolist(), labels.tolist()):
            p = [math.exp(v / temperature) for v in t]
            p = [v / sum(p) for v in p]
            q = [math.exp(v / temperature) for v in s]
            q = [v / sum(q) for v in q]
            kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
            ce = -math.log(math.exp(s[y]) / sum(math.exp(v) for v in s))
            expected += (alpha * temperature**2 * kl + (1 - alpha) * ce) / len(labels)
        got = kd_loss(student, teacher, labels, temperature, alpha)
        assert got.item() == pytest.approx(expected, rel=1e-5), (temperature, alpha)


def kl_to_teacher(teacher_path, student_path, task, temperature=2.0):
    tokenizer = AutoTokenizer.from_pretrained(teacher_path)
    encoded = encode(task.train, tokenizer, 32)
    t = predict_logits(load_classifier(teacher_path), encoded, tokenizer)
    s = predict_logits(load_classifier(student_path), encoded, tokenizer)
    return F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1),
                    reduction="batchmean", log_target=True).item()


STUDENT_TRAINING = TrainConfig(epochs=2, lr=1e-3, batch_size=16, max_length=32, seed=1, precision="fp32")


def test_distillation_brings_the_student_closer_to_the_teacher_than_labels_do(tiny_teacher, tmp_path):
    """Same init, seed and schedule: the KD student's KL to the teacher falls, the label-only one's rises."""
    teacher, task = tiny_teacher
    make_student(load_classifier(teacher.path), [0]).save_pretrained(tmp_path / "init")
    kd = distill(teacher, task, DistillConfig(layers=1, init="first", alpha=1.0), STUDENT_TRAINING, progress=False)
    labels_only = distill(teacher, task, DistillConfig(layers=1, init="first", kd=False), STUDENT_TRAINING,
                          progress=False)
    kl_init = kl_to_teacher(teacher.path, tmp_path / "init", task)
    kl_kd, kl_labels = (kl_to_teacher(teacher.path, v.path, task) for v in (kd, labels_only))
    assert kl_kd < kl_init < kl_labels, (kl_kd, kl_init, kl_labels)
    meta = kd.meta
    assert meta["parent"] == "teachers/tiny/reviews" and meta["params"]["layer_ids"] == [0]
    assert kd.path == teacher.path.parents[2] / "students" / "tiny" / "reviews" / "L1-kd"
    assert labels_only.path.name == "L1-nokd" and labels_only.meta["params"]["kd"] is False
    tokenizer = load_tokenizer(teacher.path)
    dev = encode(task.dev, tokenizer, 32)
    student_says, teacher_says = (predict_logits(load_classifier(p), dev, tokenizer).argmax(-1) for p in (kd.path, teacher.path))
    assert meta["metrics"]["dev"]["agreement"] == pytest.approx(float((student_says == teacher_says).float().mean()))
    assert meta["metrics"]["retention"] == pytest.approx(
        meta["metrics"]["dev"]["accuracy"] / meta["metrics"]["teacher_dev"]["accuracy"])
    assert meta["parameters"] < teacher.meta["parameters"]
    assert load_classifier(kd.path).config.num_hidden_layers == 1
    assert not partial_dir(kd.path).exists()


def test_intermediate_losses_run_the_teacher_live(tiny_teacher, monkeypatch):
    teacher, task = tiny_teacher
    import compress.training.distillation as stage

    def no_cache(*args, **kwargs):
        raise AssertionError("intermediate losses in one phase take the live teacher's logits, not soft targets")

    monkeypatch.setattr(stage, "soft_targets", no_cache)
    student = distill(teacher, task, DistillConfig(layers=1, intermediate="hidden-cosine,attention=0.5"),
                      STUDENT_TRAINING, progress=False)
    assert student.path.name == "L1-kd-hidden-cosine-attention"
    assert student.meta["params"]["intermediate"] == "hidden-cosine,attention=0.5"
    assert student.meta["layer_map"] == [0]
    assert student.meta["metrics"]["dev"]["accuracy"] > 0.5


def test_intermediate_loss_pairs_each_student_layer_with_the_teacher_layer_of_the_map(tiny_teacher, tmp_path):
    """A student that is an exact copy of the teacher has zero loss under the right pairing only."""
    from transformers import TrainingArguments

    from compress.data.batches import Collator
    from compress.training.distillation import DistillTrainer

    teacher, task = tiny_teacher
    model = load_classifier(teacher.path).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    student = make_student(model, [0, 1]).train()  # the intermediate losses apply in training only
    tokenizer = load_tokenizer(teacher.path)
    batch = Collator(tokenizer)(list(encode(task.dev, tokenizer, 32).select(range(8))))
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")

    def loss(layer_map):
        trainer = DistillTrainer(model=student, args=args, layer_map=layer_map, teacher=model,
                                 distill=DistillConfig(layers=2, intermediate="hidden,value-relation", alpha=1.0))
        return float(trainer.compute_loss(student, batch).detach())

    assert loss([0, 1]) == pytest.approx(0.0, abs=1e-6)
    assert loss([1, 0]) > 1e-3


def test_distill_command_baseline_and_errors(run_cli, tiny_teacher, tmp_path):
    teacher, task = tiny_teacher
    workspace = teacher.path.parents[2]
    csv = task.source
    common = ["--workspace", workspace, "distill", "--task", csv, "--text-column", "sentence",
              "--max-length", "32", "--epochs", "1", "--lr", "1e-3", "--precision", "fp32"]
    code, out, err = run_cli(*common, "--teacher", "tiny", "--layers", "1", "--name", "cli-baseline", "--no-kd")
    assert code == 0, err
    assert "student" in out and "cli-baseline" in out
    students = workspace / "students" / "tiny" / "reviews"
    before = sorted(p.name for p in students.iterdir())

    code, _, err = run_cli(*common, "--teacher", "tiny", "--layers", "3")
    assert code == 2 and err.strip() == (
        "compress: error: --layers 3 is impossible: the teacher has 2 layers (choose 1 to 2)")
    code, _, err = run_cli(*common, "--teacher", "nobody", "--layers", "1")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "no teacher 'nobody' for reviews" in err and "unknown base 'nobody'" in err
    assert sorted(p.name for p in students.iterdir()) == before
    assert not (workspace / "teachers" / "nobody").exists()


def test_two_phases_train_the_intermediate_losses_first_then_the_logits(tiny_teacher, monkeypatch):
    teacher, task = tiny_teacher
    import compress.training.distillation as stage

    phases = []
    real_train = stage.train_resumable
    monkeypatch.setattr(stage, "train_resumable", lambda *a, **k: phases.append(k["phase"]) or real_train(*a, **k))
    config = TrainConfig(epochs=1, lr=1e-3, batch_size=16, max_length=32, seed=1, precision="fp32")
    student = distill(teacher, task, DistillConfig(layers=1, intermediate="hidden", intermediate_epochs=1), config,
                      progress=False)
    assert phases == ["intermediate", "prediction"]
    assert student.path.name == "L1-kd-hidden-2phase"
    assert [h["phase"] for h in student.meta["metrics"]["history"]] == ["intermediate", "prediction"]
    assert not partial_dir(student.path).exists()


@pytest.mark.parametrize("config, says", [
    (DistillConfig(layers=1, kd=False, augment=2), "--no-kd trains on labels alone"),
    (DistillConfig(layers=1, intermediate_epochs=1), "name them with --intermediate"),
    (DistillConfig(layers=1, layer_map="0"), "name them with --intermediate"),
    (DistillConfig(layers=1, intermediate="hidden", layer_map="0,1"), "must name 1 teacher layers"),
    (DistillConfig(layers=1, intermediate="attentoin"), "unknown loss 'attentoin'"),
])
def test_distillation_options_that_cannot_work_are_refused_before_anything_is_written(tiny_teacher, config, says):
    teacher, task = tiny_teacher
    with pytest.raises(UserError, match=says):
        distill(teacher, task, config, STUDENT_TRAINING, name="never", progress=False)
    assert not (teacher.path.parents[2] / "students" / "tiny" / task.name / "never").exists()
    assert not partial_dir(teacher.path.parents[2] / "students" / "tiny" / task.name / "never").exists()
