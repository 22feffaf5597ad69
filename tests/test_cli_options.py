"""Every command-line option reaches its command as a typed field (commands/options.py)."""

from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from livepuppet.cli import COMMANDS, build_parser
from livepuppet.commands import options


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_is_a_field_of_its_options_class(name):
    parser = _subparsers()[name]
    options_class = getattr(options, COMMANDS[name][3])
    names = {f.name for f in fields(options_class)}
    dests = {a.dest for a in parser._actions if a.dest not in ("help", argparse.SUPPRESS)}
    assert dests - names == set(), f"{name}: options the parser has but {options_class.__name__} lacks"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_parser_defaults_fit_the_option_types(name):
    """The parser's defaults build the options class, and lists arrive as tuples (options stay frozen values)."""
    parser = _subparsers()[name]
    defaults = {a.dest: a.default for a in parser._actions if a.dest not in ("help", argparse.SUPPRESS)}
    built = getattr(options, COMMANDS[name][3]).from_namespace(argparse.Namespace(**defaults))
    assert all(not isinstance(getattr(built, f.name), list) for f in fields(built))


def test_a_parsed_command_line_arrives_typed():
    args = build_parser().parse_args(["run", "--source", "a.png", "--source", "b.png", "--camera", "clip.mp4", "--frames", "3",
                                      "--no-preview", "--engine", "tflite"])
    run = options.RunOptions.from_namespace(args)
    assert [str(p) for p in run.source] == ["a.png", "b.png"]
    assert run.frames == 3 and run.no_preview and run.engine == "tflite" and run.camera == "clip.mp4"
    with pytest.raises(Exception):
        run.frames = 4  # frozen: a command cannot change what it was asked
