"""A small, exact arithmetic parser for the expressions the calculator reads (never `eval`).

Grammar (recursive descent; `*` repeats, `?` is optional):

    expression := term (("+" | "-") term)*
    term       := unary ((multiply | divide) unary)*
    unary      := ("+" | "-") unary | primary
    primary    := number | "(" expression ")"
    number     := digits ("." digits?)? | "." digits
    multiply   := "x" | "*" | "·" | the multiplication sign U+00D7
    divide     := "/" | "÷" | ":"

Multiplication and division bind tighter than addition and subtraction, operators of
one level group from the left, and a sign in front of a number or a parenthesis is a
unary plus or minus ("3x-2" is -6). Numbers are exact `Fraction`s, so "0.1+0.2" is 3/10
and "1÷3x3" is 1. Spaces are ignored. Every error is a `CalculatorError` whose one-line
message names the 1-based position of the character at fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from federa.errors import FederaError

__all__ = ["CalculatorError", "evaluate", "format_value", "is_well_formed"]

_ADD = frozenset("+-")
_MUL = frozenset("x\u00d7*·")  # \u00d7: the multiplication sign
_DIV = frozenset("/÷:")
_DIGITS = frozenset("0123456789")
_MAX_DIGITS = 1000  # a longer number is a mistake, not a calculation


class CalculatorError(FederaError):
    """An expression cannot be computed: malformed, or a division by zero."""


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "number", an operator character, "(" or ")"
    text: str
    position: int  # 1-based column of the first character
    value: Fraction = Fraction(0)


def _shown(expression: str) -> str:
    return repr(expression) if len(expression) <= 60 else repr(expression[:57] + "...")


def _number(expression: str, start: int) -> tuple[_Token, int]:
    """Read the number that starts at index `start`; return it and the index after it."""
    end = start
    while end < len(expression) and (expression[end] in _DIGITS or expression[end] == "."):
        end += 1
    text = expression[start:end]
    if text.count(".") > 1:
        second = start + text.index(".", text.index(".") + 1)
        raise CalculatorError(
            f"malformed expression {_shown(expression)}: a second decimal point at position "
            f"{second + 1}; a number has at most one"
        )
    if text == ".":
        raise CalculatorError(
            f"malformed expression {_shown(expression)}: a decimal point without digits at "
            f"position {start + 1}"
        )
    if len(text) > _MAX_DIGITS:
        raise CalculatorError(
            f"the number at position {start + 1} has {len(text)} characters; the calculator "
            f"takes at most {_MAX_DIGITS}"
        )
    whole, _, fraction = text.partition(".")
    value = Fraction(int(whole or "0")) + (
        Fraction(int(fraction), 10 ** len(fraction)) if fraction else Fraction(0)
    )
    return _Token("number", text, start + 1, value), end


def _tokenize(expression: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(expression):
        char = expression[i]
        if char.isspace():
            i += 1
        elif char in _DIGITS or char == ".":
            token, i = _number(expression, i)
            tokens.append(token)
        elif char in _ADD or char in _MUL or char in _DIV or char in "()":
            tokens.append(_Token(char, char, i + 1))
            i += 1
        else:
            raise CalculatorError(
                f"malformed expression {_shown(expression)}: {char!r} at position {i + 1} is "
                "not a digit, a decimal point, + - x ÷ / or a parenthesis"
            )
    return tokens


class _Parser:
    """Recursive descent over the tokens; each method consumes one grammar rule."""

    def __init__(self, expression: str, *, syntax_only: bool = False) -> None:
        self.expression = expression
        self.tokens = _tokenize(expression)
        self.index = 0
        self.syntax_only = syntax_only  # a zero divisor is no syntax error

    def _peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def _fail(self, expected: str) -> CalculatorError:
        token = self._peek()
        found = "the end" if token is None else f"{token.text!r} at position {token.position}"
        return CalculatorError(
            f"malformed expression {_shown(self.expression)}: expected {expected} but found {found}"
        )

    def parse(self) -> Fraction:
        if not self.tokens:
            raise CalculatorError("the expression is empty; write a number or a calculation")
        value = self._expression()
        if self._peek() is not None:
            raise self._fail("an operator")
        return value

    def _expression(self) -> Fraction:
        value = self._term()
        while (token := self._peek()) is not None and token.kind in _ADD:
            self.index += 1
            right = self._term()
            value = value + right if token.kind == "+" else value - right
        return value

    def _term(self) -> Fraction:
        value = self._unary()
        while (token := self._peek()) is not None and (token.kind in _MUL or token.kind in _DIV):
            self.index += 1
            divisor_at = self._peek()
            right = self._unary()
            if token.kind in _MUL:
                value *= right
            elif right == 0 and self.syntax_only:
                value = Fraction(0)
            elif right == 0:
                where = "" if divisor_at is None else f" at position {divisor_at.position}"
                raise CalculatorError(
                    f"cannot compute {_shown(self.expression)}: division by zero (the divisor"
                    f"{where} is 0)"
                )
            else:
                value /= right
        return value

    def _unary(self) -> Fraction:
        token = self._peek()
        if token is not None and token.kind in _ADD:
            self.index += 1
            value = self._unary()
            return -value if token.kind == "-" else value
        return self._primary()

    def _primary(self) -> Fraction:
        token = self._peek()
        if token is not None and token.kind == "number":
            self.index += 1
            return token.value
        if token is not None and token.kind == "(":
            self.index += 1
            value = self._expression()
            closing = self._peek()
            if closing is None or closing.kind != ")":
                raise self._fail(f"')' to close the '(' at position {token.position}")
            self.index += 1
            return value
        raise self._fail("a number")


def evaluate(expression: str) -> Fraction:
    """Compute an arithmetic expression exactly, without `eval`.

    Args:
        expression: Digits, decimal points, operators and parentheses: "x", "*", "·"
            and the multiplication sign (U+00D7) multiply; "/", "÷" and ":" divide.

    Returns:
        The exact value.

    Raises:
        CalculatorError: The expression is empty or malformed (the message names the
            position), or divides by zero.
    """
    return _Parser(expression).parse()


def is_well_formed(expression: str) -> bool:
    """Return whether `expression` follows the grammar (a division by zero is well formed)."""
    try:
        _Parser(expression, syntax_only=True).parse()
    except CalculatorError:
        return False
    return True


def _is_terminating(value: Fraction) -> bool:
    denominator = value.denominator
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    return denominator == 1


def format_value(value: Fraction, *, digits: int = 10) -> str:
    """Return `value` as a person writes it: exact when the decimal ends, else rounded.

    Integers print as integers ("12"), fractions whose decimals end print them all
    ("0.125"), and others print their reduced fraction and a rounded decimal
    ("1/3 ≈ 0.3333333333").

    Args:
        value: The number to show.
        digits: Decimal places of the rounded form.
    """
    if value.denominator == 1:
        return str(value.numerator)
    sign = "-" if value < 0 else ""
    magnitude = abs(value)
    if _is_terminating(magnitude):
        places = 0
        while (magnitude * 10**places).denominator != 1:
            places += 1
        scaled = int(magnitude * 10**places)
        whole, rest = divmod(scaled, 10**places)
        return f"{sign}{whole}.{rest:0{places}d}"
    rounded = round(magnitude, digits)
    whole, rest = divmod(int(rounded * 10**digits), 10**digits)
    decimals = f"{rest:0{digits}d}".rstrip("0") or "0"
    return f"{sign}{magnitude.numerator}/{magnitude.denominator} ≈ {sign}{whole}.{decimals}"
