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
Layers 1 and 2 live in :class:`InertHTMLExporter`, which formgrader's exporter
(``pipeline.grading.safe_formgrader``) shares; only the last pass differs, since formgrader's page
runs formgrader's own scripts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from html import escape, unescape
from typing import Any

import bleach
from bleach.css_sanitizer import CSSSanitizer
from bs4 import BeautifulSoup, Tag
from jinja2 import pass_context
from nbconvert.exporters import HTMLExporter
from nbconvert.preprocessors.sanitize import SanitizeHTML
from nbformat.notebooknode import NotebookNode, from_dict
from pygments.token import STANDARD_TYPES
from traitlets import Float, Set, default, validate

from helpers.syllabus import grade_column
from pipeline.grading import bounded_markup
from pipeline.grading.bounded_markup import TooComplex

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
    "*": {"class", "title"},  # class: pygments' highlighting of code blocks (below)
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


# The classes highlighted code carries (pygments' token classes and nbconvert's wrapper)
# and pandas' tables, and no other: a page's own scripts act on classes (formgrader gives full credit for a
# click on anything of class "full-credit"; Bootstrap turns "modal-backdrop" into a layer
# over the whole page), so a submission may not choose them.
_CODE_CLASSES = frozenset(STANDARD_TYPES.values()) - {""} | {"highlight", "hll", "dataframe"}
_CODE_CLASS_PREFIXES = ("hl-", "language-")


def _code_class(value: str) -> bool:
    """Whether every class in ``value`` is one highlighted code carries."""
    return all(token in _CODE_CLASSES or token.startswith(_CODE_CLASS_PREFIXES)
               and token[token.index("-") + 1:].isalnum() for token in value.split())


def _normalised_url(value: str) -> str:
    """``value`` as a browser reads a URL's scheme: entities decoded, noise dropped, lower."""
    return _URL_NOISE.sub("", unescape(value)).lower()


def _allowed_attribute(tag: str, name: str, value: str) -> bool:
    """bleach's attribute filter: the allowlist above, plus per-attribute value rules.

    bleach then also drops any href/src whose scheme is not in its protocol list.
    """
    if name not in _ATTRIBUTES["*"] and name not in _ATTRIBUTES.get(tag, ()):
        return False
    if name == "class":
        return _code_class(value)
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
    """``html`` (str or bytes) reduced to the allowlist above; anything else escaped.

    bleach is given only what :func:`bounded_markup.bounded` rewrote (a piece over its
    bounds, or past the page's budget, becomes a plain note), so that its time stays
    linear in what it reads.
    """
    text = html.decode(errors="replace") if isinstance(html, bytes) else str(html)
    if bounded_markup.already_clean(text):  # the template cleaning an output again
        return text
    try:
        clean = _CLEANER.clean(bounded_markup.bounded(text))
    except TooComplex as error:
        clean = bounded_markup.note(str(error))
    return bounded_markup.remember_clean(clean)


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
        if cell.cell_type in ("code", "markdown"):  # rendered (or highlighted) from source
            cell.source = _bounded_source(cell.cell_type, _text(cell.get("source")))
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
        if not bounded_markup.spend(bounded_markup.ITEM_CHARS):  # the page is full
            return None
        cut = bounded_markup.cut_text  # text up to a bound per output and per page
        if kind == "stream":  # the template escapes text
            return from_dict({"output_type": "stream", "text": cut(_text(output.get("text"))),
                              "name": "stderr" if output.get("name") == "stderr"
                              else "stdout"})
        if kind == "error":  # the check messages live here; escaped by the template
            lines = output.get("traceback") or []
            lines = lines if isinstance(lines, list) else [lines]
            return from_dict({"output_type": "error", "ename": cut(_text(output.get("ename"))),
                              "evalue": cut(_text(output.get("evalue"))),
                              "traceback": [cut("\n".join(_text(line) for line in lines))]})
        if kind not in ("display_data", "execute_result"):
            return None
        data = {}
        for mime, value in (output.get("data") or {}).items():
            if mime in self.safe_output_keys and mime.startswith("image/"):
                if bounded_markup.spend(len(_text(value))):  # else: its text/plain shows
                    data[mime] = _text(value)
            elif mime in self.safe_output_keys:
                data[mime] = cut(_text(value))
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


def _bounded_source(kind: str, source: str) -> str:
    """A markdown or code cell's source, or a note in its place when it is over the bound
    for one piece or past the page's budget (rendering would cost its time first)."""
    if bounded_markup.spend(bounded_markup.ITEM_CHARS) and len(source) <= \
            bounded_markup.MAX_MARKUP_CHARS and bounded_markup.spend(len(source), markup=True):
        return source
    why = (f"this cell is {len(source):,} characters long" if len(source) >
           bounded_markup.MAX_MARKUP_CHARS else "the page already holds all it may")
    if kind == "code":
        return f"# [Not shown on this page: {why}. The graded notebook keeps it unchanged.]"
    return f"*[Not shown on this page: {why}. The graded notebook keeps it unchanged.]*"


def _count(value: Any) -> int | None:
    """An execution count as the int the template expects (or None)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _raster_images(bundle: Any) -> dict:
    """A markdown attachment's PNG/JPEG data (an empty PNG if it has none)."""
    kept = {mime: _text(data) for mime, data in (bundle if isinstance(bundle, dict) else {}
                                                 ).items()
            if mime in ("image/png", "image/jpeg")
            and _BASE64.fullmatch(_text(data)) and bounded_markup.spend(len(_text(data)))}
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
FORBIDDEN_ELEMENTS = ("script", "noscript", "iframe", "frame", "frameset", "object", "embed",
                      "applet", "portal", "base", "form", "input", "button", "textarea",
                      "select", "link", "svg", "math", "template")


def is_script_url(value: str) -> bool:
    """Whether an attribute value is a URL a browser would run (or render as a document)."""
    return _normalised_url(value).startswith(_SCRIPT_SCHEMES)


def remove_active_content(root: Tag, *, forbidden: Iterable[str] = FORBIDDEN_ELEMENTS,
                          keep_element: Callable[[Tag], bool] = lambda element: False,
                          keep_handler: Callable[[str], bool] = lambda value: False) -> None:
    """Drop, under ``root``: the ``forbidden`` elements, ``<meta http-equiv>``, every ``on*``
    handler, ``srcdoc``/``formaction`` and every script URL (an inline raster image's data:
    URI aside). ``keep_element`` spares elements of the page's own, ``keep_handler`` the
    handler values the page's own markup uses."""
    for element in root.find_all(list(forbidden)):
        if not element.decomposed and not keep_element(element):
            element.decompose()
    for meta in root.find_all("meta"):  # refresh, cookies, a competing policy
        if any(name.lower() == "http-equiv" for name in meta.attrs):
            meta.decompose()
    for element in root.find_all(True):
        for name, value in list(element.attrs.items()):
            value = " ".join(value) if isinstance(value, list) else str(value)
            if name.lower().startswith("on"):
                if not keep_handler(value):
                    del element.attrs[name]
            elif name.lower() in ("srcdoc", "formaction") or (
                    is_script_url(value)
                    and not (element.name == "img" and name == "src"
                             and _IMAGE_DATA_URI.fullmatch(value.strip()))):
                del element.attrs[name]


def add_policy(soup: BeautifulSoup, policy: str) -> None:
    """``policy`` as a Content-Security-Policy ``<meta>``, first in ``<head>``: before
    anything it has to govern."""
    if soup.head is None:
        head = soup.new_tag("head")
        (soup.html or soup).insert(0, head)
    soup.head.insert(0, soup.new_tag("meta", attrs={"http-equiv": "Content-Security-Policy",
                                                    "content": policy}))


def make_document_inert(html: str) -> str:
    """The whole page without scripts, frames, forms, handlers or script URLs, plus the CSP.

    The last layer: whatever a template path let through (nbconvert's own MathJax loader
    included) is removed here, and the policy stops anything that got past both.
    """
    soup = BeautifulSoup(html, features="html.parser")  # what nbconvert itself parses with
    remove_active_content(soup)
    add_policy(soup, CONTENT_SECURITY_POLICY)
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
            name = grade_column(grade_id)  # a test cell goes by its exercise's name
            if grade_id.startswith("think_"):
                name = name.removeprefix("think_").replace("_", " ")
            link.string = _GENERIC_LABELS[label] + name
    return str(soup)


class InertHTMLExporter(HTMLExporter):
    """An ``HTMLExporter`` for untrusted notebooks: layers 1 and 2 above.

    Every output is rebuilt by :class:`InertOutputs` (last, so that no configured
    preprocessor can add anything after the cleaning), every piece of rendered Markdown and
    nbconvert's ``clean_html`` filter use :func:`clean_html`, and no file a notebook names
    is embedded. Subclasses add the last pass over the finished page.
    """

    @default("sanitize_html")
    def _sanitize_html_default(self) -> bool:
        return True  # nbconvert's templates then skip JS/widget blocks and clean HTML

    @validate("embed_images")
    def _never_embed_files(self, proposal: Any) -> bool:
        # embedding reads the files a student's markdown names (or a kernel linked) into
        # the page: never for a submission
        if proposal["value"]:
            self.log.warning("%s ignores embed_images=True", type(self).__name__)
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
        """Rendered Markdown, cleaned (nbgrader's templates do not clean markdown cells)."""
        return clean_html(super().markdown2html(context, source))

    def _preprocess(self, nb: NotebookNode, resources: dict) -> tuple[NotebookNode, dict]:
        nb, resources = super()._preprocess(nb, resources)
        return InertOutputs(parent=self).preprocess(nb, resources)

    def from_notebook_node(self, nb: NotebookNode, resources: dict | None = None,
                           **kw: Any) -> tuple[str, dict]:
        with bounded_markup.page_budget():  # what one page may hand the sanitiser
            return super().from_notebook_node(nb, resources, **kw)


class SafeFeedbackExporter(InertHTMLExporter):
    """nbgrader's feedback exporter (an ``HTMLExporter``) with the three layers above.

    nbgrader's ``GenerateFeedback`` still chooses the template (``feedback``) and its
    preprocessors (grades, CSS, hidden tests); this class sanitises whatever they leave.
    A page that takes longer than ``time_limit`` is replaced by :func:`minimal_page`.
    """

    time_limit = Float(60.0, help="seconds one feedback page may take to make (0: no limit); "
                                  "a page that takes longer is replaced by a short page that "
                                  "says so and lists the points").tag(config=True)

    def from_notebook_node(self, nb: NotebookNode, resources: dict | None = None,
                           **kw: Any) -> tuple[str, dict]:
        given = resources
        try:
            with bounded_markup.time_limit(self.time_limit):
                html, resources = super().from_notebook_node(nb, resources, **kw)
                return make_document_inert(name_exercises(html)), resources
        except bounded_markup.OutOfTime as error:
            self.log.warning("A feedback page was not made (%s); a short page stands in", error)
            resources = self._init_resources(given)
            info = resources.get("nbgrader") or {}
            return minimal_page(str(info.get("notebook") or "Feedback"), str(error),
                                gradebook_scores(info)), resources


def gradebook_scores(info: dict) -> list[tuple[str, float | None, float]]:
    """(grade id, score, max score) of each graded cell of the submission ``info`` names
    (nbgrader's ``db_url``, ``assignment``, ``notebook``, ``student``); [] if unknown."""
    from nbgrader.api import Gradebook, MissingEntry  # (the nbgrader process has it loaded)

    try:
        with Gradebook(info["db_url"]) as gradebook:
            notebook = gradebook.find_submission_notebook(info["notebook"], info["assignment"],
                                                          info["student"])
            return [(grade.name, grade.score, grade.max_score)
                    for grade in sorted(notebook.grades, key=lambda grade: grade.name)]
    except (KeyError, MissingEntry, OSError, ValueError):
        return []


def minimal_page(title: str, reason: str,
                 scores: Iterable[tuple[str, float | None, float]] = ()) -> str:
    """An inert page that stands in for a feedback page that could not be made: it says
    why and lists the points, and holds nothing of the submission."""
    rows = "".join(f"<tr><td><code>{escape(name)}</code></td><td>"
                   f"{'to be graded' if score is None else f'{score:g}'} / {maximum:g}</td></tr>"
                   for name, score, maximum in scores)
    table = (f"<table><tr><th>graded cell</th><th>points</th></tr>{rows}</table>" if rows
             else "<p>The points are in the course's gradebook.</p>")
    return (f'<!DOCTYPE html>\n<html><head><meta http-equiv="Content-Security-Policy" '
            f'content="{CONTENT_SECURITY_POLICY}"><meta charset="utf-8">'
            f"<title>{escape(title)}</title></head><body><h1>{escape(title)}</h1>"
            f"<p>The full feedback page for this notebook could not be made: {escape(reason)}. "
            f"Its points are recorded as usual:</p>{table}</body></html>\n")
