"""docs/cli.md's flag tables are the command line's own: generated, and refused when stale."""

from compress import docs


def test_the_flag_tables_of_docs_cli_md_are_generated_from_the_cli():
    page = docs.PAGE.read_text(encoding="utf-8")
    assert docs.rendered(page) == page, "docs/cli.md's flag tables are stale: run python -m compress.docs"


def test_every_verb_and_every_flag_is_in_the_tables():
    import click

    from compress.cli import cli

    tables = docs.flag_tables()
    for verb, command in cli.commands.items():
        assert f"### compress {verb}\n" in tables
        for param in (p for p in command.params if isinstance(p, click.Option) and not p.hidden):
            assert all(f"`{opt}" in tables or f", {opt}" in tables for opt in param.opts), (verb, param.opts)


def test_a_stale_page_is_refused_and_rewritten(tmp_path, monkeypatch):
    stale = tmp_path / "cli.md"
    stale.write_text(f"prose\n{docs.START}\n| `--gone` |\n{docs.END}\nmore prose\n", encoding="utf-8")
    monkeypatch.setattr(docs, "PAGE", stale)
    assert docs.main(["--check"]) == 1 and "--gone" in stale.read_text()
    assert docs.main([]) == 0
    assert docs.main(["--check"]) == 0
    text = stale.read_text()
    assert text.startswith("prose\n") and text.endswith("more prose\n") and "--gone" not in text
