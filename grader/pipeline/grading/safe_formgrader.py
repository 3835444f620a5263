"""nbgrader's formgrader, with every submission shown inert (``make formgrader``).

Formgrader's Manual Grading page renders a submitted notebook with an ``HTMLExporter`` and
nbgrader's ``formgrade`` template, in the origin of the instructor's Jupyter server: a
script a student put there (a Think! answer's ``<script>``, an output's
``<img onerror>``) would act as the instructor through the Jupyter API. This module is
that formgrader with three changes:

- :class:`SafeFormgradeExporter` renders the submission: outputs rebuilt from safe MIME
  types, Markdown, raw cells and HTML outputs cleaned (the layers of
  :class:`pipeline.grading.safe_feedback.InertHTMLExporter`, shared with the feedback pages), then
  a last pass over the page (:func:`make_formgrade_inert`) that keeps only formgrader's
  own scripts (its static files, the inline scripts its template writes before the
  notebook) and gives the page a Content-Security-Policy allowing exactly those, by hash;
  links in the notebook lead nowhere, since a page opened in formgrader's frame can drive
  JupyterLab. (MathJax, loaded from a CDN by the template, goes too: TeX shows as source);
- the files next to a submission (``/formgrader/submissions/<id>/<path>``, served in the
  server's origin) are not served: the cleaned page never links to one;
- it is a server extension of its own (:func:`_load_jupyter_server_extension`), enabled
  in place of ``nbgrader.server_extensions.formgrader`` by ``pipeline.lab formgrader``.

``grader/nbgrader_config.py`` also gives every ``HTMLExporter`` :class:`RequireInertExporter`,
so nbgrader's own formgrader (a ``jupyter lab`` started by hand in ``grader/``) refuses to
render a submission instead of rendering it live.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from bs4 import BeautifulSoup, Tag
from jupyter_server.utils import url_path_join
from nbconvert.preprocessors import Preprocessor
from nbformat.notebooknode import NotebookNode
from nbgrader.server_extensions.formgrader import apihandlers, handlers
from nbgrader.server_extensions.formgrader.formgrader import FormgradeExtension
from tornado import web

from pipeline.grading.safe_feedback import (
    FORBIDDEN_ELEMENTS,
    InertHTMLExporter,
    add_policy,
    remove_active_content,
)

NBGRADER_FORMGRADER = "nbgrader.server_extensions.formgrader"
# The score and comment fields are the template's own; cleaned Markdown and outputs never
# hold one (the cleaner escapes them).
FORMGRADE_FORBIDDEN = tuple(name for name in FORBIDDEN_ELEMENTS
                            if name not in ("input", "button", "textarea"))
# The only inline handlers of nbgrader's formgrade template (show or hide the student's name).
FORMGRADE_HANDLERS = frozenset({"toggle_name(true);", "toggle_name(false);"})
_JAVASCRIPT_TYPES = ("", "text/javascript", "application/javascript")
# The template loads MathJax from a CDN to typeset the notebook; it is removed with the other
# remote scripts (a student's TeX shows as source, as on the feedback pages). formgrade.js
# waits for MathJax's start-up signal before it finishes setting up the page: it gets one.
MATHJAX_STAND_IN = ("window.MathJax = {Hub: {Startup: {signal: {Interest: function (callback) "
                    "{ setTimeout(function () { callback('End'); }, 0); }}}}};")


def csp_hash(text: str) -> str:
    """A CSP hash source for ``text``."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def formgrade_policy(script_hashes: list[str]) -> str:
    """The page's policy: formgrader's scripts (same origin, and its inline ones by hash),
    its requests to its own API, and nothing a notebook could add."""
    scripts = " ".join(["'self'", *script_hashes, "'unsafe-hashes'",
                        *sorted(csp_hash(handler) for handler in FORMGRADE_HANDLERS)])
    return (f"default-src 'none'; script-src {scripts}; connect-src 'self'; "
            "img-src 'self' data:; font-src 'self'; style-src 'self' 'unsafe-inline'; "
            "object-src 'none'; base-uri 'none'; form-action 'none'; frame-src 'none'")


def _template_elements(soup: BeautifulSoup) -> set[int]:
    """The ``id()`` of every element before the notebook in document order: nbgrader's
    ``formgrade`` template writes its head and navigation bar there, and the notebook's
    (cleaned, well-formed) content only inside ``#notebook-container``. No container, no
    template element: then nothing is trusted."""
    container = soup.find(id="notebook-container")
    before: set[int] = set()
    if container is not None:
        for element in soup.find_all(True):
            if element is container:
                break
            before.add(id(element))
    return before


# The template's own elements inside the notebook that carry an id (formgrade.js finds a
# cell's score, extra credit and comment by it); cleaned notebook content never holds one.
_TEMPLATE_FIELDS = frozenset({"input", "textarea"})


def _drop_notebook_names(soup: BeautifulSoup) -> None:
    """Remove every ``id`` and ``name`` in the notebook but the template's score fields:
    formgrade.js finds a cell's score field by ``#<grade_id>``, so a heading a student gave
    that id, placed above the test cell, would tie the test's score to their own answer."""
    container = soup.find(id="notebook-container")
    for element in container.find_all(True) if container is not None else ():
        if element.name not in _TEMPLATE_FIELDS:
            for attribute in ("id", "name"):
                if element.has_attr(attribute):
                    del element[attribute]


def make_formgrade_inert(html: str, base_url: str = "") -> str:
    """The formgrade page with formgrader's own scripts only, dead links, and its policy.

    Formgrader's scripts are those its template writes before the notebook: ``<script
    src>`` from its static folder and inline scripts, which the policy then allows by hash.
    Everything else that could run, load or submit is removed, and links in the notebook
    lose their target.
    """
    soup = BeautifulSoup(html, features="html.parser")
    static = f"{base_url.rstrip('/')}/formgrader/static/"
    template = _template_elements(soup)

    def own(element: Tag) -> bool:
        if id(element) not in template:
            return False
        if element.name == "link":
            return (element.get("rel") == ["stylesheet"]
                    and str(element.get("href", "")).startswith(static))
        if element.name != "script" or str(element.get("type", "")).lower() not in (
                _JAVASCRIPT_TYPES):
            return False  # (nbconvert's MathJax loader and its config go too)
        if element.get("src") is not None:
            return str(element["src"]).startswith(static) and not element.get_text().strip()
        return True

    remove_active_content(soup, forbidden=FORMGRADE_FORBIDDEN, keep_element=own,
                          keep_handler=FORMGRADE_HANDLERS.__contains__)
    _drop_notebook_names(soup)
    for link in soup.find_all("a", href=True):
        # In JupyterLab, formgrader runs in a frame whose messages JupyterLab executes as
        # commands: a page a student's link opened in that frame could drive JupyterLab.
        # Only formgrader's navigation and in-page anchors stay links.
        href = str(link["href"])
        if id(link) not in template and not href.startswith("#"):
            del link["href"]
            link["title"] = f"link not followed in formgrader: {href}"[:300]
    if soup.head is not None:
        stand_in = soup.new_tag("script", attrs={"type": "text/javascript"})
        stand_in.string = MATHJAX_STAND_IN
        soup.head.append(stand_in)
    inline = {csp_hash(script.string or "") for script in soup.find_all("script")
              if script.get("src") is None}
    add_policy(soup, formgrade_policy(sorted(inline)))
    return str(soup)


class SafeFormgradeExporter(InertHTMLExporter):
    """Formgrader's exporter: nbgrader's ``formgrade`` template (set by formgrader),
    the shared cleaning layers, and :func:`make_formgrade_inert` on the finished page."""

    def from_notebook_node(self, nb: NotebookNode, resources: dict | None = None,
                           **kw: Any) -> tuple[str, dict]:
        base_url = str((resources or {}).get("base_url", ""))
        html, resources = super().from_notebook_node(nb, resources, **kw)
        return make_formgrade_inert(html, base_url), resources


class RequireInertExporter(Preprocessor):
    """Fails any exporter that would render a submission of this course live.

    Configured for every ``HTMLExporter`` in ``grader/nbgrader_config.py``: the course's
    own exporters (:class:`InertHTMLExporter`) pass; nbgrader's stock formgrader, whose
    exporter is a plain ``HTMLExporter``, gets an error page instead of a live submission.
    """

    def preprocess(self, nb: NotebookNode, resources: dict) -> tuple[NotebookNode, dict]:
        if not isinstance(self.parent, InertHTMLExporter):
            raise RuntimeError(
                f"{type(self.parent).__name__} would render this course's submissions with "
                "their scripts live: grade them in `make formgrader` (pipeline.grading.safe_formgrader)")
        return nb, resources


class InertFormgrader(FormgradeExtension):
    """nbgrader's ``FormgradeExtension`` with :class:`SafeFormgradeExporter` and without
    the files next to a submission."""

    def init_tornado_settings(self, webapp: web.Application) -> None:
        super().init_tornado_settings(webapp)
        webapp.settings["nbgrader_exporter"] = SafeFormgradeExporter(config=self.config)

    def init_handlers(self, webapp: web.Application) -> None:
        # nbgrader's routes (FormgradeExtension.init_handlers), except that
        # SubmissionFilesHandler, which serves any file of the course in this origin, is
        # a 404: the cleaned page links to none, and a student's link might.
        routes = [(pattern, handlers.Template404, *rest[1:])
                  if rest[0] is handlers.SubmissionFilesHandler else (pattern, *rest)
                  for pattern, *rest in [*handlers.default_handlers,
                                         *apihandlers.default_handlers]]
        routes += [(r"/formgrader/static/(.*)", web.StaticFileHandler,
                    {"path": handlers.static_path}),
                   (r"/formgrader/.*", handlers.Template404)]
        base_url = webapp.settings["base_url"]
        webapp.add_handlers(".*$", [(url_path_join(base_url, pattern.lstrip("/")), *rest)
                                    for pattern, *rest in routes])


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "pipeline.grading.safe_formgrader"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Load formgrader as nbgrader's ``load_jupyter_server_extension`` does, made inert."""
    if serverapp.jpserver_extensions.get(NBGRADER_FORMGRADER):
        serverapp.log.warning("%s is enabled as well: its routes come first; disable it so "
                              "that submissions are served by pipeline.grading.safe_formgrader",
                              NBGRADER_FORMGRADER)
    formgrader = InertFormgrader(parent=serverapp)
    formgrader.root_dir = serverapp.root_dir
    formgrader.log = serverapp.log
    formgrader.initialize([])
    formgrader.init_tornado_settings(serverapp.web_app)
    formgrader.init_handlers(serverapp.web_app)
