"""Templates judged as Jinja reads them: parse with ansible-core's own environment, walk the AST.

A playbook's strings are Jinja templates to ansible-core, evaluated on the *controller* (the
remed host) before anything reaches a target. A lookup there runs as remed's user, so a template
that reaches `lookup('pipe', ...)` is code execution on the ops host. Matching the text with
regular expressions misses every spelling the parser accepts and the pattern does not
(`lookup (`, `{% set f = lookup %}`, `[lookup][0](...)`, a template inside a string constant,
which ansible-core 2.19 renders too). So the rule is the parse tree:

- every string ansible-core would treat as a template (it contains `{{`, `{%` or `{#`, or starts
  with the `#jinja2:` override header) and every expression key (`when`, `failed_when`, ...) is
  parsed by ansible-core's `AnsibleEnvironment`, with and without its backslash escaping (it uses
  one for task arguments and the other for conditionals);
- what does not parse is refused: what the guard cannot read, it does not allow (fail closed);
- the tree is judged against allowlists, not denylists: known node types, known filters and
  tests, method calls only on a short list of string/dict methods, no call of any global. A
  filter or test nobody listed is refused, even when it is harmless, until someone lists it;
- string constants that are templates themselves are parsed and judged in turn.

`judge(text, expression=...)` returns findings; it never raises for any input.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ansible._internal._templating._jinja_bits import is_possibly_template
from jinja2 import nodes
from jinja2.parser import Parser


@dataclass(frozen=True)
class TemplateFinding:
    """One reason to refuse a template: a rule id and what in the template triggered it."""

    rule: str
    detail: str


# Names Ansible (and Jinja) bind to callables or to other hosts' data. A reference is refused,
# not only a call: `{% set f = lookup %}{{ f('pipe', 'id') }}` calls it through an alias.
CONTROLLER_LOOKUPS = frozenset({"lookup", "query", "q"})
OTHER_HOSTS_DATA = frozenset({"hostvars", "vars", "play_hosts", "groups", "ansible_play_hosts_all"})
JINJA_GLOBALS = frozenset(
    {
        "range", "dict", "lipsum", "cycler", "joiner", "namespace", "now", "undef", "self",
        "varargs", "kwargs", "caller", "environment", "context", "loader",
    }
)  # fmt: skip

# Attributes that lead out of the sandbox or into the engine's internals. Anything starting with
# an underscore is refused as well (Jinja's getitem falls back to getattr, so `x['__class__']`
# is the same access as `x.__class__`).
UNSAFE_ATTRIBUTES = frozenset(
    {
        "mro", "format", "format_map", "gi_frame", "gi_code", "cr_frame", "cr_code", "ag_frame",
        "ag_code", "f_globals", "f_locals", "f_back", "f_builtins", "tb_frame", "tb_next",
        "func_globals", "func_code", "co_code", "im_class", "im_func", "im_self", "globals",
        "environment", "filters", "tests", "loader", "shared", "module", "undefined",
    }
)  # fmt: skip

# Methods a template may call: pure functions of strings, lists and dicts.
SAFE_METHODS = frozenset(
    {
        "split", "rsplit", "splitlines", "strip", "lstrip", "rstrip", "lower", "upper", "title",
        "capitalize", "replace", "startswith", "endswith", "join", "count", "find", "rfind",
        "isdigit", "isalpha", "isalnum", "keys", "values", "items", "get", "index",
    }
)  # fmt: skip

# Filters that only transform values (Jinja's and ansible.builtin's). Everything else is refused.
SAFE_FILTERS = frozenset(
    {
        "abs", "batch", "bool", "capitalize", "center", "checksum", "combine", "comment", "count",
        "d", "default", "dict2items", "dictsort", "difference", "dirname", "basename", "e",
        "escape", "first", "flatten", "float", "forceescape", "groupby", "hash", "human_readable",
        "human_to_bytes", "indent", "int", "intersect", "items", "items2dict", "join", "last",
        "length", "list", "lower", "map", "mandatory", "max", "md5", "min", "password_hash",
        "path_join", "pprint", "product", "quote", "random", "regex_escape", "regex_findall",
        "regex_replace", "regex_search", "reject", "rejectattr", "replace", "reverse", "round",
        "select", "selectattr", "sha1", "shuffle", "slice", "sort", "split", "splitext",
        "string", "striptags", "subelements", "sum", "symmetric_difference", "ternary", "title",
        "to_json", "to_nice_json", "to_nice_yaml", "to_uuid", "to_yaml", "tojson", "trim",
        "truncate", "type_debug", "union", "unique", "upper", "urldecode", "urlencode",
        "urlsplit", "wordcount", "wordwrap", "xmlattr", "zip", "zip_longest", "from_json",
        "b64encode", "format", "filesizeformat", "safe", "relpath", "strftime",
        "to_datetime",
    }
)  # fmt: skip
SAFE_TESTS = frozenset(
    {
        "defined", "undefined", "none", "string", "number", "integer", "float", "boolean",
        "mapping", "sequence", "iterable", "true", "false", "eq", "equalto",
        "==", "ne", "!=", "lt", "<", "le", "<=", "gt", ">", "ge", ">=", "in", "sameas", "odd",
        "even", "divisibleby", "lower", "upper", "match", "search", "regex", "contains", "any",
        "all", "version", "version_compare", "success", "succeeded", "failed", "failure",
        "changed", "change", "skipped", "skip", "finished", "started", "subset", "superset",
        "abs", "truthy", "falsy", "unreachable", "reachable", "escaped", "nan", "vault_encrypted",
    }
)  # fmt: skip
# Filters and tests with a rule of their own (a sharper message than "not on the allowlist").
DECODING = frozenset({"b64decode", "unvault", "vault", "from_yaml_all", "from_yaml"})
CONTROLLER_FILES = frozenset(
    {"fileglob", "realpath", "expanduser", "expandvars", "exists", "file", "directory", "link",
     "mount", "same_file", "is_file", "is_dir", "is_link", "is_mount", "is_same_file"}
)  # fmt: skip
# Filters/tests whose arguments name other filters/tests or attributes by string.
NAMES_A_FILTER = frozenset({"map"})
NAMES_A_TEST = frozenset({"select", "reject"})
NAMES_AN_ATTRIBUTE = frozenset({"selectattr", "rejectattr", "groupby", "sum", "sort", "unique",
                                "min", "max", "map", "dictsort"})  # fmt: skip

SAFE_EXPRESSIONS = (
    nodes.Const, nodes.TemplateData, nodes.Name, nodes.Getattr, nodes.Getitem, nodes.Slice,
    nodes.Call, nodes.Filter, nodes.Test, nodes.CondExpr, nodes.And, nodes.Or, nodes.Not,
    nodes.Neg, nodes.Pos, nodes.Compare, nodes.Operand, nodes.Concat, nodes.Add, nodes.Sub,
    nodes.Mul, nodes.Div, nodes.FloorDiv, nodes.Mod, nodes.Pow, nodes.List, nodes.Tuple,
    nodes.Dict, nodes.Pair, nodes.Keyword,
)  # fmt: skip
SAFE_STATEMENTS = (
    nodes.Template, nodes.Output, nodes.If, nodes.For, nodes.Assign, nodes.AssignBlock,
    nodes.Continue, nodes.Break,
)  # fmt: skip
INCLUDES = (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)

OVERRIDE_HEADER = "#jinja2:"
_DUNDER = re.compile(r"__\w+__")
MAX_NESTED_TEMPLATES = 4
MAX_REPEAT = 100_000
MAX_EXPONENT = 64


def is_template(text: str) -> bool:
    """Whether ansible-core would template `text` (a start string, or the override header):
    its own `is_possibly_template`, so the guard and the run agree on what is a template."""
    return bool(is_possibly_template(text))


def judge(text: str, *, expression: bool) -> list[TemplateFinding]:
    """Every reason to refuse `text`; empty when it is not a template or is a harmless one."""
    try:
        return _judge(text, expression=expression, depth=0)
    except RecursionError:
        return [TemplateFinding("jinja.resource", "template nested too deeply to read")]


def _judge(text: str, *, expression: bool, depth: int) -> list[TemplateFinding]:
    if depth > MAX_NESTED_TEMPLATES:
        return [TemplateFinding("jinja.resource", "templates nested inside templates too deeply")]
    if text.startswith(OVERRIDE_HEADER) or f"\n{OVERRIDE_HEADER}" in text:
        # The header changes the delimiters ansible-core reads (`[[ lookup(...) ]]`), so no
        # reading with the default ones can be trusted.
        return [TemplateFinding("jinja.override", "a #jinja2: header redefines the delimiters")]
    templated = is_template(text)
    if expression and _all_template(text):
        # ansible-core renders a conditional that is wholly a template and then evaluates the
        # *result* as the expression (`when: "{{ c }}"` with `c: "lookup('pipe', 'id')"`): the
        # expression that runs is not in the playbook, so it cannot be judged.
        why = "a conditional whose expression a template renders"
        return [TemplateFinding("jinja.indirect", why)]
    if not templated and not expression:
        return _as_value(text, depth)
    # A conditional is parsed as an expression without backslash escaping, a template with it;
    # both readings must parse, or ansible-core may read it some way we did not.
    as_expression = expression
    trees: list[nodes.Node] = []
    for escape in (True, False):
        try:
            trees.append(_parse(text, as_expression=as_expression, escape=escape))
        except Exception as exc:  # jinja2.TemplateSyntaxError, and anything else it raises
            shape = "expression" if as_expression else "template"
            detail = f"cannot read as a Jinja {shape}: {type(exc).__name__}: {exc}"
            return [TemplateFinding("jinja.unparseable", detail[:200])]
    out: list[TemplateFinding] = []
    for tree in trees:
        for finding in _Walker(depth).walk(tree):
            if finding not in out:
                out.append(finding)
    return out


def _all_template(text: str) -> bool:
    """ansible-core's `is_possibly_all_template`, on the stripped text (stricter)."""
    t = text.strip()
    return t.startswith(("{{", "{%", "{#")) and t.endswith(("}}", "%}", "#}"))


_VALUE_RULES = frozenset({"controller.lookup", "jinja.sandbox", "jinja.override"})


def _as_value(text: str, depth: int) -> list[TemplateFinding]:
    """A plain string that would run a lookup if a conditional ever used it as its expression.

    ansible-core 2.19 does not evaluate a variable's string value as an expression, but older
    releases did (`when: c` with `c: "lookup(...)"`), and a value like that has no business in a
    remediation anyway. Only strings that parse as an expression are judged, and only for the
    rules that matter here: most plain strings (task names, paths) are no expression at all.
    """
    if not any(name in text for name in CONTROLLER_LOOKUPS | {"__"}):
        return []
    try:
        tree = _parse(text, as_expression=True, escape=False)
    except Exception:
        return []
    return [f for f in _Walker(depth).walk(tree) if f.rule in _VALUE_RULES]


def _parse(text: str, *, as_expression: bool, escape: bool) -> nodes.Node:
    env, compile_context = _environment()
    with compile_context(escape_backslashes=escape):
        if not as_expression:
            return env.parse(text)
        parser = Parser(env, text, state="variable")
        expr = parser.parse_expression()
        if not parser.stream.eos:
            raise ValueError(f"unexpected {parser.stream.current.value!r} after the expression")
        return expr


_ENV: tuple[Any, Any] | None = None


def _environment() -> tuple[Any, Any]:
    """ansible-core's own Jinja environment (same extensions, lexer and globals as a run)."""
    global _ENV
    if _ENV is None:
        from ansible._internal._templating._jinja_bits import (
            AnsibleEnvironment,
            _TemplateCompileContext,
        )

        _ENV = (AnsibleEnvironment(), _TemplateCompileContext)
    return _ENV


def _short(name: str) -> str:
    for prefix in ("ansible.builtin.", "ansible.legacy."):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def _unsafe_attribute(name: str) -> bool:
    return name.startswith("_") or name in UNSAFE_ATTRIBUTES


class _Walker:
    """Walks one parse tree; yields a finding for each node outside the allowlists."""

    def __init__(self, depth: int) -> None:
        self.depth = depth

    def walk(self, node: nodes.Node) -> Iterator[TemplateFinding]:
        yield from self._node(node)
        for child in node.iter_child_nodes():
            yield from self.walk(child)

    def _node(self, node: nodes.Node) -> Iterator[TemplateFinding]:
        if isinstance(node, INCLUDES):
            yield TemplateFinding("controller.include", "template includes controller files")
        elif not isinstance(node, SAFE_STATEMENTS + SAFE_EXPRESSIONS):
            yield TemplateFinding("jinja.statement", f"{type(node).__name__} is not allowed")
        elif isinstance(node, nodes.Name):
            yield from self._name(node.name)
        elif isinstance(node, nodes.Getattr):
            if _unsafe_attribute(node.attr):
                yield TemplateFinding("jinja.sandbox", f"attribute {node.attr!r}")
        elif isinstance(node, nodes.Getitem):
            yield from self._getitem(node)
        elif isinstance(node, nodes.Call):
            yield from self._call(node)
        elif isinstance(node, nodes.Filter | nodes.Test):
            yield from self._filter(node)
        elif isinstance(node, nodes.Const):
            yield from self._const(node.value)
        elif isinstance(node, nodes.Pow):
            if not (isinstance(node.right, nodes.Const) and _small(node.right.value, MAX_EXPONENT)):
                yield TemplateFinding("jinja.resource", "a power without a small literal exponent")
        elif isinstance(node, nodes.Mul):
            for side in (node.left, node.right):
                if isinstance(side, nodes.Const) and not _small(side.value, MAX_REPEAT):
                    yield TemplateFinding("jinja.resource", "a multiplication that exhausts memory")

    def _name(self, name: str) -> Iterator[TemplateFinding]:
        if name in CONTROLLER_LOOKUPS:
            yield TemplateFinding("controller.lookup", f"{name!r}: a lookup runs on the controller")
        elif name in OTHER_HOSTS_DATA:
            yield TemplateFinding("jinja.hostvars", f"{name!r} reads other hosts' variables")
        elif name in JINJA_GLOBALS:
            yield TemplateFinding("jinja.callable", f"{name!r} is a callable the engine exposes")
        elif name.startswith("__"):
            yield TemplateFinding("jinja.sandbox", f"name {name!r}")

    def _getitem(self, node: nodes.Getitem) -> Iterator[TemplateFinding]:
        key = node.arg
        if isinstance(key, nodes.Const):
            if isinstance(key.value, str) and _unsafe_attribute(key.value):
                yield TemplateFinding("jinja.sandbox", f"subscript {key.value!r}")
        elif not _variable_or_number(key):
            # Jinja's getitem falls back to getattr for strings: a key computed at run time
            # (`x['__cl' ~ 'ass__']`) could name any attribute.
            yield TemplateFinding("jinja.dynamic", "a subscript computed from strings or calls")

    def _call(self, node: nodes.Call) -> Iterator[TemplateFinding]:
        if node.dyn_args is not None or node.dyn_kwargs is not None:
            yield TemplateFinding("jinja.dynamic", "a call with *args or **kwargs")
        func = node.node
        if isinstance(func, nodes.Name):
            if func.name not in CONTROLLER_LOOKUPS | OTHER_HOSTS_DATA | JINJA_GLOBALS:
                yield TemplateFinding("jinja.callable", f"calls {func.name!r}")
            # the Name itself is judged when the walk reaches it
        elif isinstance(func, nodes.Getattr):
            if func.attr not in SAFE_METHODS and not _unsafe_attribute(func.attr):
                yield TemplateFinding("jinja.callable", f"calls method {func.attr!r}")
        else:
            yield TemplateFinding("jinja.callable", "calls the result of an expression")

    def _filter(self, node: nodes.Filter | nodes.Test) -> Iterator[TemplateFinding]:
        kind = "filter" if isinstance(node, nodes.Filter) else "test"
        if node.name is None:  # `{% filter %}` blocks carry a Filter with no name
            yield TemplateFinding("jinja.statement", "filter block")
            return
        yield from self._named(node.name, kind)
        if node.dyn_args is not None or node.dyn_kwargs is not None:
            yield TemplateFinding("jinja.dynamic", f"{kind} {node.name!r} with *args or **kwargs")
        short = _short(node.name)
        positional = list(node.args)
        if (
            kind == "filter"
            and short in NAMES_A_FILTER
            and positional
            and not any(k.key == "attribute" for k in node.kwargs)
        ):
            yield from self._string_argument(positional[0], "filter")
            positional = positional[1:]
        elif kind == "filter" and short in NAMES_A_TEST and positional:
            yield from self._string_argument(positional[0], "test")
        elif kind == "filter" and short in ("selectattr", "rejectattr") and positional:
            yield from self._attribute_argument(positional[0])
            if len(positional) > 1:
                yield from self._string_argument(positional[1], "test")
        elif kind == "filter" and short == "groupby" and positional:
            yield from self._attribute_argument(positional[0])
        if kind == "filter" and short in NAMES_AN_ATTRIBUTE:
            for keyword in node.kwargs:
                if keyword.key == "attribute":
                    yield from self._attribute_argument(keyword.value)

    def _named(self, name: str, kind: str) -> Iterator[TemplateFinding]:
        short = _short(name)
        if "." in short:
            yield TemplateFinding("jinja.filter", f"{kind} {name!r} comes from a collection")
        elif short in DECODING:
            yield TemplateFinding("obfuscation.decode", f"{kind} {name!r} decodes hidden content")
        elif short in CONTROLLER_FILES:
            yield TemplateFinding("controller.file", f"{kind} {name!r} reads controller files")
        elif short == "attr":
            yield TemplateFinding("jinja.sandbox", "the attr filter reaches any attribute")
        elif short not in (SAFE_FILTERS if kind == "filter" else SAFE_TESTS):
            yield TemplateFinding("jinja.filter", f"{kind} {name!r} is not on the allowlist")

    def _string_argument(self, arg: nodes.Node, kind: str) -> Iterator[TemplateFinding]:
        if isinstance(arg, nodes.Const) and isinstance(arg.value, str):
            yield from self._named(arg.value, kind)
        else:
            yield TemplateFinding("jinja.dynamic", f"the {kind} name is computed at run time")

    def _attribute_argument(self, arg: nodes.Node) -> Iterator[TemplateFinding]:
        if isinstance(arg, nodes.Const) and isinstance(arg.value, str | int):
            for part in str(arg.value).split("."):
                if _unsafe_attribute(part):
                    yield TemplateFinding("jinja.sandbox", f"attribute path {arg.value!r}")
        else:
            yield TemplateFinding("jinja.dynamic", "an attribute path computed at run time")

    def _const(self, value: object) -> Iterator[TemplateFinding]:
        if isinstance(value, str):
            if _DUNDER.search(value):
                yield TemplateFinding("jinja.sandbox", f"string {value[:40]!r} names an internal")
            if is_template(value):
                # ansible-core 2.19 renders a constant that is itself a template.
                yield from _judge(value, expression=False, depth=self.depth + 1)
        elif isinstance(value, tuple | list):
            for item in value:
                yield from self._const(item)


def _small(value: object, limit: int) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and abs(value) <= limit


def _variable_or_number(node: nodes.Node) -> bool:
    """A subscript key that can only be a variable's value or arithmetic on ints."""
    if isinstance(node, nodes.Name | nodes.Getattr):
        return True
    if isinstance(node, nodes.Getitem):
        return _variable_or_number(node.node) and (
            isinstance(node.arg, nodes.Const) or _variable_or_number(node.arg)
        )
    if isinstance(node, nodes.Const):
        return isinstance(node.value, int)
    if isinstance(node, nodes.Add | nodes.Sub | nodes.Mul | nodes.Mod | nodes.FloorDiv):
        return _variable_or_number(node.left) and _variable_or_number(node.right)
    if isinstance(node, nodes.Neg | nodes.Pos):
        return _variable_or_number(node.node)
    return False
