from fractions import Fraction

import pytest

from federa.apps.calculator.parser import CalculatorError, evaluate, format_value, is_well_formed
from federa.errors import FederaError


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("2+3x4", 14),
        ("2x3+4", 10),
        ("10-4-3", 3),  # left to right, not 10-(4-3)
        ("100÷10÷5", 2),
        ("8/4x2", 4),  # same level: left to right
        ("7-2x3+1", 2),
        ("2·3+1", 7),  # the multiplication dot
        ("6\u00d77", 42),  # the multiplication sign
        ("12:4", 3),
        ("(2+3)x4", 20),
        ("2x(3+4)x(1+1)", 28),
        ("-3+5", 2),
        ("4x-2", -8),
        ("--2", 2),
        ("+7", 7),
        ("-(2+3)", -5),
        ("3 + 4 x 2", 11),
        ("007", 7),
    ],
)
def test_evaluate_follows_arithmetic_precedence(expression: str, value: int) -> None:
    assert evaluate(expression) == value


def test_evaluate_is_exact_with_decimals_and_fractions() -> None:
    assert evaluate("0.1+0.2") == Fraction(3, 10)
    assert evaluate("1÷3x3") == 1
    assert evaluate("2.5x4") == 10
    assert evaluate(".5+1.") == Fraction(3, 2)
    assert evaluate("1/3") == Fraction(1, 3)


@pytest.mark.parametrize("expression", ["5÷0", "1/(2-2)", "3+4/0.0", "7:0x2"])
def test_division_by_zero_is_a_clear_error(expression: str) -> None:
    with pytest.raises(CalculatorError, match=r"division by zero") as info:
        evaluate(expression)
    message = str(info.value)
    assert "\n" not in message
    assert "position" in message


def test_division_by_zero_names_the_divisor_position() -> None:
    with pytest.raises(CalculatorError, match=r"the divisor at position 6 is 0"):
        evaluate("12+3÷0")


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "the expression is empty"),
        ("   ", "the expression is empty"),
        ("3+", "expected a number but found the end"),
        ("3++", "expected a number but found the end"),
        ("x3", "expected a number but found 'x' at position 1"),
        ("3 4", "expected an operator but found '4' at position 3"),
        ("3+x4", "expected a number but found 'x' at position 3"),
        ("(3+4", "expected ')' to close the '(' at position 1 but found the end"),
        ("3+4)", "expected an operator but found ')' at position 4"),
        ("()", "expected a number but found ')' at position 2"),
        ("1.2.3", "a second decimal point at position 4"),
        ("3+.", "a decimal point without digits at position 3"),
        ("3a", "'a' at position 2 is not a digit"),
        ("2^3", "'^' at position 2 is not a digit"),
    ],
)
def test_malformed_input_says_what_and_where(expression: str, message: str) -> None:
    with pytest.raises(CalculatorError) as info:
        evaluate(expression)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_calculator_error_is_a_federa_error() -> None:
    assert issubclass(CalculatorError, FederaError)


def test_evaluate_never_runs_python() -> None:
    for expression in ("__import__('os')", "1 if 1 else 2", "2**8", "[1]"):
        with pytest.raises(CalculatorError):
            evaluate(expression)


def test_a_huge_number_is_refused() -> None:
    with pytest.raises(CalculatorError, match="at most 1000"):
        evaluate("9" * 1001)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Fraction(12), "12"),
        (Fraction(-3), "-3"),
        (Fraction(1, 8), "0.125"),
        (Fraction(-5, 2), "-2.5"),
        (Fraction(1, 3), "1/3 ≈ 0.3333333333"),
        (Fraction(-2, 3), "-2/3 ≈ -0.6666666667"),
        (Fraction(22, 7), "22/7 ≈ 3.1428571429"),
    ],
)
def test_format_value_is_exact_when_the_decimal_ends(value: Fraction, text: str) -> None:
    assert format_value(value) == text


def test_is_well_formed_checks_syntax_only() -> None:
    assert is_well_formed("12+3x4")
    assert is_well_formed("7÷0")  # computes to an error, but is written correctly
    assert not is_well_formed("/7+1")
    assert not is_well_formed("1.2.3")
    assert not is_well_formed("")
