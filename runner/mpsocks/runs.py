"""``mpsocks-run runs list|show|replay``: the run folders of past runs."""

from __future__ import annotations


def add_parser(verbs) -> None:
    """Register the ``runs`` verb on the subparsers object VERBS."""
    del verbs  # filled in by the run-history work
