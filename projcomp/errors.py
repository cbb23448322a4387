"""The base of every projcomp error.

Every exception class the package defines derives from `ProjcompError`, so a front end (the app,
a CLI) can show exactly those as messages to the user -- they name the bad input, e.g.
`locations[2]: (1.4, 0.5) must be ...` -- and treat anything else as a bug. The concrete classes
stay in the module of their concept (CompositionError in compose.py, CheckpointError in
checkpoint.py, ...) and keep `ValueError` as a second base, so existing `except ValueError`
clauses keep working.
"""

from __future__ import annotations

__all__ = ["ProjcompError"]


class ProjcompError(Exception):
    """A user-facing error: bad input, a missing or unusable file; the message says which."""
