"""The keys of the user's manual order (``position``): strings whose text order is the order of the tasks.

A key is an 18-digit integer part, fixed width so that comparing the strings compares the numbers, and an optional
fraction (decimal digits without trailing zeros) for a task placed between two whose integer parts are adjacent:
``"499999999999998976"`` < ``"4999999999999989765"`` < ``"499999999999998977"``. Moving a task rewrites its key
alone; :func:`key_between` gives the shortest key between two neighbours, and when keys grow past
:data:`MAX_KEY_LENGTH` the owner's keys are spread out again (app/tasks/repository.py), :data:`GAP` apart.
"""

from __future__ import annotations

from decimal import ROUND_FLOOR, Context, Decimal, localcontext

from app.models import FIRST_POSITION, POSITION_MAX_LENGTH

__all__ = ("GAP", "INTEGER_DIGITS", "MAX_KEY_LENGTH", "key_between", "key_of")

INTEGER_DIGITS = 18
#: Between neighbouring tasks after a create or a rebalance (the insert trigger of migration 0005 uses the same).
GAP = 1024
#: Keys longer than this are spread out again before a move: well inside the column, and a few dozen moves into
#: one gap at least (each halving costs a digit every ~3 moves).
MAX_KEY_LENGTH = 40
_CONTEXT = Context(prec=POSITION_MAX_LENGTH + 10)


def key_of(number: Decimal | int) -> str:
    """The key of a non-negative position number."""
    with localcontext(_CONTEXT):  # exact: the default 28 digits cannot hold 18 integer digits and a fraction
        value = Decimal(number)
        whole = int(value)
        fraction = format(value - whole, "f").partition(".")[2].rstrip("0") if value != whole else ""
    return f"{whole:0{INTEGER_DIGITS}d}{fraction}"


def _number(key: str) -> Decimal:
    whole, fraction = key[:INTEGER_DIGITS], key[INTEGER_DIGITS:]
    return Decimal(f"{int(whole)}.{fraction or '0'}")


def key_between(before: str | None, after: str | None) -> str:
    """The shortest key after ``before`` and before ``after`` (``None``: no neighbour on that side)."""
    if before is None and after is None:
        return key_of(FIRST_POSITION)
    if before is None:
        return key_of(int(_number(after or "")) - GAP)
    if after is None:
        return key_of(int(_number(before)) + GAP)
    low, high = _number(before), _number(after)
    if not low < high:
        raise ValueError(f"{before!r} is not before {after!r}")
    middle = _CONTEXT.divide(_CONTEXT.add(low, high), 2)
    for digits in range(POSITION_MAX_LENGTH):
        candidate = middle.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_FLOOR, context=_CONTEXT)
        if low < candidate < high:  # (comparisons are exact whatever the context)
            return key_of(candidate)
    raise ValueError(f"no key fits between {before!r} and {after!r}")  # pragma: no cover - digits always suffice
