"""KD settings follow the chain: a stage that trains from a variant inherits the KD it was trained with
(each setting unless given), records where each came from, keeps each layer's teacher layer through a
cut, and reuses the augmented rows and their soft targets the first stage made."""

import pytest

import compress.training.targets as teacher_targets
from compress.configs import KD, DistillConfig, LayerDropConfig, PruneConfig, ShareConfig, TrainConfig
from compress.errors import UserError
from compress.stages.distill import distill
from compress.stages.layerdrop import layerdrop
from compress.stages.prune import prune
from compress.stages.share import share
from compress.training.kd import kd_settings

ONE_EPOCH = TrainConfig(epochs=1, lr=1e-3, batch_size=16, max_length=32, seed=1, precision="fp32")
RECOVERY = TrainConfig(epochs=0.5, lr=1e-3, batch_size=16, max_length=32, seed=5, precision="fp32")


def test_each_setting_is_given_inherited_from_where_it_was_set_or_the_default():
    parent = {"name": "L3-pruned", "kd": {
        "temperature": {"value": 4.0, "from": "inherited", "variant": "L3-kd"},  # set two stages up
        "alpha": {"value": 0.7, "from": "given"},  # set at the parent itself
        "intermediate": {"value": "hidden", "from": "given"},
        "layer_map": {"value": [1, 3, 5], "from": "default"},
        "augment": {"value": 2, "from": "given"},
        "augment_seed": {"value": 9, "from": "default"},
    }}
    chosen, sources = kd_settings(KD(alpha=0.9), parent, seed=1)
    assert (chosen.temperature, chosen.alpha, chosen.intermediate, chosen.intermediate_epochs) == (4.0, 0.9, "hidden", 0.0)
    assert sources["temperature"] == {"from": "inherited", "variant": "L3-kd"}
    assert sources["alpha"] == {"from": "given"}
    assert sources["intermediate"] == {"from": "inherited", "variant": "L3-pruned"}
    assert sources["intermediate_epochs"] == {"from": "default"}
    assert chosen.layer_map == "" and sources["layer_map"] == {"from": "inherited", "variant": "L3-pruned"}  # on the layers
    assert (chosen.augment, chosen.augment_seed) == (2, 9)  # the same augmented rows as the parent's
    teacher_record = {"name": "tiny", "stage": "teacher"}
    fresh, sources = kd_settings(KD(augment=1), teacher_record, seed=7)
    assert (fresh.temperature, fresh.alpha, fresh.augment_seed) == (2.0, 0.5, 7)  # the run's seed
    assert sources["temperature"] == {"from": "default"}
    assert kd_settings(KD(), teacher_record, seed=7)[0].augment_seed is None  # no augmentation: no seed


def test_prune_inherits_the_students_kd_unless_a_flag_overrides(tiny_teacher, monkeypatch):
    teacher, task = tiny_teacher
    student = distill(teacher, task, DistillConfig(layers=2, intermediate="hidden", temperature=3.0, augment=1),
                      ONE_EPOCH, progress=False)
    assert student.meta["kd"]["temperature"] == {"value": 3.0, "from": "given"}
    assert student.meta["kd"]["alpha"] == {"value": 0.5, "from": "default"}
    made = []
    real = teacher_targets.augmented_rows
    monkeypatch.setattr(teacher_targets, "augmented_rows", lambda *a, **k: made.append(a[3:]) or real(*a, **k))
    pruned = prune(student, PruneConfig(heads=0.5, scope="per-layer", alpha=0.9), RECOVERY, name="pruned",
                   progress=False)  # per layer: the layers keep equal shapes, so they can share below
    kd = pruned.meta["kd"]
    assert kd["temperature"] == {"value": 3.0, "from": "inherited", "variant": student.path.name}
    assert kd["intermediate"] == {"value": "hidden", "from": "inherited", "variant": student.path.name}
    assert kd["alpha"] == {"value": 0.9, "from": "given"}
    assert kd["augment"]["value"] == 1 and kd["augment_seed"] == {"value": 1, "from": "inherited",
                                                                   "variant": student.path.name}
    assert pruned.meta["params"]["temperature"] == 3.0 and pruned.meta["params"]["alpha"] == 0.9
    # the recovery did train with them: the intermediate loss mapped each layer, on the augmented rows
    assert pruned.meta["layer_map"] == [0, 1] and pruned.meta["augmentation"]["seed"] == 1
    assert made == []  # the augmented rows distill made, read back from the teacher's cache
    assert len(list((teacher.path / "augmented").glob("*.json"))) == 1
    again = share(pruned, ShareConfig(groups=1, intermediate=""), RECOVERY, name="shared", progress=False)
    assert again.meta["kd"]["temperature"] == {"value": 3.0, "from": "inherited", "variant": student.path.name}
    assert again.meta["kd"]["intermediate"] == {"value": "", "from": "given"} and "layer_map" not in again.meta


def test_augmented_rows_and_their_soft_targets_are_made_once_per_task_n_and_seed(tiny_teacher, monkeypatch):
    teacher, task = tiny_teacher
    made = []
    real = teacher_targets.augmented_rows
    monkeypatch.setattr(teacher_targets, "augmented_rows", lambda *a, **k: made.append(a[3:]) or real(*a, **k))
    student = distill(teacher, task, DistillConfig(layers=1, augment=1), ONE_EPOCH, progress=False)
    targets = sorted((teacher.path / "soft_targets").glob("*.safetensors"))
    assert made == [(1, 1)] and len(targets) == 2  # the task's and the augmented set's
    stamps = [t.stat().st_mtime_ns for t in targets]
    prune(student, PruneConfig(neurons=0.25), RECOVERY, name="pruned", progress=False)
    assert made == [(1, 1)]  # inherited N and seed: nothing made again
    assert [t.stat().st_mtime_ns for t in sorted((teacher.path / "soft_targets").glob("*.safetensors"))] == stamps
    prune(student, PruneConfig(neurons=0.25, augment_seed=2), RECOVERY, name="other-rows", progress=False)
    assert made == [(1, 1), (1, 2)]  # another seed, other rows
    assert not list((teacher.path / "augmented").glob(".*"))  # no temporary file left behind
    cache = next((teacher.path / "augmented").glob("*seed2.json"))
    cache.write_text("{not json")
    with pytest.raises(UserError, match="augmented rows .* are corrupt"):
        prune(student, PruneConfig(neurons=0.25, augment_seed=2), RECOVERY, name="never", progress=False)


def test_a_given_layer_map_follows_the_layers_through_a_cut(tiny_teacher):
    teacher, task = tiny_teacher
    student = distill(teacher, task, DistillConfig(layers=2, intermediate="hidden", layer_map="1,0"), ONE_EPOCH,
                      progress=False)
    assert student.meta["kd"]["layer_map"] == {"value": [1, 0], "from": "given"}
    cut = prune(student, PruneConfig(layers="0,"), RECOVERY, name="cut", progress=False)
    assert cut.meta["layer_map"] == [0]  # the kept layer (1) learned from teacher layer 0, and still does
    assert cut.meta["kd"]["layer_map"] == {"value": [0], "from": "inherited", "variant": student.path.name}
    _, kept, baseline = layerdrop(student, LayerDropConfig(rate=0.5, keep="1,", layer_map="0,1"), RECOVERY,
                                  progress=False)
    assert baseline.meta["layer_map"] == [1]  # a given map names the variant's layers: layer 1's is teacher layer 1
    assert kept.meta["kd"]["layer_map"]["value"] == [1] and baseline.meta["kd"]["layer_map"]["from"] == "given"


def test_the_command_line_inherits_what_is_not_typed(run_cli, tiny_teacher):
    teacher, task = tiny_teacher
    student = distill(teacher, task, DistillConfig(layers=1, temperature=3.0), ONE_EPOCH, progress=False)
    code, _, err = run_cli("prune", student.path, "--neurons", "0.25", "--recover-epochs", "0", "--alpha", "0.8",
                           "--name", "cli-pruned")
    assert code == 0, err
    from compress.variant import Variant

    kd = Variant.load(student.path.parent / "cli-pruned").meta["kd"]
    assert kd["temperature"] == {"value": 3.0, "from": "inherited", "variant": student.path.name}
    assert kd["alpha"] == {"value": 0.8, "from": "given"}
    code, _, err = run_cli("prune", student.path, "--neurons", "0.25", "--layer-map", "0", "--name", "never")
    assert code == 2 and err.strip() == ("compress: error: --layer-map pairs layers for the intermediate losses: "
                                         "name them with --intermediate")
