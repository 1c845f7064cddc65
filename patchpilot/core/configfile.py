"""Reading YAML configuration files with errors that name the file.

Settings and policy files are read safely (``yaml.SafeLoader``) and strictly: a key written
twice in one mapping is refused, naming the file, the dotted key and both lines, because YAML
would silently keep the last value (``ssh: {trust_on_first_use: false}`` further down a file
can undo a reviewed setting). YAML merge keys (``<<: *defaults``) still work: a key that
overrides a merged one is not a duplicate. Alias expansion is bounded, so a "billion laughs"
document cannot exhaust memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import yaml

from patchpilot.core.errors import ConfigError

__all__ = ["MAX_NODES", "parse_yaml_mapping", "read_yaml_mapping"]

MAX_NODES: Final = 100_000
"""Upper bound on YAML nodes visited (an alias counts each time it is referenced)."""

_MERGE_TAG: Final = "tag:yaml.org,2002:merge"


def _key_text(node: yaml.Node) -> str | None:
    return str(node.value) if isinstance(node, yaml.ScalarNode) else None


def _check_node(node: yaml.Node, path: str, file: str, budget: list[int]) -> None:
    """Refuse duplicate keys in every mapping under ``node`` (before anything is constructed)."""
    budget[0] -= 1
    if budget[0] < 0:
        raise ConfigError(
            f"document too large or too many alias expansions (over {MAX_NODES} nodes)", file=file
        )
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _check_node(item, f"{path}[{index}]", file, budget)
    elif isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = _key_text(key_node)
            child = f"{path}.{key}" if path and key is not None else (key or path)
            if key is not None and key_node.tag != _MERGE_TAG:
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise ConfigError(
                        f"duplicate key {key!r} at line {line} (first at line {seen[key]}); "
                        "YAML would silently keep the last one: remove one of them",
                        file=file,
                        key=child,
                    )
                seen[key] = line
            _check_node(value_node, child, file, budget)


def parse_yaml_mapping(text: str, *, file: str) -> dict[str, Any]:
    """Parse a YAML document whose top level must be a mapping (see the module docstring).

    Args:
        text: the document.
        file: the file name, for error messages.

    Raises:
        ConfigError: not YAML, a duplicate key, too large, or not a mapping.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return {}
        _check_node(node, "", file, [MAX_NODES])
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", file=file) from exc
    except RecursionError as exc:
        raise ConfigError("YAML document nested too deeply", file=file) from exc
    finally:
        loader.dispose()
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping at the top level", file=file)
    return data


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Read a YAML file whose top level must be a mapping.

    Raises:
        ConfigError: the file is missing, unreadable, not UTF-8, not YAML, has a duplicate key
            or is not a mapping.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError("file does not exist", file=str(path)) from exc
    except IsADirectoryError as exc:
        raise ConfigError("is a directory, not a file", file=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text: {exc.reason}", file=str(path)) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=str(path)) from exc
    return parse_yaml_mapping(text, file=str(path))
