"""Augmentation labelled by the teacher: deterministic under a seed, whole words only, never a
special token, pairs kept, no invented labels; distill records it and caches its soft targets apart."""

import datasets
import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from compress.configs import DistillConfig, TrainConfig
from compress.data.augment import NO_LABEL, augment_texts, augmented_rows, nearest_neighbours, with_rows, word_starts
from compress.data.tasks import Task
from compress.model.checkpoint import load_classifier
from compress.model.registry import resolve_base
from compress.stages.distill import distill

TEXTS = ["the film was a wonderful surprise [SEP] and the actors [MASK] shine",
         "a dull, plodding story; 1999's worst movie"]
PAIRS = ["the cat sat on the mat", "stocks fell sharply on monday"]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_base("minilm-l6"))


@pytest.fixture(scope="module")
def embeddings(tokenizer):
    torch.manual_seed(0)
    return torch.randn(len(tokenizer), 16)


def test_only_whole_words_of_letters_are_candidates(tokenizer):
    starts = word_starts(tokenizer)
    vocab = tokenizer.get_vocab()
    assert starts[vocab["film"]] and starts[vocab["wonderful"]]
    for token in ("##s", "[SEP]", "[MASK]", "[CLS]", "[PAD]", "[unused0]", "1999", ",", "'"):
        assert not starts[vocab[token]], token


def test_a_byte_level_bpe_vocabulary_marks_word_starts_by_its_space_marker():
    """RoBERTa-style vocabularies hold '##' tokens too: the convention is read from the tokenizer's model."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["## the film was great, the actors were great ##"] * 50, vocab_size=300,
                            special_tokens=["<s>", "</s>", "<pad>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    starts, vocab = word_starts(tokenizer), tokenizer.get_vocab()
    assert "##" in vocab and not starts[vocab["##"]]
    assert starts[vocab["Ġfilm"]] and not starts[vocab["<s>"]]
    assert not any(starts[i] for token, i in vocab.items() if not token.startswith("Ġ"))


def test_nearest_neighbours_are_by_cosine_and_never_the_word_itself():
    table = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, -0.1], [0.95, 0.0]])
    found = nearest_neighbours(table, np.array([0, 2]), np.array([True, True, True, True, False]), k=2)
    assert found[0] == [1, 2]  # 4 is closer to 0 but not a candidate; 0 itself is excluded
    assert found[2] == [1, 0]


def test_augmentation_is_deterministic_and_replaces_words_only(tokenizer, embeddings):
    starts = word_starts(tokenizer)
    one = augment_texts(TEXTS, tokenizer, embeddings, 3, np.random.default_rng(5), starts)
    again = augment_texts(TEXTS, tokenizer, embeddings, 3, np.random.default_rng(5), starts)
    other = augment_texts(TEXTS, tokenizer, embeddings, 3, np.random.default_rng(6), starts)
    assert one == again and one != other
    for text, variants in zip(TEXTS, one):
        original = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert len(variants) == 3
        for variant in variants:
            new = tokenizer(variant, add_special_tokens=False)["input_ids"]
            assert len(new) == len(original), variant  # one whole-word token for another
            changed = [(a, b) for a, b in zip(original, new) if a != b]
            assert changed, variant  # at least one word replaced
            assert all(starts[a] and starts[b] for a, b in changed), changed
            special = set(tokenizer.all_special_ids)
            assert [t for t in original if t in special] == [t for t in new if t in special]


@pytest.mark.parametrize("label", [datasets.Value("int64"), datasets.ClassLabel(num_classes=2)])  # files | hub
def test_augmented_task_keeps_pairs_and_invents_no_labels(tokenizer, embeddings, label):
    train = datasets.Dataset.from_dict({"text": PAIRS, "text_pair": PAIRS[::-1], "label": [1, 0]},
                                       features=datasets.Features(text=datasets.Value("string"),
                                                                  text_pair=datasets.Value("string"), label=label))
    task = Task(name="pairs", train=train, dev=train, num_labels=2)
    bigger = with_rows(task, augmented_rows(task, tokenizer, embeddings, 2, seed=3))
    assert len(bigger.train) == 6 and bigger.train.column_names == train.column_names
    assert bigger.train["label"] == [1, 0] + [NO_LABEL] * 4
    assert list(bigger.train["text"])[:2] == PAIRS  # the original rows first, untouched
    for row in list(bigger.train)[2:]:
        assert row["text"] != row["text_pair"]  # each sentence augmented from its own side
    assert bigger.fingerprint != task.fingerprint
    assert with_rows(task, augmented_rows(task, tokenizer, embeddings, 2, seed=3)).fingerprint == bigger.fingerprint


def test_distill_with_augmentation_records_it_and_caches_its_soft_targets_apart(tiny_teacher):
    teacher, task = tiny_teacher
    config = TrainConfig(epochs=1, lr=1e-3, batch_size=16, max_length=32, seed=1, precision="fp32")
    student = distill(teacher, task, DistillConfig(layers=1, augment=2), config, progress=False)
    assert student.path.name == "L1-kd-aug2"
    assert student.meta["augmentation"]["added"] == 2 * len(task.train)
    assert student.meta["data"]["train_examples"] == len(task.train)  # the task itself, not the augmented set
    assert len(list((teacher.path / "soft_targets").glob("*.safetensors"))) == 2  # the task's and the augmented set's
    assert load_classifier(student.path).config.num_hidden_layers == 1
