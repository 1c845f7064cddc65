"""YAML reading for inventories: safe loading, duplicate keys, Ansible's ``!vault``/``!unsafe``.

Duplicate mapping keys are an error in patchpilot's own format (a host written twice is a
mistake) and a warning in Ansible inventories, where Ansible itself only warns and keeps the last
value. Alias expansion is bounded so that a "billion laughs" document cannot blow up the
processing that follows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
import yaml

from patchpilot.core.errors import ConfigError

__all__ = ["Vaulted", "load_yaml"]

_log = structlog.get_logger(__name__)

#: Upper bound on YAML nodes visited (aliases counted each time they are referenced).
MAX_NODES = 200_000


@dataclass(frozen=True, slots=True)
class Vaulted:
    """An Ansible Vault-encrypted value (``!vault``); patchpilot cannot and does not decrypt it."""

    ciphertext: str


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also understands Ansible's ``!vault`` and ``!unsafe`` tags."""


def _construct_vault(loader: yaml.SafeLoader, node: yaml.Node) -> Vaulted:
    return Vaulted(str(loader.construct_scalar(node)))  # type: ignore[arg-type]


def _construct_unsafe(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]


_Loader.add_constructor("!vault", _construct_vault)
_Loader.add_constructor("!unsafe", _construct_unsafe)


def _key_text(node: yaml.Node) -> str | None:
    return str(node.value) if isinstance(node, yaml.ScalarNode) else None


def _check_node(node: yaml.Node, path: str, file: str, strict: bool, budget: list[int]) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise ConfigError(
            f"document too large or too many alias expansions (over {MAX_NODES} nodes)", file=file
        )
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _check_node(item, f"{path}[{index}]", file, strict, budget)
    elif isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = _key_text(key_node)
            child = f"{path}.{key}" if path and key is not None else (key or path)
            if key is not None and key != "<<":
                line = key_node.start_mark.line + 1
                if key in seen:
                    reason = f"duplicate key {key!r} at line {line} (first at line {seen[key]})"
                    if strict:
                        raise ConfigError(reason, file=file, key=child)
                    _log.warning(
                        "inventory.duplicate_key",
                        file=file,
                        key=child,
                        reason=reason + "; last wins",
                    )
                seen.setdefault(key, line)
            _check_node(value_node, child, file, strict, budget)


def load_yaml(text: str, *, file: str, strict_keys: bool) -> Any:
    """Parse one YAML document safely.

    Args:
        text: the document.
        file: the file name, for error messages.
        strict_keys: refuse duplicate mapping keys (else log a warning; the last one wins).

    Returns:
        The constructed data (``None`` for an empty document).

    Raises:
        ConfigError: on YAML syntax errors, unknown tags, duplicate keys (when strict), or a
            document too large or too deeply nested.
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_node(node, "", file, strict_keys, [MAX_NODES])
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"invalid YAML{where}: {problem}", file=file) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=file) from exc
    except RecursionError as exc:
        raise ConfigError("YAML document nested too deeply", file=file) from exc
    finally:
        loader.dispose()
