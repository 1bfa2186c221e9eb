"""Task kinds: what a model is trained to output, one class each, found by name in one registry.

A small core and a registry (Torch-Pruning's way): every stage asks the task's kind, never an
if-chain, for what differs between kinds:

- the head: its outputs and the config's problem_type (`head`), and how its tokenizer is loaded
  (`tokenizer_options`);
- labels: how a file's value is read (`label`) and stored (`label_type`), what marks a row without
  one (`no_label`, for augmented rows) and what makes a task's labels sane (`check_labels`, and
  `check_split` for one more file to score);
- the losses on the outputs: the hard one (`hard_loss`: the no-KD baseline, prune's scores) and
  KD's (`kd_loss`), and the student's agreement with its teacher (`agreement`);
- the metrics (`metrics`), the one a stage's line prints and --max-drop bounds (`headline`), and those
  that pick the best epoch and that retention, the report's axis and the search compare (`main`, the
  first a task's metrics hold: `main_of`), with the axis's label (`axis`);
- how an ONNX artifact's outputs are held against PyTorch's (`parity`) and what the graph's outputs are
  called (`outputs`, the one compress reads first), and how far an untrained candidate is from its teacher (`divergence`, the search's proxy);
- whether training rows carry labels at all (`labelled`): without, a teacher is used as it is and a
  student learns from its outputs alone; and whether fine-tuning takes the loss the model's own class
  computes from `labels` (`model_loss`), or the kind's `hard_loss` on its outputs.

Sequence classification is the first kind, regression (GLUE STS-B) the second, sentence embeddings
the third, token classification (NER: one tag per word, entity-level F1) the fourth and extractive
question answering (a start and an end logit per token, SQuAD's EM and F1) the fifth. torch is imported
inside the methods: variant.py reads MAIN_METRICS from here, and listing a workspace stays fast.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter

import numpy as np

from compress.configs import MAX_LABELS
from compress.errors import UserError


class Classification:
    """Sequence classification: K logits, cross-entropy, accuracy (F1 for MRPC, MCC for CoLA)."""

    name = "classification"
    headline = "accuracy"
    main = ("mcc", "accuracy")  # CoLA is judged by MCC: accuracy rewards saying "acceptable" to everything
    axis = {"accuracy": "accuracy, %", "mcc": "Matthews correlation x 100"}
    label_type = "int64"
    no_label = -100  # what cross-entropy ignores
    uses_temperature = True
    labelled = True  # training rows carry labels (embeddings: a corpus of sentences, learned from the teacher alone)
    model_loss = True  # transformers' class computes the fine-tuning loss from `labels`
    outputs = ("logits",)  # the ONNX graph's outputs
    tokenizer_options: dict = {}  # how a teacher loads its base's tokenizer, which its students keep

    def head(self, num_labels: int) -> dict:
        return {"num_labels": num_labels}

    def label(self, value, where: str) -> int:
        if isinstance(value, bool) or value is None:
            raise UserError(f"{where}: label {value!r} is not an integer class id")
        if isinstance(value, int):
            label = value
        else:
            try:
                label = int(str(value).strip())
            except ValueError:
                raise UserError(f"{where}: label {value!r} is not an integer class id") from None
        if not 0 <= label < MAX_LABELS:
            raise UserError(f"{where}: label {label} is not a class id from 0 to {MAX_LABELS - 1}")
        return label

    def check_labels(self, name: str, train: list, dev: list, num_labels: int | None) -> int:
        """The number of classes: at least two, ids 0..K-1, dev labels seen in training.

        K is the number of classes training shows, unless `num_labels` says there are more (classes
        that training lacks); then every label must lie below it."""
        seen, in_dev = set(train), set(dev)
        if len(seen) < 2:
            raise UserError(f"{name}: training has one class only (label {seen.pop()}): a classifier needs two or more")
        if num_labels is None:
            if seen != set(range(len(seen))):
                raise UserError(f"{name}: training labels must be the class ids 0 to K-1, found {_listed(seen)} "
                                "(give --num-labels K if some classes are missing from training)")
            if in_dev - seen:
                raise UserError(f"{name}: dev labels {_listed(in_dev - seen)} never occur in train "
                                f"(train labels: {_listed(seen)}; --num-labels K allows them)")
            return len(seen)
        if not 2 <= num_labels <= MAX_LABELS or max(seen | in_dev) >= num_labels:
            raise UserError(f"{name}: --num-labels {num_labels} must lie in 2..{MAX_LABELS} and exceed every label "
                            f"(largest: {max(seen | in_dev)})")
        return num_labels

    def check_split(self, where: str, labels: list, num_labels: int) -> None:
        """One more labelled split (compress eval's file) holds only the model's classes."""
        if not labels:
            raise UserError(f"{where}: the split is empty")
        if max(labels) >= num_labels:
            raise UserError(f"{where}: label {max(labels)} is not one of the model's classes (0 to {num_labels - 1})")

    def metrics(self, outputs: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> dict:
        from compress.runtime.inference import task_metrics

        return task_metrics(outputs, labels, names)

    def hard_loss(self, outputs, labels):
        import torch.nn.functional as F

        return F.cross_entropy(outputs.float(), labels)

    def kd_loss(self, student, teacher, labels, temperature: float, alpha: float):
        from compress.training.losses import kd_loss

        return kd_loss(student.float(), teacher.float(), labels, temperature, alpha)

    def agreement(self, student, teacher) -> dict:
        """How often the student picks the teacher's class."""
        return {"agreement": float((student.argmax(-1) == teacher.argmax(-1)).float().mean())}

    def parity(self, expected, got, atol: float) -> dict:
        """Max |logit difference| and argmax agreement between PyTorch and ORT on every row; a row whose top
        two logits lie within 2 * atol (a knife edge) may flip without failing the check."""
        top2 = expected.topk(2, dim=-1).values
        clear = (top2[:, 0] - top2[:, 1]) > 2 * atol
        agree = expected.argmax(-1) == got.argmax(-1)
        return {"max_abs_diff": float((expected - got).abs().max()), "agreement": float(agree.float().mean()),
                "disagreements_off_ties": int((~agree & clear).sum()), "rows": len(expected)}

    def divergence(self, outputs, reference) -> float:
        """KL(teacher || candidate) at T=1, batch mean."""
        import torch.nn.functional as F

        return float(F.kl_div(F.log_softmax(outputs, -1), F.log_softmax(reference, -1), log_target=True,
                              reduction="batchmean"))


class Regression:
    """One real-valued output (GLUE STS-B's similarity, 0 to 5): MSE, Pearson and Spearman.

    KD mixes the MSE to the teacher's prediction with the MSE to the label; a temperature softens a
    softmax, and a single real output has none, so --temperature does not apply and is refused."""

    name = "regression"
    headline = "spearman"
    main = ("spearman",)
    axis = {"spearman": "Spearman correlation x 100"}
    label_type = "float64"
    no_label = math.nan
    uses_temperature = False
    labelled = True
    model_loss = True
    outputs = ("logits",)
    tokenizer_options: dict = {}

    def head(self, num_labels: int) -> dict:
        return {"num_labels": 1, "problem_type": "regression"}

    def label(self, value, where: str) -> float:
        if isinstance(value, bool) or value is None:
            raise UserError(f"{where}: score {value!r} is not a number")
        try:
            score = float(value if isinstance(value, (int, float)) else str(value).strip())
        except ValueError:
            raise UserError(f"{where}: score {value!r} is not a number") from None
        if not math.isfinite(score):
            raise UserError(f"{where}: score {value!r} is not a finite number")
        return score

    def check_labels(self, name: str, train: list, dev: list, num_labels: int | None) -> int:
        if num_labels is not None:
            raise UserError(f"--num-labels counts classes: {name} is a regression task (one output)")
        if min(train) == max(train):
            raise UserError(f"{name}: every training score is {train[0]}: there is nothing to learn")
        return 1

    def check_split(self, where: str, labels: list, num_labels: int) -> None:
        if not labels:
            raise UserError(f"{where}: the split is empty")

    def metrics(self, outputs: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> dict:
        predictions = np.asarray(outputs, dtype=np.float64).reshape(len(labels))
        labels = np.asarray(labels, dtype=np.float64)
        found = {"pearson": pearson(predictions, labels), "spearman": pearson(ranks(predictions), ranks(labels)),
                 "mse": float(np.mean((predictions - labels) ** 2))}
        return {name: found[name] for name in names}

    def hard_loss(self, outputs, labels):
        import torch.nn.functional as F

        return F.mse_loss(outputs.float().squeeze(-1), labels.float())

    def kd_loss(self, student, teacher, labels, temperature: float, alpha: float):
        """alpha * MSE(student, teacher) + (1 - alpha) * MSE(student, label), the label's term over the
        rows that have one (augmented rows carry NaN). `temperature` is not used (see the class)."""
        import torch.nn.functional as F

        student, teacher, labels = student.float().squeeze(-1), teacher.float().squeeze(-1), labels.float()
        labelled = ~labels.isnan()
        hard = F.mse_loss(student[labelled], labels[labelled], reduction="sum") / labelled.sum().clamp(min=1)
        return alpha * F.mse_loss(student, teacher) + (1 - alpha) * hard

    def agreement(self, student, teacher) -> dict:
        """Pearson correlation between the student's predictions and the teacher's."""
        return {"teacher_pearson": pearson(student.numpy().ravel(), teacher.numpy().ravel())}

    def parity(self, expected, got, atol: float) -> dict:
        return {"max_abs_diff": float((expected - got).abs().max()), "rows": len(expected)}

    def divergence(self, outputs, reference) -> float:
        """Mean squared difference from the teacher's predictions."""
        return float(((outputs.float() - reference.float()) ** 2).mean())


class Embeddings(Regression):
    """Sentence embeddings (compress.model.embedding): the model's output is the pooled sentence vector.

    Training rows are a corpus of sentences without labels (`labelled` is False): a student learns the
    teacher's embeddings alone. The dev split holds STS-B's dev pairs as two consecutive rows each (first
    sentence, then second), both labelled with the pair's gold score, so the metrics see every
    embedding in one array: Spearman of the pairs' cosine against the gold score, and retrieval recall
    at 1 and 10 over the pairs scored 4 or more (each first sentence against all their second sentences).
    KD's loss is alpha * the squared distance to the teacher's embedding + (1 - alpha) * (1 - cosine):
    for unit vectors the squared distance is 2 (1 - cosine), so both weigh alike at alpha 0.5.
    """

    name = "embeddings"
    headline = "stsb_spearman"
    main = ("stsb_spearman",)
    axis = {"stsb_spearman": "STS-B Spearman x 100"}
    labelled = False
    outputs = ("sentence_embedding",)
    positive = 4.0  # an STS-B pair scored this or more is a retrieval hit

    def head(self, num_labels: int) -> dict:
        raise UserError("an embedding teacher is the sentence-transformers model as it is: it gets no head")

    def check_labels(self, name: str, train: list, dev: list, num_labels: int | None) -> int:
        """No outputs to count: the width is the model's."""
        if num_labels is not None:
            raise UserError(f"--num-labels counts classes: {name} learns sentence embeddings")
        return 0

    def check_split(self, where: str, labels: list, num_labels: int) -> None:
        if not labels or len(labels) % 2:
            raise UserError(f"{where}: expected sentence pairs with a score (two rows each)")

    def metrics(self, outputs: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> dict:
        outputs = np.asarray(outputs, dtype=np.float64)
        outputs = outputs / np.maximum(np.linalg.norm(outputs, axis=1, keepdims=True), 1e-12)
        first, second, gold = outputs[0::2], outputs[1::2], np.asarray(labels, dtype=np.float64)[0::2]
        cosine = (first * second).sum(1)
        found = {"stsb_spearman": pearson(ranks(cosine), ranks(gold))}
        hits = gold >= self.positive
        if hits.any():
            similarity = first[hits] @ second[hits].T
            rank = (similarity > np.diag(similarity)[:, None]).sum(1)  # how many candidates beat the true one
            found.update({"recall@1": float((rank < 1).mean()), "recall@10": float((rank < 10).mean())})
        return {name: found[name] for name in names if name in found}

    def hard_loss(self, outputs, labels):
        """Against labels of the embedding's width (the teacher's embeddings: prune's scoring batches) the KD
        loss at alpha 0.5; against scores (dev pairs) sentence-transformers' CosineSimilarityLoss:
        MSE between each pair's cosine and its score scaled to 0..1."""
        import torch.nn.functional as F

        if labels.dim() == 2:
            return self.kd_loss(outputs, labels, None, None, 0.5)
        outputs = outputs.float()
        cosine = F.cosine_similarity(outputs[0::2], outputs[1::2], dim=-1)
        return F.mse_loss(cosine, labels.float()[0::2] / 5)

    def kd_loss(self, student, teacher, labels, temperature, alpha: float):
        """alpha * squared distance + (1 - alpha) * (1 - cosine), batch means; `labels` and `temperature`
        are not used (the corpus has no labels, and no softmax softens an embedding)."""
        import torch.nn.functional as F

        student, teacher = student.float(), teacher.float()
        squared = ((student - teacher) ** 2).sum(-1).mean()
        return alpha * squared + (1 - alpha) * (1 - F.cosine_similarity(student, teacher, dim=-1)).mean()

    def agreement(self, student, teacher) -> dict:
        """Mean cosine between the student's embedding of a sentence and the teacher's."""
        import torch.nn.functional as F

        return {"teacher_cosine": float(F.cosine_similarity(student.float(), teacher.float(), dim=-1).mean())}

    def parity(self, expected, got, atol: float) -> dict:
        """Max |difference| and the lowest cosine between PyTorch's and ORT's embedding of a sentence."""
        import torch.nn.functional as F

        return {"max_abs_diff": float((expected - got).abs().max()),
                "min_cosine": float(F.cosine_similarity(expected.float(), got.float(), dim=-1).min()),
                "rows": len(expected)}

    def divergence(self, outputs, reference) -> float:
        """The KD loss at alpha 0.5 to the teacher's embeddings."""
        return float(self.kd_loss(outputs, reference, None, None, 0.5))
class TokenClassification:
    """A BIO/IOB2 tag per word (named entities): one logit vector per token, entity-level F1.

    An instance knows its task's tag names (`tags`, "O" first), which decoding spans needs; the registry's
    instance has none and serves what does not decode (the KD temperature, the axis). Only a word's first
    subword carries its tag (the others, and special tokens, hold `no_label`, which the losses and the
    metric skip); token outputs hold NaN where a row has no token (padding), which parity and the
    agreement skip too."""

    name = "token-classification"
    headline = "entity_f1"
    main = ("entity_f1",)
    axis = {"entity_f1": "entity F1 x 100"}
    label_type = "int64"
    no_label = -100
    uses_temperature = True
    # words are tokenized one by one: a byte-level BPE (RoBERTa) must mark each as starting after a space,
    # as it would inside a sentence; WordPiece and SentencePiece tokenizers ignore the option
    tokenizer_options = {"add_prefix_space": True}
    labelled = True
    model_loss = True
    outputs = ("logits",)

    def __init__(self, tags: tuple[str, ...] = ()):
        self.tags = tuple(tags)

    def head(self, num_labels: int) -> dict:
        """A token-classification head whose config names the tags (so a served model's output reads as tags)."""
        return {"head": "token", "num_labels": num_labels, "id2label": dict(enumerate(self.tags)),
                "label2id": {tag: i for i, tag in enumerate(self.tags)}}

    def label(self, value, where: str) -> int:
        """A tag's id; a tag outside the task's BIO set is one line."""
        if value not in self.tags:
            raise UserError(f"{where}: tag {value!r} is not one of this task's tags ({_listed(self.tags)})")
        return self.tags.index(value)

    def check_labels(self, name: str, train: list, dev: list, num_labels: int | None) -> int:
        if num_labels is not None:
            raise UserError(f"--num-labels counts classes: {name} is a token-classification task (its tags are read "
                            "from the data)")
        if not any(tag for row in train for tag in row):
            raise UserError(f"{name}: every training tag is O: there is no entity to learn")
        return len(self.tags)

    def check_split(self, where: str, labels: list, num_labels: int) -> None:
        if not labels:
            raise UserError(f"{where}: the split is empty")

    def metrics(self, outputs: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> dict:
        """Entity precision, recall and F1 (exact spans, as seqeval computes them) and tag accuracy, over
        the labelled positions of each row: `outputs` [rows, tokens, tags], `labels` [rows, tokens]."""
        predicted, gold = np.asarray(outputs).argmax(-1), np.asarray(labels)
        labelled = gold != self.no_label
        pairs = [([self.tags[t] for t in g[m]], [self.tags[t] for t in p[m]])
                 for g, p, m in zip(gold, predicted, labelled)]
        found = entity_scores(pairs)
        found["tag_accuracy"] = float((predicted[labelled] == gold[labelled]).mean()) if labelled.any() else 0.0
        return {name: found[name] for name in names}

    def hard_loss(self, outputs, labels):
        import torch.nn.functional as F

        return F.cross_entropy(outputs.float().flatten(0, 1), labels.flatten(), ignore_index=self.no_label)

    def kd_loss(self, student, teacher, labels, temperature: float, alpha: float):
        """Classification's KD loss over the labelled positions alone (a word's first subword): the others
        and padding carry no tag, and their teacher outputs are not soft targets (NaN on padding)."""
        from compress.training.losses import kd_loss

        labelled = labels != self.no_label
        return kd_loss(student.float()[labelled], teacher.float()[labelled], labels[labelled], temperature, alpha)

    def agreement(self, student, teacher) -> dict:
        """How often the student picks the teacher's tag, over every real token."""
        real = ~teacher.isnan().any(-1)
        return {"agreement": float((student.argmax(-1) == teacher.argmax(-1))[real].float().mean())}

    def parity(self, expected, got, atol: float) -> dict:
        """Classification's check over every real token (a row of tokens each)."""
        real = ~expected.isnan().any(-1)
        found = CLASSIFICATION.parity(expected[real], got[real], atol)
        return {**found, "rows": len(expected), "tokens": found.pop("rows")}

    def divergence(self, outputs, reference) -> float:
        """KL(teacher || candidate) at T=1, mean per real token."""
        real = ~reference.isnan().any(-1)
        return CLASSIFICATION.divergence(outputs[real], reference[real])


# The channels of a QA window's per-token label (see QuestionAnswering): the start and end targets (1 on the
# one token each), the token's characters in the context (-1 outside it), and the question's example index.
START, END, FIRST_CHAR, LAST_CHAR, EXAMPLE = range(5)


class QuestionAnswering:
    """Extractive QA (SQuAD v1.1): a start and an end logit per token, stacked as [windows, tokens, 2].

    A question with its context becomes overlapping windows (compress.data.batches.encode); each window's
    label is a row per token of the channels above, padded with `no_label` like a tag, so batching, soft
    targets and gathering treat a window as they treat a tagged sentence. A window that does not hold the
    answer points both targets at its first token (CLS), as Hugging Face's recipe does. A task's instance
    holds the examples (context, gold answers) of every file read for it (train, dev, compress eval's),
    which decoding maps predicted spans back into; the registry's instance (a variant record's kind)
    has none and serves what does not decode."""

    name = "question-answering"
    headline = "qa_f1"
    main = ("qa_f1",)
    axis = {"qa_f1": "QA F1 x 100"}
    label_type = "int64"
    no_label = -100
    uses_temperature = True
    labelled = True
    model_loss = False  # transformers' reader takes start and end positions, not a window's label channels
    outputs = ("logits", "start_logits", "end_logits")  # compress reads the stacked logits; servers the two halves
    tokenizer_options: dict = {}
    MAX_ANSWER_TOKENS = 30  # the longest span decoding considers by default (Hugging Face's and SQuAD's usual limit)

    def __init__(self, doc_stride: int | None = None, max_answer_tokens: int | None = None):
        """`doc_stride`: tokens two windows of a context share (None: half a window); `max_answer_tokens`: the
        longest span decoding returns (None: MAX_ANSWER_TOKENS). Both are the task's (--doc-stride,
        --max-answer-length), recorded in its spec so every stage windows and decodes alike."""
        self.doc_stride, self.max_answer_tokens = doc_stride, max_answer_tokens or self.MAX_ANSWER_TOKENS
        self.examples: list[tuple[str, list[str]]] = []  # (context, gold answer texts) per index
        self._indices: dict[tuple, int] = {}

    def add(self, question: str, context: str, answers: list[str]) -> int:
        """Keep one question's context and gold answers; returns the index its windows' labels carry. The
        same question, context and answers read again (a file given twice) get the same index, so a split's
        rows, and their fingerprint, do not depend on what was read before."""
        key = (question, context, tuple(answers))
        if key not in self._indices:
            self._indices[key] = len(self.examples)
            self.examples.append((context, answers))
        return self._indices[key]

    def head(self, num_labels: int) -> dict:
        return {"head": "qa", "num_labels": 2}

    def check_labels(self, name: str, train: list, dev: list, num_labels: int | None) -> int:
        if num_labels is not None:
            raise UserError(f"--num-labels counts classes: {name} is a question-answering task (a start and an end "
                            "per token)")
        return 2

    def check_split(self, where: str, labels: list, num_labels: int) -> None:
        if not labels:
            raise UserError(f"{where}: the split is empty")

    def predictions(self, outputs: np.ndarray, labels: np.ndarray) -> dict[int, str]:
        """The answer text for each question: its windows' best valid span (start <= end, at most
        `max_answer_tokens`, inside the context) by start + end logit, in the context's characters."""
        outputs, labels = np.asarray(outputs, dtype=np.float64), np.asarray(labels)
        best: dict[int, tuple[float, int, int]] = {}
        i, j = np.indices((outputs.shape[1],) * 2)
        band = (j >= i) & (j - i < self.max_answer_tokens)
        for logits, label in zip(outputs, labels):
            context = label[:, FIRST_CHAR] >= 0
            if not context.any():
                continue
            valid = band & context[:, None] & context[None, :]
            scores = np.where(valid, np.nan_to_num(logits[:, 0])[:, None] + np.nan_to_num(logits[None, :, 1]), -np.inf)
            start, end = np.unravel_index(int(scores.argmax()), scores.shape)
            example = int(label[0, EXAMPLE])
            if example not in best or scores[start, end] > best[example][0]:
                best[example] = (float(scores[start, end]), int(label[start, FIRST_CHAR]), int(label[end, LAST_CHAR]))
        return {example: self.examples[example][0][first:last] for example, (_, first, last) in best.items()}

    def metrics(self, outputs: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> dict:
        """SQuAD v1.1's exact match and F1 over the questions `labels` hold, each the best over its gold answers."""
        predicted = self.predictions(outputs, labels)
        exact = [max(exact_match(text, gold) for gold in self.examples[e][1]) for e, text in predicted.items()]
        f1 = [max(squad_f1(text, gold) for gold in self.examples[e][1]) for e, text in predicted.items()]
        found = {"exact_match": float(np.mean(exact)) if exact else 0.0, "qa_f1": float(np.mean(f1)) if f1 else 0.0}
        return {name: found[name] for name in names}

    def _masked(self, outputs, labels):
        """Start and end logits ([windows, tokens] each, float32) with padding at a large negative: padding
        carries no logits of its own (NaN in cached soft targets) and must get no probability."""
        real = labels[..., EXAMPLE] != self.no_label
        outputs = outputs.float().masked_fill(~real[..., None], -1e4)
        return outputs[..., 0], outputs[..., 1]

    def hard_loss(self, outputs, labels):
        """Cross-entropy of the start and of the end position over each window's tokens, averaged (BERT's SQuAD loss)."""
        import torch.nn.functional as F

        starts, ends = self._masked(outputs, labels)
        return (F.cross_entropy(starts, labels[..., START].argmax(-1))
                + F.cross_entropy(ends, labels[..., END].argmax(-1))) / 2

    def kd_loss(self, student, teacher, labels, temperature: float, alpha: float):
        """DistilBERT's SQuAD recipe: classification's KD loss (alpha * T^2 * KL + (1 - alpha) * CE) on the
        start distribution and on the end distribution over a window's tokens, averaged."""
        from compress.training.losses import kd_loss

        student_halves, teacher_halves = self._masked(student, labels), self._masked(teacher, labels)
        targets = labels[..., START].argmax(-1), labels[..., END].argmax(-1)
        return sum(kd_loss(s, t, y, temperature, alpha)
                   for s, t, y in zip(student_halves, teacher_halves, targets)) / 2

    @staticmethod
    def _spans(outputs, real):
        """Each window's argmax start and end over its real tokens."""
        outputs = outputs.float().masked_fill(~real[..., None], -math.inf)
        return outputs.argmax(1)

    def agreement(self, student, teacher) -> dict:
        """How often the student's most likely start and end are the teacher's, per window."""
        real = ~teacher.isnan().any(-1)
        same = (self._spans(student, real) == self._spans(teacher, real)).all(-1)
        return {"agreement": float(same.float().mean())}

    def parity(self, expected, got, atol: float) -> dict:
        """Max |logit difference| over real tokens and how often both runtimes pick the same start and end."""
        real = ~expected.isnan().any(-1)
        same = (self._spans(expected, real) == self._spans(got, real)).all(-1)
        return {"max_abs_diff": float((expected[real] - got[real]).abs().max()), "agreement": float(same.float().mean()),
                "rows": len(expected), "tokens": int(real.sum())}

    def divergence(self, outputs, reference) -> float:
        """KL(teacher || candidate) at T=1 of the start and of the end distribution, averaged over windows."""
        import torch.nn.functional as F

        real = ~reference.isnan().any(-1)
        log_p = F.log_softmax(outputs.float().masked_fill(~real[..., None], -1e4), dim=1)
        log_q = F.log_softmax(reference.float().masked_fill(~real[..., None], -1e4), dim=1)
        return float((log_q.exp() * (log_q - log_p)).masked_fill(~real[..., None], 0).sum(1).mean())


def normalize_answer(text: str) -> str:
    """SQuAD's official normalisation: lower case, no punctuation, no articles (a, an, the), single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def squad_f1(prediction: str, gold: str) -> float:
    """SQuAD's token F1 between the normalised answers (bags of words)."""
    predicted, truth = normalize_answer(prediction).split(), normalize_answer(gold).split()
    same = sum((Counter(predicted) & Counter(truth)).values())
    if not same:
        return 0.0
    precision, recall = same / len(predicted), same / len(truth)
    return 2 * precision * recall / (precision + recall)


def entities(tags: list[str]) -> set[tuple[str, int, int]]:
    """The (type, first, last) spans of a BIO/IOB2 tag sequence, as seqeval (conlleval) reads them: a span
    starts at B-, or at an I- that follows O or another type, and ends before O, B- or a change of type."""
    spans, start, current = set(), None, None
    for i, tag in enumerate([*tags, "O"]):
        prefix, kind = tag[0], tag[2:]
        if start is not None and (prefix != "I" or kind != current):
            spans.add((current, start, i - 1))
            start = None
        if prefix == "B" or (prefix == "I" and start is None):
            start, current = i, kind
    return spans


def entity_scores(pairs) -> dict:
    """Micro-averaged entity precision, recall and F1 over (gold tags, predicted tags) rows; 0 where undefined."""
    correct = predicted = gold = 0
    for gold_tags, predicted_tags in pairs:
        truth, guess = entities(gold_tags), entities(predicted_tags)
        correct, predicted, gold = correct + len(truth & guess), predicted + len(guess), gold + len(truth)
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"entity_precision": precision, "entity_recall": recall, "entity_f1": f1}


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; 0 where either side is constant (no correlation to speak of)."""
    a, b = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b / denominator) if denominator else 0.0


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties given their mean rank (as Spearman's correlation needs)."""
    order = np.argsort(values, kind="stable")
    ranked = np.empty(len(values))
    ranked[order] = np.arange(1, len(values) + 1)
    _, first, counts = np.unique(values[order], return_index=True, return_counts=True)
    for start, count in zip(first, counts):
        if count > 1:
            ranked[order[start:start + count]] = start + (count + 1) / 2
    return ranked


def _listed(values) -> str:
    values = sorted(values)
    return ", ".join(map(str, values[:10])) + (f" ... ({len(values)} in all)" if len(values) > 10 else "")


KINDS = {kind.name: kind for kind in (Classification(), Regression(), Embeddings(), TokenClassification(),
                                      QuestionAnswering())}
CLASSIFICATION = KINDS["classification"]

# What the variant records, the report and the search look for, in this order, to judge a split's metrics.
MAIN_METRICS = tuple(dict.fromkeys(name for kind in KINDS.values() for name in kind.main))
AXIS_LABELS = {name: label for kind in KINDS.values() for name, label in kind.axis.items()}


def main_of(names) -> str:
    """Of metric `names` (a task's, or those a split measured), the one the task is judged by: it picks
    the best epoch, and retention, the report's axis and the search compare it. MCC for CoLA."""
    return next(name for name in MAIN_METRICS if name in names)


def kind_of(meta: dict):
    """The kind a variant record (variant.json as a dict) was trained for; records before kinds are classification."""
    name = (meta.get("data") or {}).get("kind", CLASSIFICATION.name)
    if name not in KINDS:
        raise UserError(f"variant {meta.get('name')}: unknown task kind '{name}' (known: {', '.join(KINDS)})")
    return KINDS[name]
