"""Reading a user's YAML file (``--config``, the model registry) with bounds, so a hostile one is one line.

PyYAML's composer recurses once per level of nesting, so ``[[[[...]]]]`` 10000 deep ends in a
RecursionError; aliases let a few lines stand for a structure of billions of nodes once walked. Here
the file must be a regular file of at most :data:`MAX_BYTES`, nesting stops at :data:`MAX_DEPTH` levels,
aliases are refused, and every failure of the parser (numbers of more digits than Python converts
included) becomes the caller's error with one line saying where.
"""

from __future__ import annotations

import os
from typing import Any

import yaml

from livepuppet.errors import LivepuppetError
from livepuppet.files import read_bounded

MAX_BYTES = 256_000  # an FOMM config is 2 KB, a registry a few entries
MAX_DEPTH = 32  # an FOMM config nests 4 levels


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses aliases and deep nesting while composing, before anything is built."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not accepted here",
                                              self.peek_event().start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load(path: str | os.PathLike[str], what: str, error: type[LivepuppetError]) -> Any:
    """The YAML document in ``path``; ``error`` with one line for a file that is not bounded, UTF-8, valid
    YAML. A missing or unreadable file raises the OSError as is, for the caller's own wording."""
    data = read_bounded(path, MAX_BYTES, what, error)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{what} {path} is not UTF-8 text; save it as a plain YAML file") from None
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise error(f"{what} {path} is not valid YAML: {reason(exc)}") from None
    finally:
        loader.dispose()


def reason(exc: BaseException) -> str:
    """Where and what, in a few words: 'line 3, column 5: found unhashable key'."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc) or type(exc).__name__
    problem = " ".join(str(problem).split())
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return problem
