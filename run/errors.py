"""A user's mistake ends the command in a few lines; a bug keeps its traceback."""

from __future__ import annotations

import os
import sys
from argparse import ArgumentError
from collections.abc import Callable
from typing import Any

from lightning.fabric.utilities.exceptions import MisconfigurationException

MAX_LINES = 6


class UserError(Exception):
    """A mistake in what the user gave (an option, a file, the environment); the message says what
    to change. Checks raise it where the input enters."""


def user_message(error: BaseException | None) -> str | None:
    """The message of the mistake behind ``error``, None when it is not a user's mistake. A mistake
    may arrive wrapped: by jsonargparse, whose nested errors name the outer option first and the
    innermost problem last, or by a DataLoader worker, with the worker's traceback as its message."""
    chain = []
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    mistakes = [e for e in chain if isinstance(e, (UserError, ArgumentError, MisconfigurationException))]
    if not mistakes:
        return None
    text = str(mistakes[-1]).strip()
    outer = str(mistakes[0]).strip().splitlines()[0]
    if isinstance(mistakes[0], ArgumentError) and not isinstance(mistakes[-1], UserError) and outer not in text:
        text = f"{outer} {text}"
    return text.splitlines()[-1].split(": ", 1)[-1] if "Original Traceback" in text else text


def main(command: Callable[[], Any]) -> None:
    """Run ``command``; a user's mistake is printed in at most ``MAX_LINES`` lines and exits 2
    (``CLI_DEBUG=1`` shows its traceback too)."""
    try:
        command()
    except Exception as error:
        message = user_message(error)
        if message is None or os.environ.get("CLI_DEBUG"):
            raise
        lines = [line for line in message.splitlines() if line.strip()]
        print("error: " + "\n  ".join(line.strip() for line in lines[:MAX_LINES]), file=sys.stderr)
        sys.exit(2)
