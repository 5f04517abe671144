"""Rendering of test results as one sentence for the notebooks.

- ``number(x, digits)``  a fixed-point number with a typographic minus sign (``−``, U+2212);
  a value that rounds to zero is written without a sign (``0.0``, never ``−0.0``)
- ``p_text(p, alpha)``   ``p = 0.14`` (two significant digits, more where rounding would cross
  ``alpha``), ``p < 0.001`` below 0.001, ``p = 0`` for the exact zero of a spread-free design,
  ``p = n/a`` for NaN
- ``sentence(result)``   the result's own ``sentence`` method, so that a notebook can render any
  result of :mod:`gradkit.stats` with one call
"""

from __future__ import annotations

import math

__all__ = ["MINUS", "number", "p_text", "sentence", "with_unit"]

MINUS = "\u2212"


def number(x: float, digits: int = 1) -> str:
    """``x`` with ``digits`` decimals and a typographic minus; ``n/a`` for NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    text = f"{x:.{digits}f}"
    if float(text) == 0.0:
        text = f"{0.0:.{digits}f}"
    return text.replace("-", MINUS)


def with_unit(text: str, unit: str) -> str:
    """``text`` followed by ``unit`` (one space between), or ``text`` alone when unit is empty."""
    return f"{text} {unit}" if unit else text


def p_text(p: float, alpha: float | None = None) -> str:
    """A p-value as it appears in a sentence: ``p = 0.14``, ``p < 0.001``, ``p = 0``.

    With ``alpha`` given, digits are added until the printed value lies on the same side of
    ``alpha`` as ``p`` (``p = 0.0496`` at ``α = 0.05`` prints ``0.0496``, not ``0.05``).
    """
    if p is None or math.isnan(p):
        return "p = n/a"
    if p == 0.0:
        return "p = 0"
    if p < 0.001 and (alpha is None or alpha > 0.001):
        return "p < 0.001"
    for sig in range(2, 8):
        text = f"{p:.{sig}g}"
        if alpha is None or (float(text) < alpha) == (p < alpha):
            break
    return f"p = {text}"


def sentence(result, digits: int | None = None, scale: float | None = None, **options) -> str:
    """One sentence for any result of :mod:`gradkit.stats`.

    Calls ``result.sentence(digits=..., scale=..., **options)``, passing only the arguments that
    are given, so that each result type keeps its own defaults (a :class:`PairedComparison`
    renders at ``scale=1``, a :class:`ChanceResult` in percent).
    """
    method = getattr(result, "sentence", None)
    if method is None:
        raise TypeError(f"sentence() needs a gradkit.stats result, got {type(result).__name__}")
    if digits is not None:
        options["digits"] = digits
    if scale is not None:
        options["scale"] = scale
    return method(**options)
