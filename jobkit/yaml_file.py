"""A YAML settings file read safely: every way it can fail is a ConfigError naming the file and
the line, never a traceback from the decoder, the parser or the stack.

    read_yaml(Path("config/jobkit.yml"))  -> (data, node)

ERB that reads the environment (as in a copied `config/sidekiq.yml`) is read as ``${VAR}``
first (jobkit.erb). Refused: a file that cannot be read, is not UTF-8, holds other ERB, is not
YAML, or has ``!!python`` tags (the safe loader executes nothing); and, before anything is
built, nesting deeper than MAX_YAML_DEPTH, more than MAX_YAML_VALUES values once aliases are
expanded (a "billion laughs" bomb), or an alias inside the node it repeats (a recursive
structure). Plain anchors and aliases (``<<: *defaults``) are welcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from jobkit.erb import translate_erb
from jobkit.errors import ConfigError

__all__ = ["MAX_YAML_DEPTH", "MAX_YAML_VALUES", "read_yaml"]

MAX_YAML_DEPTH = 32  # levels of nesting; jobkit's deepest setting is 4 levels down
MAX_YAML_VALUES = 10_000  # scalars and collections, once aliases are expanded


def read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """The data of the file at `path` and its node tree (for line numbers); None for both when
    the file is empty."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 (byte {exc.start} is 0x{raw[exc.start]:02x})"
                          "; save the file as UTF-8") from None
    text = translate_erb(path, text)  # a copied sidekiq.yml reads the environment in ERB
    try:
        _check_shape(path, text)
        loader = yaml.SafeLoader(text)  # safe: no !!python tags, nothing executed
        try:
            node = loader.get_single_node()
            return (None if node is None else loader.construct_document(node)), node
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise _yaml_error(path, text, exc) from None


def _yaml_error(path: Path, text: str, exc: yaml.YAMLError) -> ConfigError:
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow
        line = text.count("\n", 0, exc.position) + 1
        character = exc.character
        shown = f"#x{character:04x}" if isinstance(character, int) else repr(character)
        return ConfigError(f"{path}:{line}: not valid YAML: character {shown} is not allowed")
    mark = getattr(exc, "problem_mark", None)
    line = f"{mark.line + 1}:" if mark else ""
    problem = getattr(exc, "problem", None) or exc
    return ConfigError(f"{path}:{line} not valid YAML: {problem}")


@dataclass
class _Open:
    """A collection `_check_shape` is inside of."""

    anchor: str | None
    start: int  # values counted before it
    mapping: bool
    levels: int = 1  # levels so far: itself and its deepest content
    key: str | None = None  # in a mapping: the last key seen
    keys_next: bool = True  # in a mapping: the next node is a key


def _check_shape(path: Path, text: str) -> None:
    """Refuse, from the parser's events (no recursion, nothing built), nesting deeper than
    MAX_YAML_DEPTH, more than MAX_YAML_VALUES values once aliases are expanded, and an alias
    inside the node it names. Stops at the first event past a limit."""
    stack: list[_Open] = []
    anchors: dict[str, tuple[int, int]] = {}  # anchor: (values, levels) an alias repeats
    count = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionEndEvent):
            done = stack.pop()
            if done.anchor:
                anchors[done.anchor] = (count - done.start, done.levels)
            if stack:
                stack[-1].levels = max(stack[-1].levels, done.levels + 1)
            continue
        if not isinstance(event, yaml.NodeEvent):
            continue
        _note_key(stack, event)
        values, levels = 1, 0
        if isinstance(event, yaml.AliasEvent):
            if any(o.anchor == event.anchor for o in stack):
                raise _shape_error(path, event, stack, f"alias *{event.anchor} is inside the "
                                                       f"node &{event.anchor} it repeats")
            values, levels = anchors.get(str(event.anchor), (1, 0))  # undefined: compose says
        elif isinstance(event, yaml.CollectionStartEvent):
            stack.append(_Open(event.anchor, count, isinstance(event, yaml.MappingStartEvent)))
        elif event.anchor:
            anchors[event.anchor] = (1, 0)
        count += values
        if stack and levels:
            stack[-1].levels = max(stack[-1].levels, levels + 1)
        if len(stack) + levels > MAX_YAML_DEPTH:
            raise _shape_error(path, event, stack, f"nested more than {MAX_YAML_DEPTH} levels "
                                                   "deep")
        if count > MAX_YAML_VALUES:
            raise _shape_error(path, event, stack, f"more than {MAX_YAML_VALUES} values once "
                                                   "aliases are expanded")


def _note_key(stack: list[_Open], event: yaml.NodeEvent) -> None:
    """In a mapping, nodes alternate key, value: remember the key (for the error's key path)."""
    if stack and stack[-1].mapping:
        inner = stack[-1]
        if inner.keys_next and isinstance(event, yaml.ScalarEvent):
            inner.key = str(event.value).lstrip(":")
        inner.keys_next = not inner.keys_next


def _shape_error(path: Path, event: yaml.Event, stack: list[_Open], problem: str
                 ) -> ConfigError:
    """``file:line: key.key: problem``, the keys being those of the mappings open there (the
    first three: the setting is among them)."""
    names = [o.key for o in stack if o.mapping and o.key is not None]
    keys = ".".join(names[:3]) + ("..." if len(names) > 3 else "")
    line = event.start_mark.line + 1 if event.start_mark else "?"
    return ConfigError(f"{path}:{line}: {keys + ': ' if keys else ''}{problem}")
