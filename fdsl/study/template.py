"""The study file's `{...}` fields: command templates whose fields are small expressions over the study's vars.

    expand("--size {32 * render_scale} --pad {render_scale}", {"render_scale": 2})  ->  "--size 64 --pad 2"

A field is a name, a number or a quoted string, combined with + - * / // %, comparisons and `A if C else B`;
nothing else (no calls, no attributes), so a study file cannot run code. A var that holds a string with fields
is expanded where it is used, so a var may be built from others. Fields named in `keep` stay as they are (the
run's own paths, filled in only when the run is executed).
"""
from __future__ import annotations

import ast
import operator
import re

FIELD = re.compile(r"\{([^{}]+)\}")
BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
          ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}
COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
           ast.Gt: operator.gt, ast.GtE: operator.ge}


class TemplateError(ValueError):
    """A field that cannot be evaluated; the message names it."""


def expand(text, variables: dict, keep: frozenset = frozenset(), _depth: int = 0) -> str:
    """TEXT with every {field} replaced by its value (see the module's docstring)."""
    if _depth > 20:
        raise TemplateError(f"vars refer to each other in a loop (at {text!r})")

    def field(match: re.Match) -> str:
        source = match[1].strip()
        if source in keep:
            return match[0]
        return _text(_value(source, variables, keep, _depth))

    return FIELD.sub(field, str(text))


def _text(value) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _value(source: str, variables: dict, keep: frozenset, depth: int):
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError:
        raise TemplateError(f"{{{source}}} is not an expression") from None
    return _eval(tree.body, source, variables, keep, depth)


def _eval(node, source: str, variables: dict, keep: frozenset, depth: int):
    def sub(n):
        return _eval(n, source, variables, keep, depth)

    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in variables:
            raise TemplateError(f"{{{source}}}: no var named {node.id!r}")
        value = variables[node.id]
        return expand(value, variables, keep, depth + 1) if isinstance(value, str) else value
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        return BINARY[type(node.op)](_number(sub(node.left), source), _number(sub(node.right), source))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_number(sub(node.operand), source)
    if isinstance(node, ast.IfExp):
        return sub(node.body) if sub(node.test) else sub(node.orelse)
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in COMPARE:
        left, right = sub(node.left), sub(node.comparators[0])
        if not (isinstance(left, str) and isinstance(right, str)):  # '48' == 48: compare as numbers
            left, right = _number(left, source), _number(right, source)
        return COMPARE[type(node.ops[0])](left, right)
    raise TemplateError(f"{{{source}}}: only names, numbers, quoted strings, arithmetic, comparisons and "
                        "'A if C else B' are allowed")


def _number(value, source: str):
    """A var used in arithmetic: 48 or '48' -> 48, '0.1' -> 0.1; anything else is an error naming the field."""
    if isinstance(value, (int, float)):
        return value
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    raise TemplateError(f"{{{source}}}: {value!r} is not a number")
