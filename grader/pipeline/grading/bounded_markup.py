"""What the feedback sanitiser is given, bounded before it runs; and how long a page may take.

bleach (html5lib underneath) takes time quadratic in the nesting depth of what it reads and
in the number of attributes of one tag: a quarter of a megabyte of nested tags with
distinct attributes kept it busy for minutes. So every piece of markup a page is built
from (HTML a cell displayed, rendered Markdown, highlighted code) first goes through
:func:`bound_markup`, a small tokenizer that takes time linear in its input and writes the
piece out again as plain, well-formed HTML: every tag closed in order, attribute values
quoted and escaped, each attribute once, comments dropped, text escaped. What it writes
is all bleach then sees, so however another parser would have read the original, bleach
gets a shallow tree with few attributes per tag. A piece larger than
:data:`MAX_MARKUP_CHARS`, nested deeper than :data:`MAX_DEPTH` or with a tag of more than
:data:`MAX_ATTRIBUTES` attributes is replaced by a plain note (:class:`TooComplex`), and so
is whatever would take a page past its budget (:func:`page_budget`); the graded notebook
keeps it unchanged. :func:`time_limit` bounds a whole page in time.
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from html import escape, unescape

MAX_MARKUP_CHARS = 64 * 1024  # characters of one piece of markup (an output, a cell)
MAX_DEPTH = 32  # elements open inside each other (a pandas table needs 6)
MAX_ATTRIBUTES = 32  # attributes of one tag
MAX_ESCAPED_IN_ATTRIBUTE = 256  # characters of one attribute value written as entities
MAX_PAGE_MARKUP = 512 * 1024  # characters of markup one page may hand the sanitiser
MAX_TEXT_CHARS = 2**20  # characters of one text output shown on a page (the rest is cut)
MAX_PAGE_CHARS = 32 * 2**20  # characters of text, markup and images on one page
ITEM_CHARS = 256  # what each cell and output costs a page besides its characters

_VOID = frozenset({"area", "base", "basefont", "bgsound", "br", "col", "embed", "frame", "hr",
                   "img", "input", "keygen", "link", "meta", "param", "source", "track", "wbr"})
# Elements whose content is text, not markup, up to their end tag (or, plaintext, the end).
# None of them is rendered on a page (the sanitiser would show them as text): they are
# written out as text here.
_RAW_TEXT = frozenset({"script", "style", "textarea", "title", "xmp", "iframe", "noembed",
                       "noframes", "noscript", "plaintext"})
# A second one of these while the first is the innermost open element closes the first.
_IMPLIED_END = frozenset({"p", "li", "dt", "dd", "tr", "td", "th", "option", "optgroup"})
# html5lib appends each entity of a text run to the text read so far, copying it every time:
# a long run of entities costs time quadratic in its length. An empty <span> every so many
# characters starts a new run (and shows nothing).
_TEXT_RUN = 2048
_TAG_NAME = re.compile(r"[^\s/>]*")
_SAFE_NAME = re.compile(r"[a-z][a-z0-9-]*")
_SAFE_ATTRIBUTE = re.compile(r"[a-zA-Z_:][-a-zA-Z0-9_:.]*")
_SEPARATORS = re.compile(r"[\s/]*")
_ATTRIBUTE_NAME = re.compile(r"[^\s/>=]+|=[^\s/>=]*")
_EQUALS = re.compile(r"\s*=\s*")
_UNQUOTED = re.compile(r"[^\s>]*")
_COMMENT_END = re.compile(r"--!?>")
_RAW_TEXT_END = {name: re.compile(rf"</{name}(?=[\s/>]|$)", re.IGNORECASE) for name in _RAW_TEXT}


class TooComplex(ValueError):
    """A piece of markup over the bounds; its message says which, in plain words."""


def bound_markup(html: str) -> str:
    """``html`` rewritten as well-formed HTML of bounded depth and attributes.

    Raises :class:`TooComplex` when ``html`` is longer than :data:`MAX_MARKUP_CHARS`, nests
    elements deeper than :data:`MAX_DEPTH` or gives a tag more than :data:`MAX_ATTRIBUTES`
    attributes. Nothing is made safe here (that is bleach's job, on what this returns).
    """
    if len(html) > MAX_MARKUP_CHARS:
        raise TooComplex(f"it is {len(html):,} characters long (at most "
                         f"{MAX_MARKUP_CHARS:,} are shown)")
    return _Rewriter(html).run()


class _Rewriter:
    """One pass over a piece of markup, left to right; every step moves on."""

    def __init__(self, html: str) -> None:
        self.html = html
        self.out: list[str] = []
        self.text: list[str] = []  # text read since the last tag, entities decoded
        self.stack: list[str] = []  # the open elements, innermost last

    def run(self) -> str:
        html, i, n = self.html, 0, len(self.html)
        while i < n:
            j = html.find("<", i)
            j = n if j < 0 else j
            self.text.append(unescape(html[i:j]))
            if j == n:
                break
            following = html[j + 1:j + 2]
            if html.startswith("<!--", j):
                i = _comment_end(html, j)
            elif following in ("!", "?") or (following == "/" and not _letter(html[j + 2:j + 3])):
                i = _after(html, ">", j + 2)  # a declaration, a processing instruction, junk
            elif following == "/":
                i = _after(html, ">", j + 2)
                self.end_tag(_TAG_NAME.match(html, j + 2).group().lower())
            elif _letter(following):
                i = self.start_tag(j)
            else:
                self.text.append("<")
                i = j + 1
        for _ in range(len(self.stack)):
            self.end_tag(self.stack[-1])
        self.flush()
        return "".join(self.out)

    def flush(self) -> None:
        """Write the text read so far, escaped, in runs of at most ``_TEXT_RUN``."""
        text = "".join(self.text)
        self.text.clear()
        self.out.append("<span></span>".join(escape(text[k:k + _TEXT_RUN], quote=False)
                                             for k in range(0, len(text), _TEXT_RUN)))

    def end_tag(self, name: str) -> None:
        if name in self.stack:  # otherwise nothing to close: dropped
            self.flush()
            while self.stack:
                self.out.append(f"</{self.stack[-1]}>")
                if self.stack.pop() == name:
                    break

    def start_tag(self, start: int) -> int:
        """Read the start tag at ``start`` and write it; where reading goes on."""
        html = self.html
        name_match = _TAG_NAME.match(html, start + 1)
        name = name_match.group().lower()
        i, attributes = _attributes(html, name_match.end())
        if len(attributes) > MAX_ATTRIBUTES:
            raise TooComplex(f"a <{name[:20]}> tag in it has {len(attributes):,} attributes "
                             f"(at most {MAX_ATTRIBUTES} are shown)")
        if not _SAFE_NAME.fullmatch(name):  # not a tag anything renders: shown as text
            self.text.append(html[start:i])
            return i
        if name in _RAW_TEXT:  # the tag, its content and its end tag, all as text
            end = _RAW_TEXT_END[name].search(html, i) if name != "plaintext" else None
            stop = _after(html, ">", end.start()) if end else len(html)
            self.text.append(html[start:stop])
            return stop
        kept = {}
        for attribute, value in attributes:
            if _SAFE_ATTRIBUTE.fullmatch(attribute):
                kept.setdefault(attribute.lower(), escape(unescape(value)))
        if any(value.count("&") > MAX_ESCAPED_IN_ATTRIBUTE for value in kept.values()):
            raise TooComplex(f"a <{name}> tag in it has an attribute of more than "
                             f"{MAX_ESCAPED_IN_ATTRIBUTE} special characters")
        if name in _IMPLIED_END and self.stack and self.stack[-1] == name:
            self.end_tag(name)
        self.flush()
        self.out.append(f"<{name}" + "".join(f' {attribute}="{value}"'
                                            for attribute, value in kept.items()) + ">")
        if name not in _VOID:
            self.stack.append(name)
            if len(self.stack) > MAX_DEPTH:
                raise TooComplex(f"it nests elements more than {MAX_DEPTH} deep")
        return i


def _attributes(html: str, i: int) -> tuple[int, list[tuple[str, str]]]:
    """The attributes of the tag whose name ends at ``i``, as html5lib reads them (a quoted
    value runs to its closing quote, or to the end), and where the tag ends."""
    attributes, n = [], len(html)
    while True:
        i = _SEPARATORS.match(html, i).end()
        if i >= n:
            return n, attributes
        if html[i] == ">":
            return i + 1, attributes
        name = _ATTRIBUTE_NAME.match(html, i)
        i = name.end()
        value = ""
        equals = _EQUALS.match(html, i)
        if equals and i < n:
            i = equals.end()
            quote = html[i:i + 1]
            if quote in ('"', "'"):
                close = html.find(quote, i + 1)
                close = n if close < 0 else close
                value, i = html[i + 1:close], min(close + 1, n)
            else:
                unquoted = _UNQUOTED.match(html, i)
                value, i = unquoted.group(), unquoted.end()
        attributes.append((name.group(), value))
        if len(attributes) > MAX_ATTRIBUTES:  # no need to read on: it is refused
            return n, attributes


def _comment_end(html: str, start: int) -> int:
    """Where the comment at ``start`` ends: ``<!-->``, ``<!--->``, ``-->``, ``--!>`` or the end."""
    if html.startswith(">", start + 4):
        return start + 5
    if html.startswith("->", start + 4):
        return start + 6
    end = _COMMENT_END.search(html, start + 4)
    return end.end() if end else len(html)


def _after(html: str, marker: str, start: int) -> int:
    end = html.find(marker, start)
    return len(html) if end < 0 else end + len(marker)


def _letter(character: str) -> bool:
    return character.isascii() and character.isalpha()



# ---- one page's budget ----------------------------------------------------------------------

@dataclass
class PageBudget:
    """What one page may still hold: markup for the sanitiser, and characters in all; and
    what the sanitiser has already made for it (the template cleans again what the
    preprocessors cleaned: that costs neither time nor budget twice)."""

    markup: int = MAX_PAGE_MARKUP
    chars: int = MAX_PAGE_CHARS
    cleaned: set[str] = field(default_factory=set)

    def take(self, size: int, *, markup: bool = False) -> bool:
        """Spend ``size`` characters (of markup, if ``markup``); False, spending nothing,
        when the page has not that much left."""
        if size > self.chars or (markup and size > self.markup):
            return False
        self.chars -= size
        if markup:
            self.markup -= size
        return True


_BUDGET: ContextVar[PageBudget | None] = ContextVar("page_budget", default=None)


@contextmanager
def page_budget() -> Iterator[PageBudget]:
    """Everything :func:`spend` charges inside this block is charged to one new page."""
    budget = PageBudget()
    token = _BUDGET.set(budget)
    try:
        yield budget
    finally:
        _BUDGET.reset(token)


def spend(size: int, *, markup: bool = False) -> bool:
    """Charge ``size`` characters to the current page (True outside any page)."""
    budget = _BUDGET.get()
    return budget is None or budget.take(size, markup=markup)


def already_clean(html: str) -> bool:
    """Whether ``html`` is exactly what the sanitiser made for the current page."""
    budget = _BUDGET.get()
    return budget is not None and html in budget.cleaned


def remember_clean(html: str) -> str:
    """Note ``html`` as the sanitiser's own output for the current page; returns it."""
    budget = _BUDGET.get()
    if budget is not None:
        budget.cleaned.add(html)
    return html


def bounded(html: str) -> str:
    """:func:`bound_markup`, charged to the current page as markup."""
    if not spend(len(html), markup=True):
        raise TooComplex(f"the page already shows all the markup one page may hold "
                         f"({MAX_PAGE_MARKUP:,} characters)")
    return bound_markup(html)


def note(reason: str) -> str:
    """The plain HTML that stands in for a piece left out (``reason`` is ours, not the
    submission's, and is escaped anyway)."""
    return (f'<p class="left-out"><em>[Not shown on this page: {escape(reason)}. The graded '
            f'notebook keeps it unchanged.]</em></p>')


def cut_text(text: str) -> str:
    """``text`` cut to :data:`MAX_TEXT_CHARS` (saying so), charged to the current page;
    a note instead when the page is full."""
    if len(text) > MAX_TEXT_CHARS:
        text = (text[:MAX_TEXT_CHARS] + f"\n[... {len(text) - MAX_TEXT_CHARS:,} more "
                f"characters not shown on this page]\n")
    if not spend(len(text)):
        return (f"[Not shown on this page: the page already holds all it may "
                f"({MAX_PAGE_CHARS:,} characters).]\n")
    return text


# ---- one page's time -----------------------------------------------------------------------

class OutOfTime(Exception):
    """Raised in the main thread by :func:`time_limit` when the time is up."""


@contextmanager
def time_limit(seconds: float | None) -> Iterator[bool]:
    """Raise :class:`OutOfTime` in this block after ``seconds`` (None or 0: no limit).

    A signal timer, so that pure-Python work (the sanitiser, the template) is stopped where
    it is; it exists only in the main thread, and only where no other timer runs. Yields
    whether the limit is armed.
    """
    if (not seconds or seconds <= 0 or threading.current_thread() is not threading.main_thread()
            or signal.getitimer(signal.ITIMER_REAL)[0] > 0):
        yield False
        return

    def expire(signum, frame):
        raise OutOfTime(f"it took longer than {seconds:g} s to make")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
