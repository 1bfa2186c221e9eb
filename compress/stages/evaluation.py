"""`compress eval`: score a variant on one more labelled file (a test split kept apart from dev).

The file is read in the task's own format (compress.data.tasks.labelled_file) and scored by the deployed
artifact (the ONNX file where there is one, else the PyTorch checkpoint) with the task kind's
metrics. The result goes to eval/<file>-<fingerprint>.json inside the variant, one file per scored
file: variant.json stays as its stage wrote it (its digest, Variant.made, names the run that made
the model, and recipes and searches follow it), and `Variant.evaluations` reads them back beside
the dev metrics for the report.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timezone
from pathlib import Path

from compress.data.batches import label_array
from compress.data.tasks import DATA_COLUMNS, labelled_file, task_of
from compress.errors import UserError
from compress.model.checkpoint import load_tokenizer
from compress.runtime import ort as runtime
from compress.runtime.artifacts import onnx_artifact, torch_model
from compress.runtime.inference import predict_logits
from compress.variant import EVAL_DIR, Variant, as_variant
from compress.workspace import clean_stale, own_folder, write_json


def rows_fingerprint(rows) -> str:
    """A hash of the rows as read (texts and labels), so the same data under another name is the same file."""
    digest = hashlib.sha256()
    columns = [c for c in DATA_COLUMNS if c in rows.column_names]
    for row in zip(*(rows[c] for c in columns)):
        digest.update(json.dumps(row, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def evaluate_file(variant: Variant, data) -> dict:
    """Score `variant` (a Variant or its folder) on the labelled file `data` (str or Path) and record it;
    returns the record: the file, its fingerprint and rows, the metrics and what computed them."""
    variant = as_variant(variant)
    task = task_of(variant.record)
    rows = labelled_file(task, data)
    path, fingerprint = Path(data).expanduser().resolve(), rows_fingerprint(rows)
    if fingerprint == rows_fingerprint(task.dev):
        raise UserError(f"{data} holds the dev rows, whose metrics variant.json already has: give a split kept apart")
    tokenizer = load_tokenizer(variant.path)
    encoded = task.encode(rows, tokenizer, variant.record.max_length)
    onnx_path = onnx_artifact(variant)
    if onnx_path is not None:
        outputs, source = runtime.logits(runtime.session(onnx_path), encoded, tokenizer), f"onnx ({onnx_path.name})"
    else:
        model = torch_model(variant, "cpu")
        if model is None:
            raise UserError(f"{variant.path} has neither an ONNX artifact nor a PyTorch checkpoint to score")
        outputs, source = predict_logits(model, encoded, tokenizer), "pytorch fp32 (cpu)"
    record = {"file": str(path), "fingerprint": fingerprint, "rows": len(rows), "kind": task.kind.name,
              "metrics": task.scores(outputs.numpy(), label_array(encoded)), "scored_by": source,
              "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    folder = own_folder(variant.workspace, variant.path, EVAL_DIR)
    clean_stale(folder)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip("-.")[:60] or "data"
    write_json(folder / f"{stem}-{fingerprint[:16]}.json", record)  # a temporary name, then renamed
    return record
