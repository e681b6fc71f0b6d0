"""Templates as Jinja reads them: a grammar-aware fuzzer of lookup spellings, and the rule tables.

The fuzzer builds Jinja that reaches `lookup`/`query`/`q` the ways the parser allows (aliases
through `set` and `for`, subscripts of lists and dicts, parentheses, filter chains, attribute
chains, whitespace control, comments, line breaks, templates inside string constants) and puts
it where ansible-core templates it (module arguments, `when`, `vars`, `loop`, `failed_when`,
play keys, argument keys). Every example must be refused, for a template rule, and never by
`guard.internal`. `REMED_FUZZ_EXAMPLES` sets the number of examples (default 10,000, the figure
the issue asks for; a run takes well under a minute).
"""

from __future__ import annotations

import os

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remed_daemon.guard import check_playbook
from remed_daemon.guard import templates as guard_templates

pytestmark = pytest.mark.unit

EXAMPLES = int(os.environ.get("REMED_FUZZ_EXAMPLES", "10000"))
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False
)
TEMPLATE_RULES = {
    "controller.lookup", "jinja.callable", "jinja.sandbox", "jinja.dynamic", "jinja.filter",
    "jinja.unparseable", "jinja.override", "jinja.statement", "obfuscation.decode",
    "jinja.indirect",
}  # fmt: skip

# --- the grammar ------------------------------------------------------------------------------

space = st.sampled_from(["", " ", "  ", "\t", "\n", " \n  ", "{#c#}"])
callee_name = st.sampled_from(["lookup", "query", "q"])
plugin = st.sampled_from(["'pipe'", '"pipe"', "'file'", "'env'", "'template'", "'fileglob'"])
argument = st.sampled_from(["'id'", '"id"', "'/etc/shadow'", "'HOME'", "x", "'i' ~ 'd'"])


@st.composite
def reference(draw: st.DrawFn) -> str:
    """An expression whose value is the lookup function itself, however it is spelled."""
    name = draw(callee_name)
    shapes = [
        name,
        f"({name})",
        f"[{name}][0]",
        f"[1, {name}][-1]",
        f"{{'k': {name}}}['k']",
        f"{{'k': {name}}}.k",
        f"({name} if true else none)",
        f"({name} or none)",
        f"({name}|default(none))",
        f"({name}|first if false else {name})",
        f"[{name}]|first",
        f"({name},)[0]",
    ]
    return draw(st.sampled_from(shapes))


@st.composite
def call(draw: st.DrawFn) -> str:
    s = draw(space)
    args = ", ".join([draw(plugin), draw(argument)])
    return f"{draw(reference())}{s}({s}{args}{s})"


@st.composite
def expression(draw: st.DrawFn) -> str:
    """A Jinja expression that reaches a lookup, wrapped in filters and operators."""
    inner = draw(call())
    wrap = draw(
        st.sampled_from(
            ["{}", "({})", "{} | string", "{} | default('x')", "'a' ~ {}", "{} ~ 'b'",
             "[{}] | join(',')", "{} if true else 'x'", "({}) | lower | trim", "{} | length > 0",
             "not {}", "{} in ['a']", "{}.split() | first"]
        )
    )  # fmt: skip
    return wrap.format(inner)


@st.composite
def template(draw: st.DrawFn) -> str:
    """A whole template string: output, statements, aliases, nesting in string constants."""
    expr = draw(expression())
    ws_open = draw(st.sampled_from(["{{", "{{-", "{{+"]))
    ws_close = draw(st.sampled_from(["}}", "-}}", "+}}"]))
    alias = draw(st.sampled_from(["f", "L", "x_", "lk"]))
    name = draw(callee_name)
    s = draw(space)
    args = f"{draw(plugin)}, {draw(argument)}"
    shapes = [
        f"{ws_open}{s}{expr}{s}{ws_close}",
        f"pre {ws_open} {expr} {ws_close} post",
        f"{{% set {alias} = {name} %}}{ws_open} {alias}({args}) {ws_close}",
        f"{{%- set {alias} = [{name}] -%}}{{{{ {alias}[0]({args}) }}}}",
        f"{{% for {alias} in [{name}] %}}{{{{ {alias}({args}) }}}}{{% endfor %}}",
        f"{{% if {expr} %}}x{{% endif %}}",
        f"{{% set {alias} %}}{{{{ {expr} }}}}{{% endset %}}{{{{ {alias} }}}}",
        f'{{{{ "{{{{ {expr.replace(chr(34), chr(39))} }}}}" }}}}',
        f"{{{{ '{{{{' ~ 'x' ~ '}}}}' }}}}{ws_open} {expr} {ws_close}",
        f"{{# a comment #}}{ws_open}{expr}{ws_close}{{# another #}}",
        f"{{% raw %}}{{{{ x }}}}{{% endraw %}}{ws_open} {expr} {ws_close}",
    ]
    return draw(st.sampled_from(shapes))


@st.composite
def playbook(draw: st.DrawFn) -> tuple[str, str]:
    """The template placed somewhere ansible-core renders it; returns (yaml, where)."""
    text = draw(template())
    expr = draw(expression())
    where = draw(
        st.sampled_from(
            ["command", "debug_msg", "when", "when_template", "failed_when", "changed_when",
             "until", "task_vars", "play_vars", "loop", "name", "arg_key", "set_fact",
             "play_name", "block_when", "that"]
        )
    )  # fmt: skip
    task: dict[str, object] = {"name": "restart cart", "ansible.builtin.debug": {"msg": "ok"}}
    play: dict[str, object] = {"hosts": "app", "gather_facts": False}
    if where == "command":
        task = {"name": "restart", "ansible.builtin.command": f"echo {text}"}
    elif where == "debug_msg":
        task["ansible.builtin.debug"] = {"msg": text}
    elif where in ("when", "failed_when", "changed_when", "until"):
        task[where] = expr
    elif where == "when_template":
        task["when"] = text
    elif where == "that":
        task = {"name": "check", "ansible.builtin.assert": {"that": ["true", expr]}}
    elif where == "task_vars":
        task["vars"] = {"v": text}
    elif where == "play_vars":
        play["vars"] = {"v": text}
    elif where == "loop":
        task["loop"] = text
    elif where == "name":
        task["name"] = text
    elif where == "arg_key":
        task["ansible.builtin.debug"] = {text: "x"}
    elif where == "set_fact":
        task = {"name": "fact", "ansible.builtin.set_fact": {"v": text}}
    elif where == "play_name":
        play["name"] = text
    elif where == "block_when":
        task = {"block": [task], "when": expr}
    play["tasks"] = [task]
    return yaml.safe_dump([play], allow_unicode=True), where


@FUZZ
@given(playbook())
def test_every_lookup_spelling_is_refused(case: tuple[str, str]) -> None:
    text, where = case
    v = check_playbook(text, ["app"])
    rules = {r.rule for r in v.violations}
    assert not v.allowed, f"allowed with the template in {where}:\n{text}"
    assert "guard.internal" not in rules, (where, text, v.violations)
    assert rules & TEMPLATE_RULES, (where, text, rules)


# --- the rule tables, one spelling each -----------------------------------------------------


def _rules(text: str, *, expression: bool = False) -> set[str]:
    return {f.rule for f in guard_templates.judge(text, expression=expression)}


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("{{ lookup('pipe', 'id') }}", "controller.lookup"),
        ("{{ [lookup][0]('pipe', 'id') }}", "controller.lookup"),
        ("{% set f = q %}{{ f('pipe', 'id') }}", "controller.lookup"),
        ('{{ "{{ query(\'pipe\', \'id\') }}" }}', "controller.lookup"),
        ("#jinja2:variable_start_string:'[['\n[[ lookup('pipe','id') ]]", "jinja.override"),
        ("{{ lipsum.__globals__ }}", "jinja.callable"),
        ("{{ x.__class__ }}", "jinja.sandbox"),
        ("{{ x['__class__'] }}", "jinja.sandbox"),
        ("{{ x['__cl' ~ 'ass__'] }}", "jinja.dynamic"),
        ("{{ x | attr('y') }}", "jinja.sandbox"),
        ("{{ x | map(attribute='__class__') | list }}", "jinja.sandbox"),
        ("{{ x | map('b64decode') | list }}", "obfuscation.decode"),
        ("{{ x | select(y) | list }}", "jinja.dynamic"),
        ("{{ '{0.__class__}'.format(x) }}", "jinja.sandbox"),
        ("{{ x.popen('id') }}", "jinja.callable"),
        ("{{ f(*args) }}", "jinja.dynamic"),
        ("{{ '/root/*' | fileglob }}", "controller.file"),
        ("{{ p is exists }}", "controller.file"),
        ("{{ x | community.general.json_query('a') }}", "jinja.filter"),
        ("{{ x | some_unknown_filter }}", "jinja.filter"),
        ("{% include 'x' %}", "controller.include"),
        ("{% macro m() %}{% endmacro %}", "jinja.statement"),
        ("{{ 'a' * 100000000 }}", "jinja.resource"),
        ("{{ 9 ** 99999 }}", "jinja.resource"),
        ("{{ lookup('pipe', 'id') ", "jinja.unparseable"),
        ("{{ hostvars['db'] }}", "jinja.hostvars"),
    ],
)
def test_template_rules(text: str, rule: str) -> None:
    assert rule in _rules(text), _rules(text)


@pytest.mark.parametrize(
    "text",
    [
        "{{ item }}",
        "{{ item.path }}",
        "{{ pids.stdout_lines | first }}",
        "{{ inventory_hostname }}",
        "{{ result.stdout.split() | map('int') | list }}",
        "{{ x | default('a') | regex_replace('\\\\d', '') }}",
        "{% for h in hosts_list %}{{ h }}{% endfor %}",
        "{{ x | selectattr('state', 'equalto', 'up') | list }}",
        "plain text without templates",
    ],
)
def test_harmless_templates_pass(text: str) -> None:
    assert _rules(text) == set()


@pytest.mark.parametrize(
    "text",
    ["pids.stdout_lines | length > 0", "result.rc != 0 and 'x' not in result.stderr",
     "health.status == 200", "not ansible_check_mode", "killed.rc not in [0, 1]"],
)  # fmt: skip
def test_harmless_conditionals_pass(text: str) -> None:
    assert _rules(text, expression=True) == set()


def test_a_conditional_that_is_no_expression_is_refused() -> None:
    assert "jinja.unparseable" in _rules("result.rc ==", expression=True)
    assert "jinja.unparseable" in _rules("lookup{#c#}('pipe', 'id')", expression=True)


def test_a_conditional_rendered_by_a_template_is_refused() -> None:
    # ansible-core evaluates what `{{ c }}` renders as the expression: c could be a lookup.
    assert "jinja.indirect" in _rules("{{ c }}", expression=True)


def test_a_value_that_is_a_lookup_expression_is_refused() -> None:
    assert "controller.lookup" in _rules("lookup('pipe', 'id')")
    assert _rules("restart the cart service") == set()
