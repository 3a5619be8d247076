"""Open generated HTML pages in headless Chromium and report what a reader would see break.

The CDP transport lives in :mod:`tests.cdp_pipe`.

A small Chrome DevTools Protocol (CDP) client on the standard library alone: Chromium runs with
``--remote-debugging-pipe``, reading commands on file descriptor 3 and writing replies and events on 4, each
message JSON terminated by a NUL byte. One browser process serves many pages (:class:`Browser`); each page
gets its own target, and the checker reports console errors, images that did not load, internal links whose
file or ``#fragment`` does not exist, and any request that would leave the machine (reports must work offline:
http(s) requests are failed before they reach the network and listed).

Usage::

    with Browser() as browser:
        report = browser.check(Path("reports/plan.html"))
        assert report.ok, report.problems()
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

from tests.cdp_pipe import (  # noqa: F401 (re-exported for the tests)
    CHROMIUM_ENV,
    CHROMIUM_NAMES,
    INSTALL_HINT,
    BrowserError,
    CdpPipe,
    ChromiumNotFound,
    find_chromium,
)

LOCAL_SCHEMES = frozenset({"file", "data", "blob", "about", "chrome-error"})
_XLINK = "http://www.w3.org/1999/xlink"
_SHOWN = 120  # characters of a URL or message kept in a report

# Settle the page: wait for the load event, two frames and a short tick so late scripts have run.
_SETTLE_JS = """new Promise((resolve) => {
  const done = () => requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(resolve, 30)));
  if (document.readyState === "complete") { done(); } else { addEventListener("load", done, {once: true}); }
})"""

# Click every sortable table header twice (ascending, then descending) so the page's own script runs.
_EXERCISE_JS = """(() => {
  let clicks = 0;
  document.querySelectorAll("table.sortable thead th").forEach((th) => { th.click(); th.click(); clicks += 2; });
  return clicks;
})()"""

_COLLECT_JS = """(async () => {
  const settle = (promise) => Promise.race([Promise.resolve(promise).catch(() => {}),
                                            new Promise((resolve) => setTimeout(resolve, 5000))]);
  const imgs = Array.from(document.images);
  imgs.forEach((img) => { if (img.loading === "lazy") { img.loading = "eager"; } });
  await Promise.all(imgs.map((img) => settle(img.decode())));
  const broken = imgs.filter((img) => !(img.complete && img.naturalWidth > 0))
                     .map((img) => "<img src=" + (img.getAttribute("src") || "(none)") + ">");
  const svgImages = Array.from(document.querySelectorAll("svg image"));
  for (const el of svgImages) {
    const href = el.getAttribute("href") || el.getAttributeNS("XLINK_NS", "href") || "";
    const probe = new Image();
    probe.src = href ? new URL(href, document.baseURI).href : "";
    await settle(probe.decode());
    if (!href || !(probe.complete && probe.naturalWidth > 0)) {
      broken.push("<svg image href=" + (href || "(none)") + ">");
    }
  }
  const links = [];
  document.querySelectorAll("a").forEach((a) => {
    const raw = a.getAttribute("href") ?? a.getAttributeNS("XLINK_NS", "href");
    if (raw === null) { return; }
    let resolved = "";
    try { resolved = new URL(raw, document.baseURI).href; } catch (error) { resolved = ""; }
    links.push([raw, resolved]);
  });
  const ids = Array.from(document.querySelectorAll("[id]"), (el) => el.id)
    .concat(Array.from(document.querySelectorAll("a[name]"), (a) => a.getAttribute("name")));
  return {url: location.href, images: imgs.length + svgImages.length, broken, links, ids};
})()""".replace("XLINK_NS", _XLINK)


@dataclass
class PageReport:
    """What opening one page in Chromium showed.

    Attributes:
        path: the page checked.
        console_errors: console.error / console.assert calls, uncaught exceptions, Log entries of level error.
        broken_images: ``<img>`` (and SVG ``<image>``) elements that did not load.
        broken_links: internal links (relative or file://) whose file or ``#fragment`` does not exist.
        network_requests: URLs requested that are not local (file:, data:, blob:, about:); all were blocked.
        external_links: http(s) links (not an error: listed for information).
        images: how many images were checked.
        links: how many links were checked.
        sort_clicks: how many sortable-table header clicks were made.
    """

    path: Path
    console_errors: list[str] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)
    broken_links: list[str] = field(default_factory=list)
    network_requests: list[str] = field(default_factory=list)
    external_links: list[str] = field(default_factory=list)
    images: int = 0
    links: int = 0
    sort_clicks: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing is broken (external links do not count)."""
        return not (self.console_errors or self.broken_images or self.broken_links or self.network_requests)

    def problems(self) -> list[str]:
        """One line per problem, prefixed with its kind."""
        return (
            [f"console error: {m}" for m in self.console_errors]
            + [f"broken image: {m}" for m in self.broken_images]
            + [f"broken link: {m}" for m in self.broken_links]
            + [f"network request: {m}" for m in self.network_requests]
        )


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


class _AnchorParser(HTMLParser):
    """Collects every id attribute and every <a name>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if value is not None and (key == "id" or (key == "name" and tag == "a")):
                self.anchors.add(value)

    handle_startendtag = handle_starttag


def anchors_in_file(path: Path) -> set[str]:
    """The ids and ``<a name>`` values of an HTML file (parsed with html.parser).

    Args:
        path: an HTML file.

    Returns:
        The set of fragment targets.
    """
    parser = _AnchorParser()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    parser.close()
    return parser.anchors


def _is_html(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in (".html", ".htm", ".xhtml")


def classify_links(page: Path, links: list[tuple[str, str]], page_anchors: set[str]) -> tuple[list[str], list[str]]:
    """Check a page's links.

    Args:
        page: the page the links are on.
        links: (href as written, href resolved against the page) pairs.
        page_anchors: the ids and ``<a name>`` values of the page as loaded.

    Returns:
        (broken internal links, external http(s) links), each as readable lines.
    """
    broken: list[str] = []
    external: list[str] = []
    others: dict[Path, set[str]] = {}
    this_page = page.resolve()
    for raw, resolved in links:
        parts = urlsplit(resolved)
        scheme = parts.scheme.lower()
        if not resolved:
            broken.append(f"{_short(raw)}: not a valid URL")
            continue
        if scheme in ("http", "https"):
            external.append(_short(raw))
            continue
        if scheme != "file":
            continue  # mailto:, data:, javascript: and the like are not files to check
        target = Path(url2pathname(parts.path))
        if not target.exists():
            broken.append(f"{_short(raw)}: {target} does not exist")
            continue
        fragment = unquote(parts.fragment)
        if not fragment or fragment.lower() == "top":
            continue  # "#" and "#top" scroll to the top of any page
        if target.resolve() == this_page:
            anchors = page_anchors
        elif _is_html(target):
            if target not in others:
                others[target] = anchors_in_file(target)
            anchors = others[target]
        else:
            continue  # a fragment into a non-HTML file cannot be checked
        if fragment not in anchors:
            broken.append(f"{_short(raw)}: no element with id or name {fragment!r} in {target.name}")
    return broken, external


class _PageState:
    """Events of one page's CDP session, turned into report entries."""

    def __init__(self, send: Callable[..., int], session_id: str) -> None:
        self.send = send
        self.session_id = session_id
        self.console_errors: list[str] = []
        self.network_requests: list[str] = []
        self.loaded = False

    def on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Page.loadEventFired":
            self.loaded = True
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = " ".join(_remote_text(a) for a in params.get("args", []))
            frames = (params.get("stackTrace") or {}).get("callFrames") or []
            where = f" ({_location(frames[0].get('url'), frames[0].get('lineNumber'))})" if frames else ""
            self.console_errors.append(_short(f"console.{params['type']}: {args}") + where)
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = (details.get("exception") or {}).get("description") or details.get("text", "exception")
            first = str(text).strip().splitlines()[0] if str(text).strip() else "exception"
            self.console_errors.append(
                f"uncaught: {_short(first)} ({_location(details.get('url'), details.get('lineNumber'))})"
            )
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            if entry.get("level") == "error":
                url = f" ({_short(entry['url'])})" if entry.get("url") else ""
                self.console_errors.append(f"{entry.get('source', 'log')}: {_short(entry.get('text', ''))}{url}")
        elif method == "Network.requestWillBeSent":
            self._request(params.get("request", {}).get("url", ""))
        elif method == "Network.webSocketCreated":
            self._request(params.get("url", ""))
        elif method == "Fetch.requestPaused":
            # Only http(s) requests are paused (see Fetch.enable): fail them before they leave the machine.
            self._request(params.get("request", {}).get("url", ""))
            self.send(
                "Fetch.failRequest",
                {"requestId": params["requestId"], "errorReason": "BlockedByClient"},
                self.session_id,
            )

    def _request(self, url: str) -> None:
        scheme = urlsplit(url).scheme.lower()
        if url and scheme not in LOCAL_SCHEMES and _short(url) not in self.network_requests:
            self.network_requests.append(_short(url))


def _remote_text(obj: dict[str, Any]) -> str:
    if "value" in obj:
        return str(obj["value"])
    return str(obj.get("unserializableValue") or obj.get("description") or obj.get("type", "?"))


def _location(url: str | None, line: int | None) -> str:
    name = Path(urlsplit(url).path).name if url else "?"
    return f"{name}:{line + 1}" if isinstance(line, int) else name


class Browser(CdpPipe):
    """One headless Chromium process (:class:`tests.cdp_pipe.CdpPipe`); ``check`` opens one page at a time."""

    def _evaluate(self, expression: str, session_id: str, deadline: float) -> Any:
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            session_id,
            deadline=deadline,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = (details.get("exception") or {}).get("description") or details.get("text")
            raise BrowserError(f"the checker's own script failed: {_short(str(text))}")
        return result.get("result", {}).get("value")

    # -- pages ----------------------------------------------------------------------------------------

    def check(self, path: str | Path, timeout: float = 30.0, *, exercise: bool = True) -> PageReport:
        """Open ``path`` in a fresh tab and report its console errors, broken images and links, requests.

        Args:
            path: an HTML file.
            timeout: seconds for the whole check.
            exercise: also click every sortable table header (runs the page's sort script).

        Returns:
            The :class:`PageReport`.

        Raises:
            FileNotFoundError: ``path`` is not a file.
            BrowserError: Chromium failed or the page did not finish within ``timeout``.
        """
        page = Path(path).resolve()
        if not page.is_file():
            raise FileNotFoundError(f"{page}: no such page")
        deadline = time.monotonic() + timeout
        target_id = self.call("Target.createTarget", {"url": "about:blank"}, deadline=deadline)["targetId"]
        session_id = ""
        try:
            session_id = self.call(
                "Target.attachToTarget", {"targetId": target_id, "flatten": True}, deadline=deadline
            )["sessionId"]
            state = _PageState(self.send, session_id)
            self._sessions[session_id] = state
            for domain in ("Runtime", "Log", "Page", "Network"):
                self.call(f"{domain}.enable", None, session_id, deadline=deadline)
            self.call(
                "Fetch.enable",
                {"patterns": [{"urlPattern": "http://*"}, {"urlPattern": "https://*"}]},
                session_id,
                deadline=deadline,
            )
            state.loaded = False
            report = PageReport(page)
            navigation = self.call("Page.navigate", {"url": page.as_uri()}, session_id, deadline=deadline)
            if navigation.get("errorText"):
                report.console_errors.append(f"navigation failed: {navigation['errorText']}")
                return report
            while not state.loaded:
                self._pump(deadline, f"loading {page.name}")
            self._evaluate(_SETTLE_JS, session_id, deadline)
            if exercise:
                report.sort_clicks = int(self._evaluate(_EXERCISE_JS, session_id, deadline) or 0)
            found = self._evaluate(_COLLECT_JS, session_id, deadline)
            self._evaluate(_SETTLE_JS, session_id, deadline)  # let late console messages arrive
            report.images = int(found["images"])
            report.broken_images = [_short(b) for b in found["broken"]]
            links = [(raw, resolved) for raw, resolved in found["links"]]
            report.links = len(links)
            report.broken_links, report.external_links = classify_links(page, links, set(found["ids"]))
            report.console_errors.extend(state.console_errors)
            report.network_requests = list(state.network_requests)
            return report
        finally:
            self._sessions.pop(session_id, None)
            if not self._closed and self._to_browser >= 0:
                try:
                    self.call("Target.closeTarget", {"targetId": target_id}, timeout=5)
                except BrowserError:
                    pass


def check_page(path: str | Path, timeout: float = 30) -> PageReport:
    """Check one page in its own Chromium process (use :class:`Browser` for many pages).

    Args:
        path: an HTML file.
        timeout: seconds for the page (Chromium's start-up has its own 30 s limit).

    Returns:
        The :class:`PageReport`.

    Raises:
        ChromiumNotFound: no Chromium binary.
        BrowserError: Chromium failed or the page did not finish in time.
    """
    with Browser() as browser:
        return browser.check(path, timeout)


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.browser_check PAGE...``: print each page's problems; exit 1 if any."""
    pages = [Path(p) for p in (sys.argv[1:] if argv is None else argv)]
    failed = 0
    with Browser() as browser:
        for page in pages:
            start = time.perf_counter()
            report = browser.check(page)
            seconds = time.perf_counter() - start
            status = "ok" if report.ok else "FAIL"
            print(
                f"{status} {page} ({seconds:.2f} s, {report.images} images, {report.links} links, "
                f"{report.sort_clicks} sort clicks, {len(report.external_links)} external links)"
            )
            for line in report.problems():
                print(f"  {line}")
            failed += not report.ok
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
