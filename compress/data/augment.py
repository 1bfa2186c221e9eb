"""Data augmentation for small tasks, labelled by the teacher alone (after TinyBERT, Jiao et al. 2020).

TinyBERT replaces words with a masked language model's guesses or GloVe neighbours; neither can be
had offline, so a word here is replaced by one of its nearest neighbours (cosine) in the teacher's
own input-embedding table, which the teacher reads the word through anyway. Only words that are a
single token are replaced, only by tokens that are whole words of letters: never a word piece,
never a special token. Pair tasks are augmented sentence by sentence, keeping the pair.

Augmented rows carry their task kind's mark of no label (-100 for classes, NaN for scores): gold
labels are not invented, so those rows train on the teacher's soft targets only (the kind's KD loss).
A tagging task's rows are the exception: only words outside every entity (tag O) are replaced, one word
by one word, so every tag stays on its word, entities stay as they are, and the rows keep their tags.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

import datasets
import numpy as np
import torch

from compress.data.tasks import Task
from compress.errors import UserError
from compress.kinds import CLASSIFICATION

REPLACE_PROBABILITY = 0.4  # TinyBERT's p_t: the chance each replaceable word is replaced
NEIGHBOURS = 15  # TinyBERT's K: a replacement is drawn from the word's K nearest neighbours
NO_LABEL = CLASSIFICATION.no_label  # a classification row without a gold label: what cross-entropy ignores


def word_starts(tokenizer) -> np.ndarray:
    """Per vocabulary id: whether the token is a whole word of letters that starts a word in the
    tokenizer's own convention (WordPiece: no '##'; byte-level BPE: 'Ġ'; SentencePiece: '▁'), read
    from the tokenizer's model (a byte-level BPE vocabulary holds '##' tokens too)."""
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    kind = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["type"]
    marker = {"WordPiece": "", "BPE": "Ġ"}.get(kind, "▁")
    special = set(tokenizer.all_special_ids)
    return np.array([
        i not in special and t.startswith(marker) and t[len(marker):].isalpha() and t[len(marker):].isascii()
        for i, t in enumerate(tokens)
    ])


def nearest_neighbours(embeddings: torch.Tensor, sources: np.ndarray, candidates: np.ndarray, k: int) -> dict:
    """For each id in `sources`, the k candidate ids closest by cosine in `embeddings` (itself excluded)."""
    table = torch.nn.functional.normalize(embeddings.detach().float().cpu(), dim=-1)
    candidate_ids = torch.as_tensor(np.flatnonzero(candidates))
    pool = table[candidate_ids]
    found = {}
    for start in range(0, len(sources), 1024):
        chunk = torch.as_tensor(sources[start:start + 1024])
        similarity = table[chunk] @ pool.T
        similarity[candidate_ids[None, :] == chunk[:, None]] = -2.0  # never the word itself
        top = similarity.topk(min(k, len(candidate_ids) - 1), dim=-1).indices
        for source, row in zip(chunk.tolist(), candidate_ids[top].tolist()):
            found[source] = row
    return found


def _variants(encoded, keep, embeddings: torch.Tensor, n: int, rng: np.random.Generator,
              starts: np.ndarray) -> list[list[list[int]]]:
    """n variants of each encoded row's token ids (one list per row), each with at least one word replaced
    where any can be: a word that is one token starting a word (`starts`), and that `keep(row, word)` allows."""
    replaceable = []
    for i, ids in enumerate(encoded["input_ids"]):
        words = encoded.word_ids(i)
        pieces = Counter(w for w in words if w is not None)
        replaceable.append([p for p, (w, t) in enumerate(zip(words, ids))
                            if w is not None and pieces[w] == 1 and starts[t] and keep(i, w)])
    sources = np.unique([ids[p] for ids, spots in zip(encoded["input_ids"], replaceable) for p in spots])
    neighbours = nearest_neighbours(embeddings, sources.astype(np.int64), starts, NEIGHBOURS)
    variants = []
    for ids, spots in zip(encoded["input_ids"], replaceable):
        mine = []
        for _ in range(n):
            new = list(ids)
            chosen = [p for p in spots if rng.random() < REPLACE_PROBABILITY]
            if spots and not chosen:
                chosen = [spots[rng.integers(len(spots))]]
            for p in chosen:
                options = neighbours[ids[p]]
                new[p] = options[rng.integers(len(options))]
            mine.append(new)
        variants.append(mine)
    return variants


def augment_texts(texts: list[str], tokenizer, embeddings: torch.Tensor, n: int, rng: np.random.Generator,
                  starts: np.ndarray) -> list[list[str]]:
    """n variants of each text (one list per text), each with at least one word replaced where any can be."""
    encoded = tokenizer(texts, add_special_tokens=False)
    return [[tokenizer.decode(ids) for ids in mine]
            for mine in _variants(encoded, lambda row, word: True, embeddings, n, rng, starts)]


def augment_words(sentences: list[list[str]], tags: list[list[int]], tokenizer, embeddings: torch.Tensor, n: int,
                  rng: np.random.Generator, starts: np.ndarray, outside: int = 0) -> list[list[list[str]]]:
    """n variants of each tagged sentence's words: only words tagged `outside` (O) are replaced, each by
    one word, so every tag stays on its word and no entity changes."""
    encoded = tokenizer(sentences, is_split_into_words=True, add_special_tokens=False)
    variants = _variants(encoded, lambda row, word: tags[row][word] == outside, embeddings, n, rng, starts)
    out = []
    for i, (words, mine) in enumerate(zip(sentences, variants)):
        word_ids, original = encoded.word_ids(i), encoded["input_ids"][i]
        out.append([])
        for ids in mine:
            new = list(words)
            for p in (p for p, t in enumerate(ids) if t != original[p]):
                new[word_ids[p]] = tokenizer.convert_tokens_to_string([tokenizer.convert_ids_to_tokens(ids[p])]).strip()
            out[-1].append(new)
    return out


def augmented_rows(task: Task, tokenizer, embeddings: torch.Tensor, n: int, seed: int) -> dict[str, list]:
    """n augmented copies of every training example's text columns (a tagging task's words and their
    unchanged tags), deterministic under `seed`."""
    if "answers" in task.train.column_names:
        raise UserError("--augment does not apply to question answering yet: a replaced word could move an "
                        "answer out of its recorded characters")
    rng = np.random.default_rng(seed)
    starts = word_starts(tokenizer)
    if "tokens" in task.train.column_names:
        tags = list(task.train["label"])
        words = augment_words(list(task.train["tokens"]), tags, tokenizer, embeddings, n, rng, starts)
        return {"tokens": [variant for variants in words for variant in variants],
                "label": [row for row in tags for _ in range(n)]}
    columns = [c for c in ("text", "text_pair") if c in task.train.column_names]
    per_column = {c: augment_texts(list(task.train[c]), tokenizer, embeddings, n, rng, starts) for c in columns}
    return {c: [variant for variants in per_column[c] for variant in variants] for c in columns}


def with_rows(task: Task, rows: dict[str, list]) -> Task:
    """`task` with the augmented `rows` appended, labelled as having no label (the task kind's `no_label`)
    unless they bring their own (a tagging task's tags, which augmentation keeps in place).

    The new training set has its own fingerprint, so the teacher's soft targets for it are cached
    apart from those of the original rows.
    """
    # a hub task's ClassLabel rejects -100 (a tagging task's labels, a list per row, stay as they are)
    tagged = "tokens" in task.train.column_names
    original = task.train if tagged else task.train.cast_column("label", datasets.Value(task.kind.label_type))
    new = datasets.Dataset.from_dict({"label": [task.kind.no_label] * len(next(iter(rows.values()))), **rows},
                                     features=original.features)
    return dataclasses.replace(task, train=datasets.concatenate_datasets(
        [original, new.select_columns(original.column_names)]))
