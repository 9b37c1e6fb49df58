"""The documentation site builds offline without a warning, links only to pages that exist, documents
every public name, and renders in a real browser (headless Chromium) as a person would see it.

The build needs the ``docs`` extra (skipped without it). ``SOFTPOOL_DOCS_HTML=path`` checks a site
already built there instead (``.ci/run`` builds it first); ``SOFTPOOL_DOCS_SCREENSHOTS=dir`` keeps the
screenshots; ``SOFTPOOL_DOCS_REQUIRE_BROWSER=1`` turns a missing Chromium into a failure (CI sets it).
"""

import base64
import fcntl
import html.parser
import importlib
import io
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import zlib

import pytest

import softpool_nd

# one worker builds the site (a session fixture) and runs every check of it under pytest-xdist's
# --dist loadgroup (the README's test command); other workers would each build it again
pytestmark = pytest.mark.xdist_group("docs_site")

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
#: The flags of ``.ci/run``'s build: warnings are errors, every cross-reference must resolve.
SPHINX_FLAGS = ["-W", "--keep-going", "-n", "-q", "-b", "html"]
#: Pages a person opens first, and what each must show.
PAGES = {
    "index.html": "softpool_nd",
    "guides/torch.html": "PyTorch",
    "api.html": "API reference",
    "gallery.html": "Gallery",
    "design.html": "Design",
}


@pytest.fixture(scope="session")
def site(tmp_path_factory):
    given = os.environ.get("SOFTPOOL_DOCS_HTML")
    if given:
        path = pathlib.Path(given).resolve()
        assert (path / "index.html").is_file(), f"SOFTPOOL_DOCS_HTML={given} holds no built site"
        return path
    for module in ("sphinx", "numpydoc", "pydata_sphinx_theme"):
        pytest.importorskip(module, reason=f"{module} is not installed (pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("html")
    run = subprocess.run(
        [sys.executable, "-m", "sphinx", *SPHINX_FLAGS, str(DOCS), str(out)],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert run.returncode == 0, f"the docs build failed or warned:\n{run.stdout}\n{run.stderr}"
    return out


def _inventory_names(site):
    """Names of the objects the built site documents, from its objects.inv."""
    raw = (site / "objects.inv").read_bytes()
    body = zlib.decompress(raw.split(b"\n", 4)[4]).decode()
    return {line.split(" ", 1)[0] for line in body.splitlines()}


def _public_modules():
    modules = [softpool_nd]
    for name in ("softpool_nd.torch", "softpool_nd.jax"):
        try:
            modules.append(importlib.import_module(name))
        except ImportError:  # the site then cannot document it either: the build fails
            pass
    return modules


def test_every_public_name_has_a_reference_entry(site):
    documented = _inventory_names(site)
    expected = [f"{m.__name__}.{name}" for m in _public_modules() for name in m.__all__ if not name.startswith("__")]
    assert "softpool_nd.pool" in expected
    missing = [name for name in expected if name not in documented]
    assert not missing, f"public names without an API entry: {missing}"


class _Page(html.parser.HTMLParser):
    """The ids a page defines, the local links (href, src) it makes and the remote resources it loads."""

    def __init__(self):
        super().__init__()
        self.ids, self.links, self.remote = set(), [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("name"):
            self.ids.add(attrs["name"])
        for key in ("href", "src"):
            value = attrs.get(key)
            if not value:
                continue
            if not urllib.parse.urlsplit(value).scheme and not value.startswith("//"):
                self.links.append(value)
            elif tag in ("script", "link", "img", "iframe") and value.startswith(("http:", "https:", "//")):
                self.remote.append(value)


def _parse(path):
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def test_no_broken_internal_links(site):
    # the site's pages; _static holds the theme's assets (and a Jinja template named .html)
    pages = {p: _parse(p) for p in site.rglob("*.html") if "_static" not in p.relative_to(site).parts}
    broken, checked = [], 0
    for path, page in pages.items():
        for link in page.links:
            parts = urllib.parse.urlsplit(link)
            target = (path.parent / urllib.parse.unquote(parts.path)).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            checked += 1
            if not target.is_file():
                broken.append(f"{path.relative_to(site)}: {link} (no file)")
            elif parts.fragment and target.suffix == ".html":
                ids = (pages.get(target) or _parse(target)).ids
                if urllib.parse.unquote(parts.fragment) not in ids:
                    broken.append(f"{path.relative_to(site)}: {link} (no such anchor)")
    assert checked > 500, f"only {checked} links found: is the site complete?"
    assert not broken, "broken internal links:\n" + "\n".join(broken)


def test_pages_load_nothing_from_the_network(site):
    """Read offline, a page must look the same: no script, stylesheet or image from elsewhere
    (MathJax from a CDN, for one, would leave raw LaTeX)."""
    remote = {
        f"{p.relative_to(site)}: {url}"
        for p in site.rglob("*.html")
        if "_static" not in p.relative_to(site).parts
        for url in _parse(p).remote
    }
    assert not remote, "remote resources:\n" + "\n".join(sorted(remote))


def test_site_has_every_page_of_the_guide(site):
    for page in (
        "getting_started",
        "semantics",
        "guides/numpy",
        "guides/cupy",
        "guides/torch",
        "guides/jax",
        "guides/dask",
        "performance",
        "design",
        "changelog",
        "gallery",
        "api",
    ):
        assert (site / f"{page}.html").is_file(), page


def _text(path):
    """The visible text of a built page, roughly: its HTML without tags."""
    return re.sub(r"<[^>]+>", " ", path.read_text(encoding="utf-8"))


def test_design_page_lists_every_module(site):
    """The design page's module list is generated: every source file of the package is on it."""
    text = _text(site / "design.html")
    package = ROOT / "softpool_nd"
    files = [f for pattern in ("*.py", "*.cu", "*.h") for f in package.rglob(pattern) if "__pycache__" not in f.parts]
    missing = [str(f.relative_to(ROOT)) for f in files if str(f.relative_to(ROOT)) not in text]
    assert len(files) > 40 and not missing, f"source files missing from the design page: {missing}"


def test_changelog_page_is_the_changelog(site):
    """CHANGELOG.md is the changelog page's one source, shown as formatted text, not as Markdown."""
    text = _text(site / "changelog.html")
    headings = re.findall(r"^##+ (.+)$", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    assert headings and all(h.split("`")[0].strip() in text for h in headings)
    assert not re.search(r"(^|\n)\s*#{2,} |\]\(https?:", text), "raw Markdown on the changelog page"


# --- the browser -----------------------------------------------------------------------------------------


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("SOFTPOOL_DOCS_REQUIRE_BROWSER") == "1":
        pytest.fail("SOFTPOOL_DOCS_REQUIRE_BROWSER=1 but no chromium is installed (apt-get install chromium)")
    pytest.skip("no chromium on PATH (Debian: apt-get install chromium); the rendering checks need a browser")


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe):
    JSON messages ending in a NUL byte, Chromium reading fd 3 and writing fd 4. No extra package."""

    def __init__(self, executable, width=1280, height=900):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # Chromium's ends at fds >= 10, then moved to 3 and 4 by the bash that starts it (dash takes only
        # one-digit fds): at those numbers neither redirection can overwrite the other end
        child = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_chrome_r, from_chrome_w)]
        for fd in (to_chrome_r, from_chrome_w):
            os.close(fd)
        self._profile = tempfile.mkdtemp(prefix="softpool-docs-chromium-")
        args = [
            "--headless",
            "--remote-debugging-pipe",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            f"--user-data-dir={self._profile}",
            "about:blank",
        ]
        self._proc = subprocess.Popen(
            [
                "bash",
                "-c",
                f'exec "$@" 3<&{child[0]} 4>&{child[1]} {child[0]}<&- {child[1]}>&-',
                "bash",
                executable,
                *args,
            ],
            pass_fds=child,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for fd in child:
            os.close(fd)
        self._buffer, self._next_id, self.events = b"", 0, []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime"):
            self.call(f"{domain}.enable", session=True)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            session=True,
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def _read(self, deadline):
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("chromium did not answer within 60 s")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium closed the pipe (exit status {self._proc.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method, session=False, **params):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 60
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method):
        deadline = time.monotonic() + 60
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._read(deadline))

    def open(self, url):
        self.events.clear()
        self.call("Page.navigate", session=True, url=url)
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression):
        result = self.call(
            "Runtime.evaluate", session=True, expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self):
        return base64.b64decode(self.call("Page.captureScreenshot", session=True, format="png")["data"])

    def close(self):
        try:
            self.call("Browser.close")
        except (RuntimeError, OSError, TimeoutError):
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)
        shutil.rmtree(self._profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    b = Browser(_chromium())
    yield b
    b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    given = os.environ.get("SOFTPOOL_DOCS_SCREENSHOTS")
    path = pathlib.Path(given) if given else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


# what a person sees: the page's state after load, read in the browser
_STATE = """(() => {
  const imgs = [...document.images];
  const main = document.querySelector('main') || document.body;
  return {
    title: document.title,
    h1: (document.querySelector('main h1') || {}).textContent || '',
    header_links: document.querySelectorAll('header a.nav-link, .bd-header a.nav-link').length,
    sidebar_links: document.querySelectorAll('.bd-sidebar-primary a').length,
    text: main.innerText.length,
    images: imgs.map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0,
                            shown: i.getBoundingClientRect().width})),
    css: getComputedStyle(document.body).fontFamily,
    theme_css: [...document.styleSheets].some(s => (s.href || '').includes('pydata-sphinx-theme')),
  };
})()"""


@pytest.mark.parametrize("page", list(PAGES))
def test_page_renders_in_chromium(site, browser, shots, page):
    browser.open((site / page).as_uri())
    state = browser.evaluate(_STATE)
    errors = [e["params"]["exceptionDetails"] for e in browser.events if e.get("method") == "Runtime.exceptionThrown"]
    name = page.replace("/", "_").replace(".html", ".png")
    png = browser.screenshot()
    (shots / name).write_bytes(png)

    assert "softpool_nd" in state["title"], state["title"]
    assert PAGES[page] in state["h1"], state["h1"]
    assert state["header_links"] >= 3, f"navigation bar missing: {state}"
    assert state["text"] > 500, f"page body nearly empty: {state}"
    assert state["theme_css"], "the theme's stylesheet did not load"
    broken = [i["src"] for i in state["images"] if not i["ok"]]
    assert not broken, f"images that did not load: {broken}"
    if page == "index.html":
        demo = [i for i in state["images"] if i["src"].endswith("demo.png")]
        assert demo and demo[0]["ok"] and demo[0]["shown"] > 300, f"the demo picture is not shown: {state['images']}"
    assert not errors, f"JavaScript errors: {errors}"
    _assert_rendered(png, name)


def _assert_rendered(png, name):
    """The screenshot is the viewport's size and shows a page, not a blank or single-colour canvas."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    Image = pytest.importorskip("PIL.Image")
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.size == (1280, 900), image.size
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, f"{name}: {len(colours or [])} colours: a blank page?"
    # no single colour covers the whole picture: text and navigation are drawn on the background
    assert max(count for count, _ in colours) < 0.97 * image.size[0] * image.size[1], name
