"""A griffe extension: a Google-style `Example:` section is an examples section, as `Examples:` is.

Google style (the Napoleon reference) accepts both `Example:` and `Examples:` as the heading of a
section of doctests. griffe's Google parser knows only `Examples:`; it reads `Example:` as an
admonition titled "Example" and renders its body as Markdown, where every `>>>` line starts a
blockquote, so a doctest is shown as three nested quotes instead of code. This extension renames the
singular heading before griffe parses the docstring, so both spellings render as code blocks.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

SINGULAR = re.compile(r"^(?P<indent>[ \t]*)Example:[ \t]*$", re.M)


class GoogleExampleSections(griffe.Extension):
    """Rewrite `Example:` section headings to `Examples:` in every docstring griffe loads."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        docstring = getattr(obj, "docstring", None)
        if docstring is not None and "Example:" in docstring.value:
            docstring.value = SINGULAR.sub(r"\g<indent>Examples:", docstring.value)
