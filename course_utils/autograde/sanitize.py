"""No active content from a notebook reaches a browser: HTML, Markdown and scripts made harmless.

A student's notebook can show anything in a browser that renders it: HTML with ``onerror``
handlers, ``<script>``, ``javascript:`` links, SVG with scripts, JavaScript outputs, widget
state. The Formgrader's manual-grading page and the feedback pages render autograded notebooks
as HTML in the instructor's (and the student's) browser session, where a script could call the
Formgrader's API. ``SanitizeNotebook`` (nbgrader's process) cleans every cell before the
autograded notebook is written and again before a feedback page is made:

- outputs keep only plain text, images (PNG, JPEG, GIF, checked to be base64), HTML cleaned by
  `nh3` (the maintained HTML sanitiser, an allow-list of tags, attributes, URL schemes and
  inline CSS properties), Markdown rendered to cleaned HTML, and the graders' report data;
  JavaScript, SVG, LaTeX, widgets and any other type are replaced by a line saying what was
  removed; output metadata (image sizes, file names) is dropped;
- a Markdown cell with raw HTML or a link that is not http(s), mail or local is replaced by
  its rendering as cleaned HTML; a raw HTML cell is cleaned; attachments keep only images.

The graders' reports stay as they are: their HTML uses only allowed tags and inline styles.

Example:
    >>> clean_html('<b onclick="steal()">hi</b><script>steal()</script>')
    '<b>hi</b>'
    >>> clean_markdown("[notes](javascript:steal())")
    '<p><a rel="noopener noreferrer">notes</a></p>\\n'
    >>> clean_markdown("**Plain** markdown stays")
    '**Plain** markdown stays'
"""

from __future__ import annotations

import re
from typing import Any

import mistune
import nh3
from nbconvert.exporters.exporter import ResourcesDict
from nbconvert.filters.markdown_mistune import markdown2html_mistune
from nbformat import NotebookNode
from nbgrader.preprocessors import NbGraderPreprocessor

from course_utils.protocol import REPORT_MIME

# Inline CSS properties an output may set: none of them loads anything (no url()).
_STYLE_PROPERTIES = {
    "border", "border-left", "border-right", "border-top", "border-bottom", "border-color",
    "border-style", "border-width", "border-collapse", "border-radius", "padding",
    "padding-left", "padding-right", "padding-top", "padding-bottom", "margin", "margin-left",
    "margin-right", "margin-top", "margin-bottom", "color", "background-color", "font-weight",
    "font-style", "font-size", "font-family", "text-align", "vertical-align", "white-space",
    "text-decoration", "display", "width", "max-width", "height", "max-height",
}
_ATTRIBUTES = {**nh3.ALLOWED_ATTRIBUTES,
               "*": set(nh3.ALLOWED_ATTRIBUTES.get("*", set())) | {"style", "title"}}
# Link targets that stay: the web, mail, and places in the page or beside it.
_URL_SCHEMES = {"http", "https", "mailto"}
# (No entity, no colon but the scheme's: a browser decodes "java&#9;script:" to a script.)
_SAFE_URL = re.compile(r"^(?:(?:https?:|mailto:)[^\s\"'<>&]*|[\w./~#%?=+-]*)$", re.IGNORECASE)
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]*")
_IMAGES = ("image/png", "image/jpeg", "image/gif")
_TEXT = "text/plain"
_parse_markdown = mistune.create_markdown(renderer=None)


def clean_html(html: str) -> str:
    """``html`` with only allowed tags, attributes, URL schemes and CSS properties."""
    return nh3.clean(html, attributes=_ATTRIBUTES, url_schemes=_URL_SCHEMES,
                     filter_style_properties=_STYLE_PROPERTIES)


def _active(tokens: list[dict[str, Any]]) -> bool:
    """Whether Markdown tokens hold raw HTML or a link or image to an unsafe URL."""
    for token in tokens:
        if token.get("type") in ("block_html", "inline_html"):
            return True
        url = token.get("attrs", {}).get("url")
        if url is not None and not _SAFE_URL.match(str(url).strip()):
            return True
        if _active(token.get("children", [])):
            return True
    return False


def clean_markdown(source: str) -> str:
    """``source`` itself when it holds no raw HTML and no unsafe link, else its rendering as
    cleaned HTML (which Markdown shows as it is)."""
    if not _active(_parse_markdown(source)):
        return source
    return clean_html(markdown2html_mistune(source))


def _is_base64(value: Any) -> bool:
    return isinstance(value, str) and _BASE64.fullmatch(value) is not None


def clean_data(data: dict[str, Any]) -> NotebookNode:
    """An output's MIME bundle with only types a browser shows without running anything."""
    kept: dict[str, Any] = {}
    for mime, value in data.items():
        if mime in (_TEXT, REPORT_MIME) or mime in _IMAGES and _is_base64(value):
            kept[mime] = value
        elif mime == "text/html":
            kept[mime] = clean_html("".join(value) if isinstance(value, list) else str(value))
        elif mime == "text/markdown" and "text/html" not in data:
            markdown = "".join(value) if isinstance(value, list) else str(value)
            kept["text/html"] = clean_html(markdown2html_mistune(markdown))
    removed = sorted(set(data) - set(kept) - {"text/markdown"})
    if removed and not set(kept) - {REPORT_MIME}:
        kept[_TEXT] = f"[removed: an output of type {', '.join(removed)}, which could run " \
                      "code in a browser]"
    return NotebookNode(kept)


def sanitize_cell(cell: NotebookNode) -> None:
    """Cleans one cell in place (see the module's doc)."""
    if cell.cell_type == "markdown":
        cell.source = clean_markdown(cell.source)
    elif cell.cell_type == "raw" and "html" in str(cell.metadata.get("format", "")) + str(
            cell.metadata.get("raw_mimetype", "")):
        cell.source = clean_html(cell.source)
    if "attachments" in cell:
        cell.attachments = NotebookNode({
            name: NotebookNode({mime: value for mime, value in bundle.items()
                                if mime in _IMAGES and _is_base64(value)})
            for name, bundle in cell.attachments.items()})
    for output in cell.get("outputs", []):
        if "data" in output:
            output.data = clean_data(output.data)
        if "metadata" in output:
            output.metadata = NotebookNode()


class SanitizeNotebook(NbGraderPreprocessor):
    """Makes every cell's content and outputs safe to render in a browser."""

    def preprocess_cell(self, cell: NotebookNode, resources: ResourcesDict,
                        cell_index: int) -> tuple[NotebookNode, ResourcesDict]:
        sanitize_cell(cell)
        return cell, resources
