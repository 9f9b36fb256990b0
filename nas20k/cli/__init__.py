"""The command line: the only typer code, on top of every other wing."""

from nas20k.cli.app import app, main

__all__ = ["app", "main"]
