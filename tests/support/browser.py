"""The browser tests' checks: Debian's Chromium driven by Playwright, axe-core and the keyboard.

The fixtures that start the browser and open pages are in tests/browser/conftest.py; what a test
calls on a page is here:

    await axe_violations(page)              axe-core (from npm) run in the page; [] when accessible
    await keyboard_unreached(page)          interactive elements the Tab key never reaches; [] when all are
    await screenshot(page, "today")         docs/console/today.png
    await wait_for(locator, "the queue")    a locator's state, failing with what was awaited
    await wait_until(page, "() => ...", "the refresh")  a condition in the page, likewise
    page_errors(page)                       JavaScript errors and console errors (a CSP refusal is one)
    await horizontal_overflow(page)         CSS pixels the page is wider than its viewport (200 % zoom)

For a condition outside the page (a record in the database, an email) use `tests.support.eventually`.
Playwright's own `expect(locator, "what").to_have_text(...)` waits too and says what it expected.
"""

from __future__ import annotations

import json
import os
import re
import weakref
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Locator,
    Page,
    Playwright,
    Request,
    Response,
)
from playwright.async_api import (
    Error as PlaywrightError,
)
from playwright.async_api import (
    TimeoutError as PlaywrightTimeoutError,
)

from tests.support import WAIT_SCALE

ROOT = Path(__file__).resolve().parents[2]
#: Debian's package (deploy/local.py chromium installs it); CHROMIUM names another build
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
#: Playwright adds --headless and a fresh --user-data-dir of its own (a temporary profile per
#: launch, deleted on close). Without the background-networking flags Chromium keeps trying Google's
#: hosts, which this machine's closed network refuses.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
#: what `make console-assets` installs from package-lock.json (npm ci)
NODE_MODULES = ROOT / "node_modules"
HTMX_JS = NODE_MODULES / "htmx.org" / "dist" / "htmx.min.js"
AXE_JS = NODE_MODULES / "axe-core" / "axe.min.js"
#: where the console's screenshots go: .local/screenshots on a test run (a run leaves the clone clean);
#: `make console-screenshots` writes them to docs/console, where the READMEs show them
SCREENSHOTS = Path(os.environ.get("CONSOLE_SCREENSHOTS") or ROOT / ".local" / "screenshots")

#: every page: a staff member's second screen in a Japanese office
CONTEXT: dict[str, Any] = {
    "locale": "ja-JP",
    "timezone_id": "Asia/Tokyo",
    "viewport": {"width": 1280, "height": 800},
}
#: the same screen at 200 % browser zoom: half the CSS pixels, twice the device pixels (WCAG 1.4.10)
ZOOM_200: dict[str, Any] = {"viewport": {"width": 640, "height": 400}, "device_scale_factor": 2}
#: a tablet held upright (10.9-inch class)
TABLET: dict[str, Any] = {
    "viewport": {"width": 820, "height": 1180},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}
ACTION_TIMEOUT = 10.0  # seconds a click, fill or navigation may take before the test fails
WAIT = 10.0 * WAIT_SCALE  # seconds `wait_for` and `wait_until` wait by default (tests.support.WAIT_SCALE)
SERIOUS = ("serious", "critical")


def asset(path: Path) -> Path:
    """A file `make console-assets` installs; a clear failure when it has not run."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path.relative_to(ROOT)} is missing: run `make console-assets` "
            "(npm ci --ignore-scripts from package-lock.json)"
        )
    return path


async def launch(pw: Playwright) -> Browser:
    """Debian's Chromium, headless, with the flags that work on this machine."""
    if not os.access(CHROMIUM, os.X_OK):
        raise FileNotFoundError(
            f"no Chromium at {CHROMIUM}: run `make chromium` (apt-get install chromium fonts-noto-cjk, as "
            "root) or set CHROMIUM to another build; Playwright's own browser download cannot work here"
        )
    return await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=list(CHROMIUM_ARGS))


# --- what a page reported: JavaScript errors, console errors, refused requests ---

_logs: weakref.WeakKeyDictionary[Page, list[str]] = weakref.WeakKeyDictionary()
MAX_LOG = 50


def watch(page: Page) -> None:
    """Keep the page's errors (for `page_errors`) and its refused requests (for a failure's report)."""
    log = _logs.setdefault(page, [])

    def note(line: str) -> None:
        if len(log) < MAX_LOG:
            log.append(line)

    def console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            where = msg.location.get("url")
            note(f"console error: {msg.text}" + (f" ({where})" if where else ""))

    def response(r: Response) -> None:
        if r.status >= 400:
            note(f"http {r.status}: {r.request.method} {r.url}")

    def failed(r: Request) -> None:
        note(f"request failed: {r.method} {r.url} ({r.failure})")

    page.on("console", console)
    page.on("pageerror", lambda exc: note(f"javascript error: {exc}"))
    page.on("response", response)
    page.on("requestfailed", failed)


def page_log(page: Page) -> list[str]:
    """Everything `watch` kept for the page, in order."""
    return list(_logs.get(page, []))


def page_errors(page: Page) -> list[str]:
    """The page's JavaScript errors and console errors (a script or style the CSP refused is one).

    A 4xx/5xx response is logged by Chromium as a console error too; a page that shows a refusal
    on purpose (403 for a CSRF-less post) has that line here."""
    return [line for line in page_log(page) if line.startswith(("javascript error", "console error"))]


# --- axe-core ---


@dataclass(frozen=True)
class Violation:
    """One axe-core rule a page breaks, with the elements that break it."""

    rule: str
    impact: str
    help: str
    targets: tuple[str, ...]
    summary: str  # axe's failure summary of the first element

    def __str__(self) -> str:
        return f"{self.rule} ({self.impact}): {self.help} at {', '.join(self.targets[:5])}: {self.summary}"


@cache
def _axe_source() -> str:
    return asset(AXE_JS).read_text(encoding="utf-8")


_AXE_RUN = """async (options) => {
  const result = await axe.run(document, options);
  return result.violations.map((v) => ({
    rule: v.id, impact: v.impact || "", help: v.help,
    targets: v.nodes.map((n) => n.target.join(" ")),
    summary: (v.nodes[0] && v.nodes[0].failureSummary || "").replace(/\\s+/g, " ").trim(),
  }));
}"""


async def axe_violations(
    page: Page, impacts: tuple[str, ...] = SERIOUS, *, disable: tuple[str, ...] = ()
) -> list[Violation]:
    """axe-core's violations of the page as it is now, of the given impacts (the console's screens
    assert none serious or critical). The script is evaluated over the DevTools protocol, which the
    page's Content-Security-Policy does not govern, so the page under test keeps its real CSP.
    `disable` turns rules off by id, for a test that says why."""
    if not await page.evaluate("() => typeof window.axe === 'object'"):
        await page.evaluate(_axe_source())
    options = {"resultTypes": ["violations"], "rules": {rule: {"enabled": False} for rule in disable}}
    found = await page.evaluate(_AXE_RUN, options)
    return [
        Violation(v["rule"], v["impact"], v["help"], tuple(v["targets"]), v["summary"])
        for v in found
        if v["impact"] in impacts
    ]


# --- the keyboard ---

_KEYBOARD = (Path(__file__).with_name("keyboard.js")).read_text(encoding="utf-8")


async def keyboard_unreached(
    page: Page, selectors: list[str] | None = None, *, max_tabs: int | None = None
) -> list[str]:
    """What the Tab key never reaches, one line per element; [] when everything is reached.

    With no selectors, every visible, enabled interactive element counts: links, buttons, form
    fields, summaries, [tabindex] >= 0, ARIA buttons, links, checkboxes and switches, [onclick], and
    elements with hx-get/post/put/patch/delete that a click triggers (a clickable table row that
    is not focusable is the mistake this finds). A radio group counts as reached when any of its
    radios is (arrow keys move within it). With selectors, every visible element each one matches
    must be reached, and a selector that matches nothing is reported. Tab is pressed from where
    focus is until it has gone round the page once."""
    await page.evaluate(f"() => {{ {_KEYBOARD} }}")
    count = await page.evaluate("(s) => window.__keyboard.start(s)", selectors)
    first: int | None = None
    for _ in range(max_tabs or 3 * count + 10):
        await page.keyboard.press("Tab")
        state = await page.evaluate("(s) => window.__keyboard.step(s)", selectors)
        if state["remaining"] == 0 or (state["active"] and state["active"] == first):
            break
        first = first or state["active"] or None
    return list(await page.evaluate("(s) => window.__keyboard.unreached(s)", selectors))


# --- screenshots and waiting ---

SCREENSHOT_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")


async def screenshot(page: Page, name: str, *, directory: Path = SCREENSHOTS, full_page: bool = True) -> Path:
    """The page as a person sees it, written to SCREENSHOTS/NAME.png (name: a-z, 0-9, -)."""
    if not SCREENSHOT_NAME.fullmatch(name):
        raise ValueError(f"screenshot name {name!r}: use a-z, 0-9 and -")
    path = directory / f"{name}.png"  # Playwright makes the directory
    await page.screenshot(path=path, full_page=full_page, animations="disabled", caret="hide")
    return path


async def wait_for(
    locator: Locator,
    what: str,
    *,
    state: Literal["attached", "detached", "hidden", "visible"] = "visible",
    timeout: float = WAIT,
) -> Locator:
    """Wait until the locator is in the state; on timeout fail naming what was awaited."""
    try:
        await locator.wait_for(state=state, timeout=timeout * 1000)
    except PlaywrightTimeoutError:
        raise AssertionError(
            f"timed out after {timeout}s waiting for {what} ({locator} to be {state}) on {locator.page.url}"
        ) from None
    return locator


async def wait_until(page: Page, predicate: str, what: str, *, arg: Any = None, timeout: float = WAIT) -> Any:
    """Wait until a JavaScript function in the page returns something truthy, and return it."""
    try:
        handle = await page.wait_for_function(predicate, arg=arg, timeout=timeout * 1000)
    except PlaywrightTimeoutError:
        raise AssertionError(
            f"timed out after {timeout}s waiting for {what} (`{predicate}` in {page.url})"
        ) from None
    try:
        return await handle.json_value()
    finally:
        await handle.dispose()


async def horizontal_overflow(page: Page) -> int:
    """CSS pixels the document is wider than the viewport: 0 when it reflows (no sideways scrolling)."""
    return int(await page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth"))


async def failure_report(page: Page) -> str:
    """What a failed test's report shows of a page: where it was, what it said, what went wrong."""
    try:
        text = (await page.locator("body").inner_text(timeout=1000))[:1500]
    except PlaywrightError as exc:
        text = f"(no text: {exc.message.splitlines()[0]})"
    lines = [f"url: {page.url}", *page_log(page), "text:", text]
    return "\n".join(lines)


def package_version(package: str) -> str:
    """The version `npm ci` installed (node_modules/<package>/package.json)."""
    meta = json.loads(asset(NODE_MODULES / package / "package.json").read_text(encoding="utf-8"))
    return str(meta["version"])
