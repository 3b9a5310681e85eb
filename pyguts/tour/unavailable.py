"""How a section says that a tool it needs is missing here: :func:`skip`, and the :class:`StepUnavailable` it raises."""

from __future__ import annotations

from typing import NoReturn


class StepUnavailable(SystemExit):
    """A tool a section needs is missing here: ``why`` it cannot run and ``fix``, what to install or set.

    A ``SystemExit`` with status 0: a script run on its own ends there successfully (a missing
    optional tool is not a failure), and the tour counts the step unavailable and goes on.
    """

    def __init__(self, why: str, fix: str) -> None:
        super().__init__(0)
        self.why, self.fix = why, fix

    def __str__(self) -> str:
        return f"{self.why} ({self.fix})"


def skip(why: str, fix: str) -> NoReturn:
    """Print ``skipped: why (fix)`` and end the section with :class:`StepUnavailable`.

    >>> try:
    ...     skip("Cython is not installed", "pip install cython")
    ... except StepUnavailable as exc:
    ...     print(f"status {exc.code}; fix: {exc.fix}")
    skipped: Cython is not installed (pip install cython)
    status 0; fix: pip install cython
    """
    print(f"skipped: {why} ({fix})", flush=True)
    raise StepUnavailable(why, fix)
