"""One line that says what failed: from an exception's text or from the error Dagster recorded for a step."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dagster._utils.error import SerializableErrorInfo


def first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


# "some.module.SomeError: what went wrong", as Python formats an exception's last line (the text may start on
# the next line, as in the aggregated errors of Great Expectations)
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*([A-Za-z_]\w*):(?: (.*))?$")


def error_line(error: SerializableErrorInfo | None) -> str:
    """The first line that says what went wrong: that of the first error under Dagster's own wrappers (what
    the project's code raised), its class without the module path; a ``dg.Failure``'s description alone."""
    while error is not None and error.cause is not None and (error.cls_name or "").startswith("Dagster"):
        error = error.cause
    if error is None:
        return "failed"
    lines = [line.strip() for line in error.message.splitlines() if line.strip()]
    if not lines:
        return error.cls_name or "failed"
    match = _EXCEPTION_LINE.match(lines[0])
    if match is None:
        return lines[0]
    cls, text = match[1], match[2] or (lines[1] if len(lines) > 1 else "")
    if cls == "Failure" and text:
        return text
    return f"{cls}: {text}" if text else cls
