"""The one base class for mistakes a user can fix (a flag, a file, a budget, a storage URL).

The CLI prints these as one `error:` line; anything else is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """Bad input the user can fix; the message is one line saying what and how."""
