"""Strict playbook YAML: one document, no aliases, anchors, merge keys, duplicate keys or tags."""

from __future__ import annotations

from typing import Any

import yaml

from remed_daemon.guard.verdict import DEFAULT, GuardPolicy

# --- YAML -----------------------------------------------------------------------------------


class YamlRefused(Exception):
    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(detail)
        self.rule = rule


class StrictLoader(yaml.SafeLoader):
    """SafeLoader without aliases, anchors, merge keys or duplicate keys, and with a depth cap."""

    max_depth = 40

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise YamlRefused("yaml.alias", "YAML aliases are refused (billion laughs, hiding)")
        event = self.peek_event()
        if getattr(event, "anchor", None) is not None:
            raise YamlRefused("yaml.alias", "YAML anchors are refused")
        self._depth += 1
        if self._depth > self.max_depth:
            raise YamlRefused("yaml.too_deep", f"nesting deeper than {self.max_depth}")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise YamlRefused("yaml.merge_key", "YAML merge keys (<<) are refused")
                key = self.construct_object(key_node, deep=True)
                try:
                    if key in seen:
                        raise YamlRefused("yaml.duplicate_key", f"duplicate key {key!r}")
                    seen.add(key)
                except TypeError:
                    raise YamlRefused("yaml.invalid", "unhashable mapping key") from None
        return super().construct_mapping(node, deep=deep)


def load_playbook(text: str, policy: GuardPolicy = DEFAULT) -> Any:
    """Strictly parse playbook YAML; raises YamlRefused with a rule id."""
    if len(text.encode("utf-8", "surrogatepass")) > policy.max_bytes:
        raise YamlRefused("yaml.too_large", f"playbook larger than {policy.max_bytes} bytes")
    try:
        # The reader checks the characters as it is built: a control character raises here.
        loader = StrictLoader(text)
    except yaml.YAMLError as exc:
        raise YamlRefused("yaml.invalid", str(exc).strip().splitlines()[0][:200]) from None
    loader.max_depth = policy.max_depth
    try:
        return loader.get_single_data()
    except YamlRefused:
        raise
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid YAML"
        raise YamlRefused("yaml.invalid", first[:200]) from None
    finally:
        loader.dispose()


