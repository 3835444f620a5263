"""Feedback HTML that cannot run anything a submission put into it.

A graded notebook holds what the student's code displayed (HTML, JavaScript, widgets, SVG,
Markdown, with whatever metadata the kernel sent) and the markdown the student wrote (the
Think! answers). nbconvert renders all of it live, and nbgrader's ``feedback`` template
renders markdown cells without even nbconvert's optional ``clean_html``. The feedback page
is opened by the instructor and the student, so every submission is treated as an attack
on their browser. Three layers, so that a gap in one is not a hole in the page:

1. :class:`InertOutputs` (runs last, inside the exporter) rebuilds every output from the
   fields the template needs, keeps only safe MIME types and cleans HTML ones;
2. :class:`SafeFeedbackExporter` cleans every piece of rendered Markdown (cells, outputs,
   comments) and uses the same allowlist for nbconvert's ``clean_html`` filter;
3. the finished page gets a Content-Security-Policy ``<meta>`` first in ``<head>`` that
   allows no script, frame, plugin, form or remote load, after a last pass over the whole
   document that drops every script, frame, form, ``on*`` handler and script URL.

The page therefore runs no JavaScript at all, not even nbconvert's MathJax loader: LaTeX
in markdown shows as the raw ``$...$`` source. That is the price of a page that cannot run
a student's script, and it is readable.

Configured once in ``grader/nbgrader_config.py`` as ``GenerateFeedback.exporter_class``,
so it applies to ``make grade`` and to a plain ``nbgrader generate_feedback`` alike.
"""

from __future__ import annotations

import re
from html import unescape
from typing import Any

import bleach
from bleach.css_sanitizer import CSSSanitizer
from bs4 import BeautifulSoup
from jinja2 import pass_context
from nbconvert.exporters import HTMLExporter
from nbconvert.preprocessors.sanitize import SanitizeHTML
from nbformat.notebooknode import NotebookNode, from_dict
from traitlets import Set, default, validate

# Scripts, plugins, frames, forms, <base> and remote loads are all refused; images only as
# data: URIs (the PNG figures are inlined); inline <style> is needed by nbconvert's CSS.
# (frame-ancestors and sandbox would be ignored in a <meta> policy, so they are not set.)
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'none'; object-src 'none'; "
                           "base-uri 'none'; form-action 'none'; frame-src 'none'; "
                           "img-src data:; style-src 'unsafe-inline'")

# What rendered Markdown (headings, lists, tables, highlighted code, images) and ordinary
# HTML outputs (pandas tables) need; everything else is shown as escaped text, so the
# reader sees what the submission tried.
ALLOWED_TAGS = frozenset({
    "a", "abbr", "b", "blockquote", "br", "caption", "code", "col", "colgroup", "dd", "del",
    "details", "div", "dl", "dt", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img",
    "ins", "kbd", "li", "mark", "ol", "p", "pre", "q", "s", "samp", "small", "span",
    "strong", "sub", "summary", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr",
    "u", "ul", "var",
})
_ATTRIBUTES = {
    "*": {"class", "title"},  # class: pygments' highlighting of code blocks
    "a": {"href"},
    "img": {"src", "alt", "width", "height"},
    "td": {"colspan", "rowspan", "style"},  # style: Markdown table alignment only (below)
    "th": {"colspan", "rowspan", "style"},
    "ol": {"start"},
    **{f"h{level}": {"id"} for level in range(1, 7)},  # nbconvert's heading anchors
}
# Images only as inline raster data: never a remote URL (a tracking beacon), never SVG or
# HTML in a data: URI.
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]*")
_IMAGE_DATA_URI = re.compile(r"data:image/(?:png|jpeg|gif);base64,[a-z0-9+/=\s]*", re.I)
# What browsers ignore inside a URL's scheme (entities are decoded before this).
_URL_NOISE = re.compile(r"[`\x00-\x20\x7f-\xa0\s]+")
_SCRIPT_SCHEMES = ("javascript:", "vbscript:", "livescript:", "data:")


def _normalised_url(value: str) -> str:
    """``value`` as a browser reads a URL's scheme: entities decoded, noise dropped, lower."""
    return _URL_NOISE.sub("", unescape(value)).lower()


def _allowed_attribute(tag: str, name: str, value: str) -> bool:
    """bleach's attribute filter: the allowlist above, plus per-attribute value rules.

    bleach then also drops any href/src whose scheme is not in its protocol list.
    """
    if name not in _ATTRIBUTES["*"] and name not in _ATTRIBUTES.get(tag, ()):
        return False
    if name == "src":
        return bool(_IMAGE_DATA_URI.fullmatch(value.strip()))
    if name == "href":  # "data" is in the protocol list for img src only
        return not _normalised_url(value).startswith(_SCRIPT_SCHEMES)
    return True


_CLEANER = bleach.Cleaner(
    tags=ALLOWED_TAGS, attributes=_allowed_attribute,
    protocols={"http", "https", "mailto", "data"}, strip=False, strip_comments=True,
    css_sanitizer=CSSSanitizer(allowed_css_properties={"text-align"}))


def clean_html(html: Any) -> str:
    """``html`` (str or bytes) reduced to the allowlist above; anything else escaped."""
    return _CLEANER.clean(html.decode() if isinstance(html, bytes) else str(html))


class InertOutputs(SanitizeHTML):
    """nbconvert's ``SanitizeHTML`` made strict for a page built from untrusted outputs.

    Compared with nbconvert's: no ``application/json``, and every output is *rebuilt*
    from the fields the template reads, so kernel-sent metadata (``filenames``,
    ``isolated``, a ``width`` of ``1 onerror=...`` which nbconvert writes unquoted into
    ``<img>``) and odd execution counts cannot reach the page. ``text/html`` and
    ``text/markdown`` are cleaned with :func:`clean_html`. JavaScript, widget views,
    SVG and every unknown type are dropped, so their ``text/plain`` fallback shows.

    Markdown *cells* are left to :class:`SafeFeedbackExporter`, which cleans them after
    rendering: cleaning Markdown source is not enough (``[x](javascript:...)`` is not
    HTML) and mangles ``<`` in maths and code.
    """

    safe_output_keys = Set({"text/plain", "text/latex", "image/png", "image/jpeg"},
                           help="MIME types rendered as they are (the template escapes "
                                "text; images are base64 data URIs)").tag(config=True)
    sanitized_output_types = Set({"text/html", "text/markdown"},
                                 help="MIME types kept after cleaning").tag(config=True)

    def preprocess(self, nb: NotebookNode, resources: dict) -> tuple[NotebookNode, dict]:
        nb.metadata.pop("widgets", None)  # widget state is rendered as a <script> block
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell: NotebookNode, resources: dict, index: int):
        if cell.cell_type == "code":
            cell.outputs = [clean for output in cell.get("outputs", [])
                            if (clean := self.inert_output(output)) is not None]
            cell.execution_count = _count(cell.get("execution_count"))
        elif cell.cell_type == "raw":
            cell.source = clean_html(cell.source)
        elif cell.cell_type == "markdown" and isinstance(cell.get("attachments"), dict):
            # rendered as data:<mime> images: raster images only; an emptied bundle keeps
            # an empty PNG, since nbconvert fails the whole page on a missing attachment
            cell.attachments = {name: _raster_images(bundle)
                                for name, bundle in cell.attachments.items()}
        grading = cell.metadata.get("nbgrader")
        if isinstance(grading, dict) and "grade_id" in grading:
            # the feedback template writes it unescaped into <a name="..."> and href="#..."
            grading["grade_id"] = re.sub(r"[^\w-]", "_", str(grading["grade_id"]))
        return cell, resources

    def inert_output(self, output: NotebookNode) -> NotebookNode | None:
        """A new output with only what rendering needs, or None if nothing safe is left."""
        kind = output.get("output_type")
        if kind == "stream":  # the template escapes text
            return from_dict({"output_type": "stream", "text": _text(output.get("text")),
                              "name": "stderr" if output.get("name") == "stderr"
                              else "stdout"})
        if kind == "error":  # the check messages live here; escaped by the template
            return from_dict({"output_type": "error", "ename": _text(output.get("ename")),
                              "evalue": _text(output.get("evalue")),
                              "traceback": [_text(line) for line in
                                            output.get("traceback") or []]})
        if kind not in ("display_data", "execute_result"):
            return None
        data = {}
        for mime, value in (output.get("data") or {}).items():
            if mime in self.safe_output_keys:
                data[mime] = _text(value)
            elif mime in self.sanitized_output_types:
                data[mime] = self.sanitize_html_tags(_text(value))
        data = {mime: value for mime, value in data.items()
                if not mime.startswith("image/") or _BASE64.fullmatch(value)}
        if not data:
            return None
        clean = {"output_type": kind, "data": data, "metadata": _image_sizes(output)}
        if kind == "execute_result":
            clean["execution_count"] = _count(output.get("execution_count"))
        return from_dict(clean)

    def sanitize_html_tags(self, html_str: str) -> str:
        """One allowlist for every path (outputs, Markdown, nbconvert's ``clean_html``)."""
        return clean_html(html_str)


def _text(value: Any) -> str:
    """A notebook string field (str or list of lines, as nbformat allows) as one str."""
    if isinstance(value, list):
        return "".join(str(part) for part in value)
    return "" if value is None else str(value)


def _count(value: Any) -> int | None:
    """An execution count as the int the template expects (or None)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _raster_images(bundle: Any) -> dict:
    """A markdown attachment's PNG/JPEG data (an empty PNG if it has none)."""
    kept = {mime: _text(data) for mime, data in (bundle if isinstance(bundle, dict) else {}
                                                 ).items()
            if mime in ("image/png", "image/jpeg")
            and _BASE64.fullmatch(_text(data))}
    return kept or {"image/png": ""}


def _image_sizes(output: NotebookNode) -> dict:
    """The only output metadata kept: numeric width/height of a PNG or JPEG."""
    sizes = {}
    for mime in ("image/png", "image/jpeg"):
        given = (output.get("metadata") or {}).get(mime)
        if isinstance(given, dict):
            kept = {key: given[key] for key in ("width", "height")
                    if isinstance(given.get(key), (int, float))
                    and not isinstance(given.get(key), bool)}
            if kept:
                sizes[mime] = kept
    return sizes


# Elements the feedback page never needs and a submission must never get live.
_FORBIDDEN_ELEMENTS = ["script", "noscript", "iframe", "frame", "frameset", "object",
                       "embed", "applet", "portal", "base", "form", "input", "button",
                       "textarea", "select", "link", "svg", "math", "template"]


def make_document_inert(html: str) -> str:
    """The whole page without scripts, frames, forms, handlers or script URLs, plus the CSP.

    The last layer: whatever a template path let through (nbconvert's own MathJax loader
    included) is removed here, and the policy stops anything that got past both.
    """
    soup = BeautifulSoup(html, features="html.parser")  # what nbconvert itself parses with
    for element in soup.find_all(_FORBIDDEN_ELEMENTS):
        element.decompose()
    for meta in soup.find_all("meta"):  # refresh, cookies, a competing policy
        if any(name.lower() == "http-equiv" for name in meta.attrs):
            meta.decompose()
    for element in soup.find_all(True):
        for name, value in list(element.attrs.items()):
            value = " ".join(value) if isinstance(value, list) else str(value)
            url = _normalised_url(value)
            if name.lower().startswith("on") or name.lower() in ("srcdoc", "formaction") or (
                    url.startswith(_SCRIPT_SCHEMES)
                    and not (element.name == "img" and name == "src"
                             and _IMAGE_DATA_URI.fullmatch(value.strip()))):
                del element.attrs[name]
    if soup.head is None:
        head = soup.new_tag("head")
        (soup.html or soup).insert(0, head)
    policy = soup.new_tag("meta", attrs={"http-equiv": "Content-Security-Policy",
                                         "content": CONTENT_SECURITY_POLICY})
    soup.head.insert(0, policy)  # first in <head>: before anything it has to govern
    return str(soup)


_GENERIC_LABELS = {"Test cell": "", "Written response": "Think! ", "Coding free-response": "",
                   "Task": ""}


def name_exercises(html: str) -> str:
    """The page's table of contents names each exercise ("TransformerBlock (Score: 0.0 /
    3.0)", "Think! why attention generalises") instead of nbgrader's generic labels."""
    soup = BeautifulSoup(html, features="html.parser")
    for link in soup.find_all("a", href=True):
        label = link.get_text()
        if label in _GENERIC_LABELS and str(link["href"]).startswith("#"):
            grade_id = str(link["href"])[1:]
            name = grade_id.removeprefix("test_").removeprefix("think_")
            if grade_id.startswith("think_"):
                name = name.replace("_", " ")
            link.string = _GENERIC_LABELS[label] + name
    return str(soup)


class SafeFeedbackExporter(HTMLExporter):
    """nbgrader's feedback exporter (an ``HTMLExporter``) with the three layers above.

    nbgrader's ``GenerateFeedback`` still chooses the template (``feedback``) and its
    preprocessors (grades, CSS, hidden tests); this class sanitises whatever they leave.
    """

    @default("sanitize_html")
    def _sanitize_html_default(self) -> bool:
        return True  # nbconvert's templates then skip JS/widget blocks and clean HTML

    @validate("embed_images")
    def _never_embed_files(self, proposal: Any) -> bool:
        # embedding reads the files a student's markdown names (or a kernel linked) into
        # the page: never in feedback
        if proposal["value"]:
            self.log.warning("SafeFeedbackExporter ignores embed_images=True")
        return False

    def _init_resources(self, resources: dict | None) -> dict:
        resources = super()._init_resources(resources)
        # whatever the configuration says: no raw JS/widget blocks, SVG never inlined
        resources["should_sanitize_html"] = True
        resources["should_not_encode_svg"] = False
        return resources

    def default_filters(self):
        for name, function in super().default_filters():
            yield name, clean_html if name == "clean_html" else function

    @pass_context
    def markdown2html(self, context: Any, source: str) -> str:
        """Rendered Markdown, cleaned (nbgrader's template does not clean markdown cells)."""
        return clean_html(super().markdown2html(context, source))

    def _preprocess(self, nb: NotebookNode, resources: dict) -> tuple[NotebookNode, dict]:
        nb, resources = super()._preprocess(nb, resources)
        # last, so that no configured preprocessor can add anything after the cleaning
        return InertOutputs(parent=self).preprocess(nb, resources)

    def from_notebook_node(self, nb: NotebookNode, resources: dict | None = None,
                           **kw: Any) -> tuple[str, dict]:
        html, resources = super().from_notebook_node(nb, resources, **kw)
        return make_document_inert(name_exercises(html)), resources
