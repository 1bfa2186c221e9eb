"""The distillation loss table: each loss vanishes when the student is the teacher, ignores padding,
and compares what it says it compares; the layer map and the loss spec fail in one line."""

import copy

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

from compress.errors import UserError
from compress.model.arch import TEACHER_LAYERS_KEY, make_student
from compress.training.losses import (
    INTERMEDIATE_LOSSES,
    Taps,
    head_dim,
    kd_loss,
    layer_map,
    parse_intermediate,
    projections_needed,
    tapped,
)

from conftest import CONFIGS

EVERY_LOSS = {name: 1.0 for name in INTERMEDIATE_LOSSES}


def taps(model, ids, mask, layers):
    with tapped(model, layers, projections_needed(EVERY_LOSS)) as parts:
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    return Taps(out.hidden_states, parts, head_dim(model.config))


def no_dropout(model):
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model.eval()


@pytest.mark.parametrize("arch", CONFIGS)
def test_every_loss_vanishes_on_the_teacher_itself_and_ignores_padding(arch):
    torch.manual_seed(0)
    teacher = no_dropout(AutoModelForSequenceClassification.from_config(CONFIGS[arch]))
    student = make_student(teacher, list(range(6)))  # the teacher itself, as a student
    pairs = list(enumerate(layer_map(student.config, 6)))
    assert pairs == [(j, j) for j in range(6)]
    ids = torch.randint(5, 100, (2, 7))
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    s, t = taps(student, ids, mask, range(6)), taps(teacher, ids, mask, range(6))
    for name, loss in INTERMEDIATE_LOSSES.items():
        assert loss.fn(s, t, pairs, mask).item() == pytest.approx(0.0, abs=1e-5), name
        shifted = [(j, (i + 1) % 6) for j, i in pairs]  # the wrong teacher layers
        if name != "embeddings":
            assert loss.fn(s, t, shifted, mask).item() > 1e-3, name
        padded = ids.clone()
        padded[1, 4:] = 99  # other tokens where the mask says padding: the loss must not change
        t_padded, s_padded = taps(teacher, padded, mask, range(6)), taps(student, padded, mask, range(6))
        assert loss.fn(s_padded, t, shifted, mask).item() == pytest.approx(loss.fn(s, t, shifted, mask).item(),
                                                                            rel=1e-4), name
        assert loss.fn(s_padded, t_padded, pairs, mask).item() == pytest.approx(0.0, abs=1e-5), name


def test_attention_loss_compares_the_layers_own_attention_distributions():
    """With as many heads on both sides, the 'attention' term is the KL between the probabilities
    BERT's eager attention computes itself."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_attention_heads=4, intermediate_size=64,
                        num_hidden_layers=2, attn_implementation="eager", initializer_range=0.5)
    a, b = (no_dropout(BertForSequenceClassification(config)) for _ in range(2))
    ids, mask = torch.randint(5, 100, (2, 6)), torch.tensor([[1] * 6, [1] * 3 + [0] * 3])
    got = INTERMEDIATE_LOSSES["attention"].fn(taps(a, ids, mask, [0, 1]), taps(b, ids, mask, [0, 1]),
                                              [(0, 0), (1, 1)], mask)
    pa = a(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
    pb = b(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
    expected = []
    for s, t in zip(pa, pb):  # [batch, heads, query, key]
        kl = (t * (t.clamp(min=1e-30).log() - s.clamp(min=1e-30).log())).sum(-1)
        rows = mask.bool()[:, None, :].expand_as(kl)
        expected.append(kl[rows].mean())
    assert got.item() > 0.01
    assert got.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-4)


def test_a_pruned_layer_learns_from_one_relation_over_all_heads():
    torch.manual_seed(0)
    mask = torch.ones(2, 6, dtype=torch.long)
    s = Taps((), {(0, p): torch.randn(2, 6, 16) for p in ("query", "key", "value")}, head_dim=8)  # 2 heads left
    t = Taps((), {(0, p): torch.randn(2, 6, 32) for p in ("query", "key", "value")}, head_dim=8)  # 4 heads

    def one_relation(taps, a, b):  # over the whole projection width: MiniLM-v2's relation heads, R = 1
        x, y = taps.projections[0, a], taps.projections[0, b]
        return torch.log_softmax(x @ y.transpose(-1, -2) / x.shape[-1] ** 0.5, dim=-1)

    for name, (a, b) in (("attention", ("query", "key")), ("value-relation", ("value", "value"))):
        log_s, log_t = one_relation(s, a, b), one_relation(t, a, b)
        expected = (log_t.exp() * (log_t - log_s)).sum(-1).mean()
        assert INTERMEDIATE_LOSSES[name].fn(s, t, [(0, 0)], mask).item() == pytest.approx(expected.item(), rel=1e-5)
    headless = Taps((), {}, head_dim=8)  # every head pruned: nothing to compare, nothing to fail
    assert INTERMEDIATE_LOSSES["attention"].fn(headless, t, [(0, 0)], mask).item() == 0.0


def test_rows_without_a_gold_label_learn_from_the_soft_term_only():
    torch.manual_seed(0)
    student, teacher = torch.randn(4, 3), torch.randn(4, 3)
    labels = torch.tensor([0, -100, 2, -100])
    soft = F.kl_div(F.log_softmax(student / 2, -1), F.log_softmax(teacher / 2, -1), reduction="batchmean",
                    log_target=True)
    hard = F.cross_entropy(student[[0, 2]], labels[[0, 2]])
    assert kd_loss(student, teacher, labels, 2.0, 0.3).item() == pytest.approx((0.3 * 4 * soft + 0.7 * hard).item())
    only_augmented = torch.full((4,), -100)
    assert kd_loss(student, teacher, only_augmented, 2.0, 0.3).item() == pytest.approx((0.3 * 4 * soft).item())


def test_layer_map_follows_the_layers_through_every_cut():
    torch.manual_seed(0)
    teacher = AutoModelForSequenceClassification.from_config(copy.deepcopy(CONFIGS["bert"]))
    student = make_student(teacher, [0, 2, 4, 5])
    assert getattr(student.config, TEACHER_LAYERS_KEY) == [0, 2, 4, 5]
    assert layer_map(student.config, 6) == [0, 2, 4, 5]  # the uniform map would say 0, 2, 3, 5
    cut = make_student(student, [1, 3])  # as LayerDrop's or pruning's cut does
    assert layer_map(cut.config, 6) == [2, 5]
    assert layer_map(cut.config, 6, "1,4") == [1, 4]
    delattr(cut.config, TEACHER_LAYERS_KEY)  # a student from elsewhere: TinyBERT's uniform map
    assert layer_map(cut.config, 6) == [2, 5]
    for spec, says in (("1", "must name 2 teacher layers"), ("1,6", "each from 0 to 5"), ("a,b", "teacher layer ids")):
        with pytest.raises(UserError, match=says):
            layer_map(cut.config, 6, spec)


def test_the_loss_spec_names_losses_from_the_table():
    assert list(parse_intermediate("attention,hidden=2").items()) == [("hidden", 2.0), ("attention", 1.0)]
    assert parse_intermediate("") == {}
    for spec, says in (("hiden=1", "unknown loss 'hiden'"), ("hidden,hidden=2", "names hidden twice"), ("hidden=x", "takes names with optional weights like hidden=1,attention=0.5"),
                       ("hidden=-1", "finite number >= 0"), ("hidden=nan", "finite number >= 0")):
        with pytest.raises(UserError, match=says):
            parse_intermediate(spec)
