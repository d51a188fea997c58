"""Mixpanel's expression language for `where` and `on`, as the double understands it (no Python eval).

properties["x"] (also event["x"], user["x"]), string, number, boolean and list literals, + - * / %,
== != > >= < <= in, not, and, or, parentheses, and defined/number/string/boolean/floor/round/ceil(...).
Values follow Mixpanel's rules: a missing property is undefined, comparisons across kinds are false, and/or/not
need booleans. An expression the double does not understand raises ExpressionError, a 400 like Mixpanel's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from mixpanel_mcp.double.query import QueryError


class ExpressionError(QueryError):
    pass


class _Undefined:
    def __repr__(self) -> str:
        return "undefined"


UNDEFINED: Any = _Undefined()

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<name>[A-Za-z_$][A-Za-z0-9_$]*)
      | (?P<op>==|!=|>=|<=|[-+*/%<>()\[\],])
    )""",
    re.VERBOSE,
)
_SOURCES = ("properties", "event", "user")
_FUNCTIONS = ("defined", "number", "string", "boolean", "floor", "round", "ceil")
_COMPARISONS = ("==", "!=", ">", ">=", "<", "<=", "in")

Node = Callable[[dict[str, Any]], Any]


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise ExpressionError(f"unexpected character at position {position} of the expression")
        kind = match.lastgroup or "op"
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


# Nesting (parentheses, lists, calls, not, unary minus) and operators chained at one level: both become
# Python recursion when parsed and evaluated, so both are bounded with a 400, as Mixpanel bounds them.
MAX_NESTING = 50
MAX_OPERATORS = 500


class _Parser:
    """Recursive descent, lowest precedence first: or, and, not, comparison, + -, * / %, unary -, primary."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.i = 0
        self.depth = 0
        self.operators = 0

    def nested(self) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise ExpressionError(f"the expression is nested more than {MAX_NESTING} levels deep")

    def operator(self) -> None:
        self.operators += 1
        if self.operators > MAX_OPERATORS:
            raise ExpressionError(f"the expression has more than {MAX_OPERATORS} operators")

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            raise ExpressionError(f"expected {value or 'more'} in the expression")
        self.i += 1
        return token

    def at(self, *values: str) -> bool:
        token = self.peek()
        return token is not None and token[0] in ("op", "name") and token[1] in values

    def parse(self) -> Node:
        node = self.or_()
        if self.peek() is not None:
            raise ExpressionError(f"unexpected '{self.peek()[1]}' in the expression")  # type: ignore[index]
        return node

    def chain(self, ops: tuple[str, ...], operand: Callable[[], Node], combine: Callable[[str, Node, Node], Node]) -> Node:
        """operand (op operand)*, left-associative."""
        node = operand()
        while self.at(*ops):
            op = self.take()[1]
            self.operator()
            node = combine(op, node, operand())
        return node

    def or_(self) -> Node:
        return self.chain(("or",), self.and_, _logical)

    def and_(self) -> Node:
        return self.chain(("and",), self.not_, _logical)

    def not_(self) -> Node:
        if self.at("not"):
            self.take()
            self.nested()
            operand = self.not_()
            self.depth -= 1
            return lambda p: _negate(operand(p))
        return self.comparison()

    def comparison(self) -> Node:
        return self.chain(_COMPARISONS, self.additive, _binary)

    def additive(self) -> Node:
        return self.chain(("+", "-"), self.multiplicative, _binary)

    def multiplicative(self) -> Node:
        return self.chain(("*", "/", "%"), self.unary, _binary)

    def unary(self) -> Node:
        if self.at("-"):
            self.take()
            self.nested()
            operand = self.unary()
            self.depth -= 1
            return lambda p: -v if is_number(v := operand(p)) else UNDEFINED
        return self.primary()

    def primary(self) -> Node:
        kind, value = self.take()
        if kind == "number":
            number = _finite(float(value))
            return lambda p: number
        if kind == "string":
            text = _unquote(value)
            return lambda p: text
        if kind == "op" and value == "(":
            self.nested()
            node = self.or_()
            self.take(")")
            self.depth -= 1
            return node
        if kind == "op" and value == "[":
            self.nested()
            items: list[Node] = []
            while not self.at("]"):
                items.append(self.or_())
                if not self.at("]"):
                    self.take(",")
            self.take("]")
            self.depth -= 1
            return lambda p: [item(p) for item in items]
        if kind == "name" and value in ("true", "false"):
            flag = value == "true"
            return lambda p: flag
        if kind == "name" and value in _SOURCES:
            self.take("[")
            key_kind, key = self.take()
            if key_kind != "string":
                raise ExpressionError(f"{value}[...] needs a quoted property name")
            self.take("]")
            name = _unquote(key)
            if value == "event" and name == "$time":
                name = "time"
            return lambda p: from_json(p.get(name))
        if kind == "name" and value in _FUNCTIONS:
            self.take("(")
            self.nested()
            operand = self.or_()
            self.take(")")
            self.depth -= 1
            function = _FUNCTION_IMPLS[value]
            return lambda p: function(operand(p))
        raise ExpressionError(f"'{value}' is not supported in this expression")


def _unquote(literal: str) -> str:
    """The text of a quoted string token, with backslash escapes resolved."""
    escapes = {"n": "\n", "t": "\t", "r": "\r"}
    return re.sub(r"\\(.)", lambda m: escapes.get(m.group(1), m.group(1)), literal[1:-1])


def from_json(value: Any) -> Any:
    if value is None:
        return UNDEFINED
    if isinstance(value, bool) or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        try:
            return _finite(float(value))
        except OverflowError:  # an integer too large for a float
            return UNDEFINED
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return UNDEFINED


def is_number(value: Any) -> bool:
    return isinstance(value, float)


def _finite(value: Any) -> Any:
    """Infinities and NaN (an overflow, 1e400) are no value here: they have no JSON form to answer with."""
    return value if not isinstance(value, float) or math.isfinite(value) else UNDEFINED


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "undefined"


def _equal(a: Any, b: Any) -> bool:
    return _kind(a) == _kind(b) and _kind(a) != "undefined" and a == b


def _truth(value: Any) -> bool:
    if value is UNDEFINED:
        return False
    if isinstance(value, bool):
        return value
    raise ExpressionError(f"and/or/not need booleans, not a {_kind(value)}")


def _negate(value: Any) -> bool:
    return not _truth(value)


def _logical(op: str, left: Node, right: Node) -> Node:
    if op == "or":
        return lambda p: _truth(left(p)) or _truth(right(p))
    return lambda p: _truth(left(p)) and _truth(right(p))


def _binary(op: str, left: Node, right: Node) -> Node:
    def evaluate(p: dict[str, Any]) -> Any:
        a, b = left(p), right(p)
        if op == "==":
            return _equal(a, b)
        if op == "!=":
            return not _equal(a, b)
        if op == "in":
            if isinstance(b, list):
                return any(_equal(a, item) for item in b)
            if isinstance(a, str) and isinstance(b, str):
                return a in b
            return UNDEFINED
        if op == "+" and isinstance(a, str) and isinstance(b, str):
            return a + b
        if not (is_number(a) and is_number(b)):
            return UNDEFINED
        if op in (">", ">=", "<", "<="):
            return {">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b}[op]
        if op == "+":
            return _finite(a + b)
        if op == "-":
            return _finite(a - b)
        if op == "*":
            return _finite(a * b)
        if b == 0:
            return UNDEFINED
        return _finite(a / b if op == "/" else math.fmod(a, b))

    return evaluate


def _to_number(value: Any) -> Any:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, float):
        return value
    if isinstance(value, str):
        try:
            return _finite(float(value))
        except ValueError:
            return UNDEFINED
    return UNDEFINED


def _to_string(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return value
    return UNDEFINED


def _to_boolean(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, float):
        return value != 0
    if isinstance(value, str):
        return value != ""
    return UNDEFINED


def _math(function: Callable[[float], float]) -> Callable[[Any], Any]:
    return lambda v: float(function(v)) if is_number(v) else UNDEFINED


_FUNCTION_IMPLS: dict[str, Callable[[Any], Any]] = {
    "defined": lambda v: v is not UNDEFINED,
    "number": _to_number,
    "string": _to_string,
    "boolean": _to_boolean,
    "floor": _math(math.floor),
    "round": _math(lambda v: math.floor(v + 0.5)),
    "ceil": _math(math.ceil),
}


def compile_expression(text: str) -> Node:
    """Parse a `where`/`on` expression into a function of an event's properties."""
    node = _Parser(text).parse()

    def evaluate(properties: dict[str, Any]) -> Any:
        try:
            return node(properties)
        except (TypeError, ValueError, ArithmeticError, RecursionError) as exc:  # a value the rules above missed
            raise ExpressionError(f"the expression cannot be computed on this data ({type(exc).__name__})") from None

    return evaluate


def condition(text: str | None) -> Callable[[dict[str, Any]], bool]:
    """A `where` filter over an event's (or profile's) properties: passes where the expression is true."""
    if not text:
        return lambda properties: True
    expression = compile_expression(text)
    return lambda properties: expression(properties) is True


def segment_keys(value: Any) -> list[str]:
    """The segment names an `on` value falls in: a list property counts in each of its values."""
    if isinstance(value, list):
        return [key for item in value for key in segment_keys(item)]
    text = _to_string(value)
    return [] if text is UNDEFINED else [text]
