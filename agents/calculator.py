"""The calculator agent: exact arithmetic on what the user typed, without ever evaluating their text as Python.

The query is normalised (words like "plus", "17.5% of", thousands separators), every number literal is lifted
out as an exact `Fraction` before parsing, and the rest is parsed with `ast` and walked over a whitelist of
arithmetic nodes. "80 - 15%" and "15% off 80" are 68, as on any calculator. Names, calls other than ``sqrt``,
attributes, subscripts and strings are refused, and powers and factorials are bounded so that ``9**9**9`` is
refused instead of hanging the process.

    >>> calculate("17.5% of 2,480")
    Fraction(434, 1)
    >>> answer("what is (2 + 3) times 4?")
    '20'
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation, localcontext
from fractions import Fraction

from orchestra.agent import AgentContext, AgentReply
from orchestra.cards import AgentCard

__all__ = ["CALCULATOR_CARD", "CalculationRefused", "answer", "calculate", "format_number"]

MAX_EXPRESSION_CHARS = 500
"""Longer input is not a calculation a person typed; refusing it bounds parsing work."""
MAX_RESULT_DIGITS = 4000
"""Numerators and denominators larger than this many digits are refused (bounds memory and time)."""
MAX_NODES = 200


class CalculationRefused(ValueError):
    """The text is not arithmetic the calculator can do exactly and safely; the message says why, politely."""


# -- normalising words into an expression -----------------------------------------------------------------

_THOUSANDS = re.compile(r"(?<![\d.])\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d,])")
_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")

# Order matters: longer phrases first, so "divided by" is replaced before "by".
_PHRASES: tuple[tuple[str, str], ...] = (
    (r"\bto the power of\b", "**"),
    (r"\braised to(?: the power(?: of)?)?\b", "**"),
    (r"\bmultiplied by\b", "*"),
    (r"\bdivided by\b", "/"),
    (r"\bsquare root of\b", "sqrt "),
    (r"\bsquared\b", "**2"),
    (r"\bcubed\b", "**3"),
    (r"\bpercent of\b", "%of"),
    (r"\bper ?cent\b", "%"),
    (r"\bplus\b", "+"),
    (r"\bminus\b", "-"),
    (r"\btimes\b", "*"),
    (r"\bover\b", "/"),
    (r"\bmod(?:ulo)?\b", "%mod"),
    (r"\bsqrt\b", "sqrt "),
    (r"\bof\b", "of"),
    (r"[×·]", "*"),
    (r"÷", "/"),
    (r"[$€£]", ""),  # "20% off $50": the currency does not change the arithmetic
    (r"−", "-"),
    (r"\^", "**"),
    (r"(?<=[\d)\s])x(?=[\s\d(])", "*"),
)

# Words that frame a question but carry no arithmetic; removed before the strict character check.
_FILLER = re.compile(
    r"\b(?:what(?:'s| is| are)?|whats|how much is|how much|calculate|compute|evaluate|work out|solve|please|"
    r"tell me|can you|could you|the|result|value|answer|of this|is|equals?|exactly|give me|for me|hey|hi)\b",
    re.IGNORECASE,
)
_ALLOWED_AFTER_NORMALISING = re.compile(r"^[\s\d.+\-*/%()a-z,!]*$")
MAX_FACTORIAL = 1000
"""1000! has 2,568 digits; a larger factorial is refused before it is computed."""


@dataclass(frozen=True)
class _Lifted:
    """An expression whose number literals were replaced by names ``_n0, _n1, ...`` bound to exact values."""

    source: str
    values: dict[str, Fraction]


# "multiply 434 by 3", "divide it by 2", "subtract 5 from 12", "add 5 to 12": the operation named first
_VERBS: tuple[tuple[str, str], ...] = (
    (r"\bmultiply\s+(.+?)\s+by\s+(.+)$", r" (\1) * (\2) "),
    (r"\bdivide\s+(.+?)\s+by\s+(.+)$", r" (\1) / (\2) "),
    (r"\bsubtract\s+(.+?)\s+from\s+(.+)$", r" (\2) - (\1) "),
    (r"\badd\s+(.+?)\s+to\s+(.+)$", r" (\1) + (\2) "),
)
# A follow-up starts with a connective ("and 10% of that?", "now divide it by 2"); it frames, it does not add.
_LEADING_CONNECTIVE = re.compile(r"^\s*(?:and|then|now|also|so|ok(?:ay)?)\b[\s,]*", re.IGNORECASE)


def _normalise(text: str) -> str:
    expression = _LEADING_CONNECTIVE.sub("", text.strip().lower())
    expression = _THOUSANDS.sub(lambda match: match.group(0).replace(",", ""), expression)
    for pattern, replacement in _VERBS:
        expression = re.sub(pattern, replacement, expression)
    for pattern, replacement in _PHRASES:
        expression = re.sub(pattern, f" {replacement} ", expression)
    expression = _FILLER.sub(" ", expression)
    expression = expression.replace("?", " ").replace("=", " ")
    expression = re.sub(r"\s+", " ", expression).rstrip(" .,")
    # a full stop or comma left over from the sentence goes, but not the point of a leading decimal (".5")
    return re.sub(r"^[\s.,]+(?!\d)", "", expression)


def _lift_numbers(expression: str) -> _Lifted:
    values: dict[str, Fraction] = {}

    def lift(match: re.Match[str]) -> str:
        name = f"_n{len(values)}"
        try:
            number = Decimal(match.group(0))
        except (InvalidOperation, ValueError):
            raise CalculationRefused(f"I could not read the number {match.group(0)!r}.") from None
        if abs(number.adjusted()) >= MAX_RESULT_DIGITS:  # 1e999999 would be a million-digit integer
            raise CalculationRefused(f"{match.group(0)} has more than {MAX_RESULT_DIGITS} digits; I stop there.")
        values[name] = Fraction(number)
        return f" {name} "

    lifted = _percent_changes(_NUMBER.sub(lift, expression))
    # Percent signs: "a % of b" is a/100*b; "%" (or "mod") between two operands is modulo; any other "a %"
    # is a/100. A private marker keeps modulo apart while the percentages are rewritten.
    lifted = re.sub(r"%\s*of\b", " * _pct * ", lifted)
    lifted = re.sub(r"%\s*mod\b", " \x00 ", lifted)
    lifted = re.sub(r"%(?=\s*(?:_n|\(|sqrt))", " \x00 ", lifted)
    lifted = lifted.replace("%", " * _pct ").replace("\x00", "%")
    lifted = re.sub(r"\bof\b", " * ", lifted)
    # "5!" is a factorial; a "!" anywhere else was dropped, which silently changed the question
    lifted = re.sub(r"(_n\d+)\s*!", r" _fact(\1) ", lifted)
    if "!" in lifted:
        raise CalculationRefused("I can only take the factorial of a number written out, like 5!.")
    lifted = re.sub(r"\bsqrt\s+(_n\d+)", r" sqrt(\1) ", lifted)
    # implicit multiplication next to parentheses only: "2(3 + 4)", "(1 + 2)(3 + 4)", "(2)3"
    lifted = re.sub(r"(_n\d+|\))\s*(?=\()", r"\1 * ", lifted)
    lifted = re.sub(r"\)\s*(?=_n|sqrt)", ") * ", lifted)
    values["_pct"] = Fraction(1, 100)
    values["_one"] = Fraction(1)  # number literals are lifted out, so the whitelist admits no constant of ours
    return _Lifted(lifted, values)


# "p%" that neither starts "p% of x" nor is the left operand of a modulo
_BARE_PERCENT = re.compile(r"([+-])\s*(_n\d+)\s*%(?!\s*(?:of\b|mod\b|_n|\(|sqrt))")


def _percent_changes(lifted: str) -> str:
    # "80 - 15%" means 80 less 15% of it (68) on every calculator, not 80 - 0.15; likewise "p% off x". The running
    # value is everything before the sign inside the same parentheses, so "(80 - 15%) * 2" is 136.
    lifted = re.sub(r"(_n\d+)\s*%\s*off\b", r" ( _one - \1 * _pct ) * ", lifted)
    position = 0
    while match := _BARE_PERCENT.search(lifted, position):
        start = _group_start(lifted, match.start())
        running = lifted[start : match.start()]
        if not re.search(r"(?:_n\d+|\))\s*$", running):
            position = match.end()  # "-15%" alone, "2 * -15%": no running value to change, it stays a hundredth
            continue
        change = f" ( ( {running} ) * ( _one {match.group(1)} {match.group(2)} * _pct ) ) "
        lifted = lifted[:start] + change + lifted[match.end() :]
        position = start + len(change)
    return lifted


def _group_start(source: str, end: int) -> int:
    """Where the innermost parenthesised group that is open at ``end`` starts (0 outside any)."""
    depth = 0
    for index in range(end - 1, -1, -1):
        if source[index] == ")":
            depth += 1
        elif source[index] == "(":
            if depth == 0:
                return index + 1
            depth -= 1
    return 0


# -- evaluating the whitelisted tree ----------------------------------------------------------------------


def _digits(value: Fraction) -> int:
    return max(len(str(abs(value.numerator))), len(str(value.denominator)))


_TOO_MANY_DIGITS = 10**MAX_RESULT_DIGITS
"""The smallest integer with more than MAX_RESULT_DIGITS digits."""


def _check_size(value: Fraction) -> Fraction:
    # an exact comparison, so that 10**4000 (4,001 digits) is refused as the message says
    if abs(value.numerator) >= _TOO_MANY_DIGITS or value.denominator >= _TOO_MANY_DIGITS:
        raise CalculationRefused(f"The result would have more than {MAX_RESULT_DIGITS} digits; I stop there.")
    return value


def _power(base: Fraction, exponent: Fraction) -> Fraction | Decimal:
    if exponent.denominator == 1:
        exp = exponent.numerator
        if base == 0 and exp < 0:
            raise CalculationRefused("Zero cannot be raised to a negative power (that divides by zero).")
        if base not in (0, 1, -1):
            # estimated digits of the result, before computing it: refuse 9**9**9 without trying. Any other base
            # has a numerator or denominator of at least 2 (log10 >= 0.3), so a larger exponent is too big
            # whatever the base, and is refused before its conversion to a float could overflow
            magnitude = max(abs(base.numerator), base.denominator)
            if abs(exp) > MAX_RESULT_DIGITS / math.log10(2) or abs(exp) * math.log10(magnitude) > MAX_RESULT_DIGITS:
                raise CalculationRefused(f"The result would have more than {MAX_RESULT_DIGITS} digits; I stop there.")
        return _check_size(base**exp)
    # a fractional exponent: exact when the root is exact, otherwise a 30-digit approximation
    if base < 0:
        raise CalculationRefused("A negative number has no real root of that kind.")
    if abs(exponent.numerator) > 1000 or exponent.denominator > 1000:
        raise CalculationRefused("That exponent is too large for me to compute.")
    root_num = _exact_root(base.numerator, exponent.denominator)
    root_den = _exact_root(base.denominator, exponent.denominator)
    if root_num is not None and root_den is not None:
        return _power(Fraction(root_num, root_den), Fraction(exponent.numerator))
    with localcontext() as context:
        context.prec = 30
        return (Decimal(base.numerator) / Decimal(base.denominator)) ** (
            Decimal(exponent.numerator) / Decimal(exponent.denominator)
        )


def _exact_root(value: int, degree: int) -> int | None:
    # integer Newton iteration: exact at any size, where a float root gave up past 1000 bits and so called
    # (2**13000)**(1/2), which is 2**6500, irrational
    if value < 2:
        return value
    root = 1 << -(-value.bit_length() // degree)  # at least the real root
    while True:
        smaller = ((degree - 1) * root + value // root ** (degree - 1)) // degree
        if smaller >= root:
            break
        root = smaller
    return root if root**degree == value else None


def _factorial(value: Fraction) -> Fraction:
    if value.denominator != 1 or value < 0:
        raise CalculationRefused("I can only take the factorial of a whole number of 0 or more.")
    if value > MAX_FACTORIAL:
        raise CalculationRefused(f"I only take factorials up to {MAX_FACTORIAL}!.")
    return Fraction(math.factorial(value.numerator))


class _Evaluator:
    def __init__(self, values: dict[str, Fraction]) -> None:
        self.values = values
        self.inexact = False
        self.irrational = False

    def eval(self, node: ast.AST) -> Fraction:
        value = self._eval(node)
        if isinstance(value, Decimal):
            # a root of exact operands that has no exact value is irrational; one whose operands were already
            # rounded may not be (sqrt(2)**2 is 2), so it is only called rounded
            self.irrational = isinstance(node, ast.Expression) and not self.inexact
            self.inexact = True
            return Fraction(value)
        return value

    def _eval(self, node: ast.AST) -> Fraction | Decimal:
        if isinstance(node, ast.Expression):
            return self._eval(node.body)
        if isinstance(node, ast.Name) and node.id in self.values:
            return self.values[node.id]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
            operand = self.eval(node.operand)
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp):
            left, right = self.eval(node.left), self.eval(node.right)
            op = node.op
            if isinstance(op, ast.Add):
                return _check_size(left + right)
            if isinstance(op, ast.Sub):
                return _check_size(left - right)
            if isinstance(op, ast.Mult):
                return _check_size(left * right)
            if isinstance(op, (ast.Div, ast.FloorDiv, ast.Mod)):
                if right == 0:
                    raise CalculationRefused("That divides by zero, which has no answer.")
                if isinstance(op, ast.Div):
                    return _check_size(left / right)
                return _check_size(Fraction(left // right) if isinstance(op, ast.FloorDiv) else left % right)
            if isinstance(op, ast.Pow):
                return _power(left, right)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("sqrt", "_fact")
            and len(node.args) == 1
            and not node.keywords
        ):
            if node.func.id == "_fact":
                return _factorial(self.eval(node.args[0]))
            return _power(self.eval(node.args[0]), Fraction(1, 2))
        raise CalculationRefused("I can only do arithmetic on numbers (+ - * / ^ %, powers, parentheses, sqrt).")


def _parse(text: str) -> tuple[ast.Expression, dict[str, Fraction]]:
    if len(text) > MAX_EXPRESSION_CHARS:
        raise CalculationRefused(f"That is longer than {MAX_EXPRESSION_CHARS} characters; please shorten it.")
    if not re.search(r"\d", text):
        raise CalculationRefused(
            "I only do arithmetic, and I see no numbers in that. Try e.g. 'what is 17.5% of 2,480?'."
        )
    if re.search(r"\b0[xob][0-9a-f]", text.lower()):
        # the x of 0x10 was read as "times" (0 * 10): a silent wrong answer
        raise CalculationRefused("I only read decimal numbers, not hexadecimal, octal or binary ones.")
    normalised = _normalise(text)
    if not _ALLOWED_AFTER_NORMALISING.match(normalised):
        raise CalculationRefused("I only do arithmetic on numbers; part of that is not something I can calculate.")
    lifted = _lift_numbers(normalised)
    # after lifting, only our own names may remain: any other word means the text was not pure arithmetic
    leftover = set(re.findall(r"[a-z_][a-z0-9_]*", lifted.source)) - set(lifted.values) - {"sqrt", "_fact"}
    if leftover:
        raise CalculationRefused(
            "I only do arithmetic on numbers; I cannot interpret "
            + ", ".join(repr(word) for word in sorted(leftover))
            + "."
        )
    try:
        tree = ast.parse(lifted.source.strip(), mode="eval")
    except SyntaxError:
        raise CalculationRefused("I could not read that as arithmetic; please write it like '(2 + 3) * 4'.") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise CalculationRefused("That expression is too long for me; please split it up.")
    return tree, lifted.values


def calculate(text: str) -> Fraction:
    """The exact value of the arithmetic in ``text``; raises `CalculationRefused` (a `ValueError`) otherwise."""
    tree, values = _parse(text)
    return _evaluate(_Evaluator(values), tree)


def _evaluate(evaluator: _Evaluator, tree: ast.Expression) -> Fraction:
    try:
        return evaluator.eval(tree)
    except CalculationRefused:
        raise
    except (ArithmeticError, ValueError, RecursionError):
        # decimal overflow in an approximate root, a float conversion out of range, nesting too deep
        raise CalculationRefused("That is beyond the numbers I can compute exactly.") from None


def format_number(value: Fraction, *, max_decimals: int = 12) -> str:
    """An exact decimal when there is one (``434``, ``0.125``), else the fraction and a rounded decimal."""
    if value.denominator == 1:
        return str(value.numerator)
    denominator = value.denominator
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    if denominator == 1:
        with localcontext() as context:
            context.prec = max(_digits(value) * 2, 28)
            exact = Decimal(value.numerator) / Decimal(value.denominator)
        return format(exact, "f")
    # rounded in exact integer arithmetic: a decimal context of fixed precision cannot hold the whole part of
    # 10**30/3 plus twelve decimals (quantize raised InvalidOperation), and round() on a Fraction is exact
    scaled = round(value * 10**max_decimals)
    with localcontext() as context:
        context.prec = len(str(abs(scaled))) + 1  # enough that scaleb and normalize never round again
        approx = Decimal(scaled).scaleb(-max_decimals).normalize()
    return f"{value.numerator}/{value.denominator} ≈ {format(approx, 'f')}"


_PREVIOUS = re.compile(r"\b(?:the previous (?:result|answer)|the result|the answer|that|it|this)\b", re.IGNORECASE)
_PLAIN_RESULT = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*$")
_FRACTION_RESULT = re.compile(r"^\s*(-?\d+/\d+) ≈ ")


def _previous_result(context: AgentContext | None) -> str | None:
    """The session's last answer when it is one number as the calculator writes them (``434``, ``1/3 ≈ 0.333…``):
    what "that" means in a follow-up. A sentence or several numbers is no single result."""
    if context is None:
        return None
    last = next((turn.content for turn in reversed(context.history) if turn.role == "assistant"), None)
    if last is None:
        return None
    found = _PLAIN_RESULT.match(last) or _FRACTION_RESULT.match(last)
    return found.group(1) if found else None


def answer(query: str, context: AgentContext | None = None) -> str | AgentReply:
    """The calculator's reply to a query: the exact result as text, or a polite refusal that says why, an
    `AgentReply` marked declined. In a session, "that" (or "it", "the result") is the previous answer when that
    answer was a single number: "and 10% of that?" after 434 is 43.4."""
    previous = _previous_result(context)
    if previous is not None:
        query = _PREVIOUS.sub(f"({previous})", query)
    try:
        tree, values = _parse(query)
        evaluator = _Evaluator(values)
        value = _evaluate(evaluator, tree)
    except CalculationRefused as refusal:
        # declined, so that the aggregators never count the refusal as an answer beside one that did answer
        return AgentReply(answer=f"Sorry, I can't calculate that. {refusal}", declined=True)
    text = format_number(value)
    if evaluator.inexact:
        with localcontext() as decimal_context:  # not ``context``: that is the agent's, above
            decimal_context.prec = 30
            approx = Decimal(value.numerator) / Decimal(value.denominator)
        why = "; the exact value is irrational" if evaluator.irrational else ""
        return f"≈ {format(approx.normalize(), 'f')} (rounded to 30 significant digits{why})"
    return text


CALCULATOR_CARD = AgentCard(
    id="calculator",
    name="Calculator",
    description=(
        "Exact arithmetic on numbers: addition, subtraction, multiplication, division, percentages "
        '("17.5% of 2,480"), powers, square roots and parentheses, with thousands separators and words like '
        "plus, minus, times, divided by. Results are exact fractions or decimals, never floating-point "
        "approximations. Does not do algebra, units, dates or word problems that need reasoning."
    ),
    skills=("arithmetic", "percentages", "exact calculation"),
    examples=(
        "what is 17.5% of 2,480?",
        "calculate (1,250 + 380) * 12",
        "what is 2 to the power of 64?",
        "how much is 7 divided by 8?",
        "what is 15 percent of 260?",
        "square root of 144",
    ),
    backend="function",
    function="orchestra.agents.calculator:answer",
)
"""The calculator's card: routers read its description and examples."""
