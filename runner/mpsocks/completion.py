"""``mpsocks-run completion bash|zsh|fish`` and ``mpsocks-run man``: generated from the parser."""

from __future__ import annotations


def add_parser(verbs) -> None:
    """Register the ``completion`` and ``man`` verbs on the subparsers object VERBS."""
    del verbs  # filled in by the completion work
