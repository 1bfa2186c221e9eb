"""Which KD settings a stage trains with: each one given, inherited along the chain, or the default.

A variant's record keeps the KD settings it was trained with, each with where it came from:

    "kd": {"temperature": {"value": 4.0, "from": "given"},
           "alpha": {"value": 0.5, "from": "default"},
           "intermediate": {"value": "hidden,attention", "from": "inherited", "variant": "L6-kd-hidden-attention"},
           "layer_map": {"value": [1, 5], "from": "inherited", "variant": "L6-kd-hidden-attention"}, ...}

Every stage that trains from a variant (prune, layerdrop and share recoveries, QAT) takes each setting
it was not given (None) from that record, naming the variant where the value was set, so a student
distilled with intermediate losses and augmentation recovers the same way without a flag repeated.
The layer map travels with the layers themselves (arch.LAYER_MAP_KEY in the model's config, moved by
every cut), so the record only says which map the model ended with and where it came from.
"""

from __future__ import annotations

from dataclasses import fields, replace

from compress.configs import KD


def kd_settings(kd: KD, parent: dict, seed: int) -> tuple[KD, dict]:
    """`kd` with every setting not given taken from `parent` (a variant record), else its fallback,
    and where each came from. An augmentation seed not set anywhere is the run's `seed`."""
    recorded = parent.get("kd") or {}
    values, sources = {}, {}
    for f in fields(KD):
        given, entry = getattr(kd, f.name), recorded.get(f.name) or {}
        if given is not None:
            values[f.name], sources[f.name] = given, {"from": "given"}
        elif entry.get("value") is not None:
            origin = entry["variant"] if entry.get("from") == "inherited" else parent["name"]
            values[f.name], sources[f.name] = entry["value"], {"from": "inherited", "variant": origin}
        else:
            values[f.name], sources[f.name] = f.metadata["fallback"], {"from": "default"}
    if isinstance(values["layer_map"], list):  # the model's layers carry it: nothing to give again
        values["layer_map"] = ""
    if not values["augment"]:
        values["augment_seed"], sources["augment_seed"] = None, {"from": "default"}
    elif values["augment_seed"] is None:
        values["augment_seed"] = seed
    return replace(kd, **values), sources


def with_fallbacks(kd: KD) -> KD:
    """`kd` with every setting not given at its fallback: what a stage with nothing to inherit trains with."""
    return replace(kd, **{f.name: f.metadata["fallback"] for f in fields(KD) if getattr(kd, f.name) is None})


def kd_record(kd: KD, sources: dict, layer_map: list[int] | None) -> dict:
    """The record's "kd": each setting's value (the layer map the model ended with) and its source."""
    values = {f.name: getattr(kd, f.name) for f in fields(KD)}
    values["layer_map"] = layer_map or ""
    return {name: {"value": value, **sources[name]} for name, value in values.items()}


def given(kd: KD) -> list[str]:
    """The flags of the KD settings given in `kd`."""
    return [f"--{f.name.replace('_', '-')}" for f in fields(KD) if getattr(kd, f.name) is not None]
