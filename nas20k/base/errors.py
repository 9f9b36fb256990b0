"""The one base class for mistakes a user can fix (a flag, a file, a budget, a storage URL), and the one check of a
JSON object against the dataclass it describes.

The CLI prints these as one `error:` line; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any


class UserError(ValueError):
    """Bad input the user can fix; the message is one line saying what and how."""


def known_fields(cls: type, d: Any, what: str, error: type[UserError]) -> dict:
    """`d` if it is a JSON object naming only fields of the dataclass `cls` (a spec, a recipe), else `error` in one
    line: a typo in a hand-written file must not be silently dropped."""
    if not isinstance(d, dict):
        raise error(f"a {what} must be a JSON object, got {type(d).__name__}")
    unknown = set(d) - {f.name for f in fields(cls)}
    if unknown:
        raise error(f"unknown {what} field(s): {', '.join(sorted(unknown))}")
    return d
