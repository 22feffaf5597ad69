"""Reading a user's YAML file (``--config``, the model registry) with bounds, so a hostile one is one line.

PyYAML's composer recurses once per level of nesting, so ``[[[[...]]]]`` 10000 deep ends in a
RecursionError; aliases let a few lines stand for a structure of billions of nodes once walked. Here
the file must be a regular file of at most :data:`MAX_BYTES`, nesting stops at :data:`MAX_DEPTH` levels,
the document with its aliases expanded at :data:`MAX_NODES` values, and every failure of the parser
(numbers of more digits than Python converts included) becomes the caller's error with one line
saying where.
"""

from __future__ import annotations

import os
from typing import Any

import yaml

from livepuppet.errors import LivepuppetError
from livepuppet.files import read_bounded

MAX_BYTES = 256_000  # an FOMM config is 2 KB, a registry a few entries
MAX_DEPTH = 32  # an FOMM config nests 4 levels
MAX_NODES = 100_000  # values in the document with its aliases expanded (a config has about 40)


class _Loader(yaml.SafeLoader):
    """SafeLoader that counts, while composing and before anything is built, each node's size with its
    aliases expanded, and stops deep nesting, recursive aliases and documents that expand past MAX_NODES.
    (Aliases themselves are fine: PyYAML's own dump writes them for shared values.)"""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: Any, index: Any) -> Any:
        mark = self.peek_event().start_mark
        if self.check_event(yaml.AliasEvent):
            node = super().compose_node(parent, index)
            if id(node) not in self._sizes:
                raise yaml.composer.ComposerError(None, None, "an alias refers to a value that holds it", mark)
            return node
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        children = node.value if isinstance(node, yaml.SequenceNode) else \
            [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else []
        size = 1 + sum(self._sizes[id(child)] for child in children)
        if size > MAX_NODES:
            raise yaml.composer.ComposerError(None, None, f"its aliases expand to more than {MAX_NODES} values",
                                              mark)
        self._sizes[id(node)] = size
        return node


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
