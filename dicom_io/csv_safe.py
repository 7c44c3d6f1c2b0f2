"""CSV cells a spreadsheet would evaluate, neutralised (OWASP's rule for CSV injection).

Header values reach the CSV outputs (AccessionNumber, PatientID with ``patient_id = "include"``,
reasons, paths). A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is
a formula to Excel, LibreOffice and Google Sheets (``=cmd|' /C calc'!A0``); OWASP's rule is to
prefix such a cell with a single quote, which the spreadsheet shows and does not evaluate.
Numbers written by the tool itself (a negative score) are not strings and pass unchanged.
"""

from __future__ import annotations

from typing import Any

FORMULA_STARTS: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """``value``, or ``"'" + value`` when it is text a spreadsheet would evaluate."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value
