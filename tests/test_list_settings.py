"""List-valued settings (layer ids, shapes, fractions, loss weights) are read by one typed parser:
each refuses bad text with the same kind of line, when its config is built, and a recipe may give
one as a TOML array."""

from dataclasses import fields

import pytest

from compress import configs
from compress.configs import BenchConfig, DistillConfig, PruneConfig, SearchConfig, parse_list
from compress.errors import UserError

from conftest import write_recipe

LISTED = [(cls, f) for cls in (DistillConfig, PruneConfig, BenchConfig, SearchConfig) for f in fields(cls)
          if f.metadata.get("items")]
REQUIRED = {SearchConfig: {"budget_ms": 5.0}}


def test_every_list_valued_setting_is_declared_with_its_item_type():
    names = {(cls.__name__, f.name) for cls, f in LISTED}
    assert {("DistillConfig", "intermediate"), ("DistillConfig", "layer_map"), ("PruneConfig", "layers"),
            ("BenchConfig", "shapes"), ("SearchConfig", "shape"), ("SearchConfig", "depths"),
            ("SearchConfig", "heads"), ("SearchConfig", "ffn"), ("SearchConfig", "precisions")} <= names


@pytest.mark.parametrize("cls, f", [pair for pair in LISTED if pair[1].metadata["items"] is not str],
                         ids=lambda x: getattr(x, "name", getattr(x, "__name__", "")))
def test_bad_text_is_refused_when_the_config_is_built_naming_the_flag(cls, f):
    with pytest.raises(UserError) as error:
        cls(**REQUIRED.get(cls, {}), **{f.name: "1,x=y=z"})
    message = str(error.value)
    assert message.startswith(configs.flag_of(f) + " takes ") and "'1,x=y=z'" in message


@pytest.mark.parametrize("text, item, expected", [
    ("1,3", int, [1, 3]), (" 2 , 4 ,", int, [2, 4]), ("1,0.5", float, [1.0, 0.5]), ("", int, []),
    ("1x128,32X64", configs.SHAPE, [(1, 128), (32, 64)]),
    ("hidden,attention=0.5", configs.WEIGHTED, [("hidden", 1.0), ("attention", 0.5)]),
])
def test_parse_list_reads_each_part_with_its_type(text, item, expected):
    assert parse_list(text, "--x", item) == expected


@pytest.mark.parametrize("text, item, message", [
    ("1,a", int, "--x takes integers like 1,3, not '1,a'"),
    ("1x", configs.SHAPE, "--x takes BATCHxSEQUENCE pairs like 1x128,32x128, not '1x'"),
    ("1x2x3", configs.SHAPE, "--x takes BATCHxSEQUENCE pairs"),
    ("hidden=", configs.WEIGHTED, "--x takes names with optional weights"),
    ("hidden=much", configs.WEIGHTED, "--x takes names with optional weights"),
])
def test_parse_list_refuses_with_the_form_it_expects(text, item, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        parse_list(text, "--x", item)


def test_a_recipe_gives_a_list_setting_as_a_toml_array_or_as_its_flag_text(run_cli, tmp_path, tiny_base,
                                                                           learnable_csv):
    recipe = write_recipe(tmp_path / "recipe.toml", tiny_base, learnable_csv, shapes="1x16,2x8")
    as_text = run_cli("--workspace", tmp_path / "ws", "run", recipe, "--dry-run")
    recipe.write_text(recipe.read_text().replace('shapes = "1x16,2x8"', 'shapes = ["1x16", "2x8"]'))
    as_array = run_cli("--workspace", tmp_path / "ws", "run", recipe, "--dry-run")
    assert as_text[0] == 0 and as_array == as_text
    recipe.write_text(recipe.read_text().replace('shapes = ["1x16", "2x8"]', 'shapes = ["1x16", "2y8"]'))
    code, out, err = run_cli("--workspace", tmp_path / "ws", "run", recipe, "--dry-run")
    assert code == 2 and "takes BATCHxSEQUENCE pairs like 1x128,32x128, not '1x16,2y8'" in err
