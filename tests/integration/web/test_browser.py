"""The object page in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright.

The server is set up as deployed: DEBUG off, ``collectstatic`` run, and static files served by the app
itself (WhiteNoise), not by the test server's own static handler. Checks the stylesheet applies, the light
curve is drawn, the three stamps load, toggles redraw, no console errors and no request leaves the server;
keeps a screenshot under ``var/test-artifacts/`` (``BROKER_TEST_ARTIFACTS`` to move it).
"""
import contextlib
import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from pipeline.models import Detection, NonDetection
from tests.integration.broker_data import broker_db, live_server_db_connections  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db(transaction=True)
REPO_ROOT = Path(__file__).resolve().parents[3]


def chromium_path():
    path = os.environ.get("BROKER_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("no Chromium installed (Debian package `chromium`; `make test` installs it where apt-get works)")
    return path


@contextlib.contextmanager
def chromium_page():
    """A page of headless Chromium; start it after the test's database queries (Playwright's sync API runs an
    event loop in this thread, where Django would refuse them)."""
    executable = chromium_path()
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        except Exception as exc:
            pytest.skip(f"Chromium at {executable} does not start: {exc}")
        try:
            yield browser.new_page(viewport={"width": 1300, "height": 900})
        finally:
            browser.close()


class DeployedServer:
    """The site on a live-server thread with nothing added to the app: no test static-file handler."""

    def __init__(self):
        from django.db import connections
        from django.test.testcases import LiveServerThread

        shared = {c.alias: c for c in connections.all() if c.vendor == "sqlite" and c.is_in_memory_db()}
        self.thread = LiveServerThread("localhost", static_handler=lambda app: app, connections_override=shared)
        self.thread.daemon = True
        for conn in shared.values():
            conn.inc_thread_sharing()
        self.thread.start()
        self.thread.is_ready.wait()
        if self.thread.error:
            raise self.thread.error
        self.url = f"http://localhost:{self.thread.port}"

    def stop(self):
        self.thread.terminate()
        for conn in self.thread.connections_override.values():
            conn.dec_thread_sharing()


@pytest.fixture
def deployed_server(settings, tmp_path, live_server_db_connections):
    """DEBUG off and ``collectstatic`` into a fresh STATIC_ROOT, as `make migrate` does before serving."""
    from django.core.management import call_command

    settings.DEBUG = False
    settings.STATIC_ROOT = tmp_path / "static"
    call_command("collectstatic", "--noinput", verbosity=0)
    assert (settings.STATIC_ROOT / "pipeline").is_dir()
    server = DeployedServer()
    yield server
    server.stop()


def artefact_dir():
    folder = Path(os.environ.get("BROKER_TEST_ARTIFACTS", REPO_ROOT / "var" / "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_object_page_in_chromium(broker_db, deployed_server):
    chromium_path()
    # the object with most alerts (a real one where ../shared/data is present), and what its page must show
    oid = max(broker_db["all"], key=lambda o: (Detection.objects.filter(oid=o, has_stamp=True).count(), o))
    n_detections = Detection.objects.filter(oid=oid, magpsf__isnull=False).count()
    n_limits = NonDetection.objects.filter(oid=oid).count()
    n_dubious = Detection.objects.filter(oid=oid, dubious=True).count()
    n_corrected = Detection.objects.filter(oid=oid, magpsf_corr__isnull=False).count()
    n_g = Detection.objects.filter(oid=oid, fid=1).count()
    stamped = [str(c) for c in Detection.objects.filter(oid=oid, has_stamp=True).order_by("mjd")
               .values_list("candid", flat=True)]
    from django.db import connections

    connections.close_all()
    host = urlsplit(deployed_server.url).netloc
    problems, outside, failed = [], [], []

    def only_this_server(route):
        if urlsplit(route.request.url).netloc != host and not route.request.url.startswith("data:"):
            outside.append(route.request.url)
            return route.abort()
        return route.continue_()

    with chromium_page() as page:
        page.on("console", lambda msg: problems.append(f"{msg.type}: {msg.text}")
                if msg.type in ("error", "warning") else None)
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        page.route("**/*", only_this_server)
        page.goto(f"{deployed_server.url}/object/{oid}")
        # the stylesheet applies (header.top's background from style.css)
        assert page.eval_on_selector("header.top", "e => getComputedStyle(e).backgroundColor") == "rgb(22, 33, 58)"
        page.wait_for_selector('#lightcurve[data-ready="1"]')
        page.wait_for_load_state("networkidle")

        assert page.locator("#lightcurve svg circle.detection").count() == n_detections
        assert page.locator("#lightcurve svg path.limit").count() == n_limits
        assert page.locator("#lightcurve svg circle.dubious").count() == n_dubious
        for kind in ("science", "template", "difference"):
            size = page.eval_on_selector(f"#stamp-{kind}",
                                         "img => img.complete ? [img.naturalWidth, img.naturalHeight] : null")
            assert size and size[0] > 100 and size[1] > 100, kind

        # hovering a point tells its magnitude, time and candid
        page.hover("#lightcurve svg circle.detection >> nth=0")
        assert page.is_visible("#lc-tip") and "candid" in page.inner_text("#lc-tip")
        # corrected magnitudes: one point per detection that has one
        page.check("input[name=lcmode][value=corrected]")
        assert page.locator("#lightcurve svg circle.detection").count() == n_corrected
        page.check("input[name=lcmode][value=difference]")
        # folded at the best period (Multiband_period): every point drawn twice, over two cycles
        if page.is_enabled("#lc-fold"):
            page.check("#lc-fold")
            assert page.locator("#lightcurve svg circle.detection").count() == 2 * n_detections
            assert "phase" in page.inner_text("#lightcurve")
            page.uncheck("#lc-fold")
        # a click on a band in the legend hides it, a second click shows it again
        if n_g:
            page.click(".band-toggle[data-fid='1']")
            assert page.locator("#lightcurve svg circle.detection").count() == n_detections - n_g
            page.click(".band-toggle[data-fid='1']")
            assert page.locator("#lightcurve svg circle.detection").count() == n_detections
        # a click on a detection with stamps shows that alert's stamps
        if len(stamped) > 1:
            page.locator("#lightcurve svg circle.detection[stroke='#16213a']").first.click()
            page.wait_for_function(f"document.getElementById('stamp-science').src.includes('{stamped[0]}')")
            page.wait_for_load_state("networkidle")
        page.screenshot(path=str(artefact_dir() / "object_page.png"), full_page=True)

    assert not problems, problems
    assert not outside, f"requests left the server: {outside}"
    assert not failed, failed


@pytest.mark.parametrize("page_path, rendered", [
    ("/ztf/v1/redoc", "h1:has-text('Alert broker ZTF API')"),
    ("/ztf/v1/docs", ".swagger-ui .info .title:has-text('Alert broker ZTF API')"),
])
def test_api_docs_render_with_nothing_from_outside(broker_db, deployed_server, page_path, rendered):
    """ReDoc and Swagger UI draw the schema in Chromium and request nothing from another host."""
    chromium_path()
    host = urlsplit(deployed_server.url).netloc
    outside, failed = [], []

    def only_this_server(route):
        if urlsplit(route.request.url).netloc != host and not route.request.url.startswith(("data:", "blob:")):
            outside.append(route.request.url)
            return route.abort()
        return route.continue_()

    with chromium_page() as page:
        page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        page.route("**/*", only_this_server)
        page.goto(f"{deployed_server.url}{page_path}")
        page.wait_for_selector(rendered, timeout=60_000)
        page.wait_for_load_state("networkidle")
    assert not outside, f"requests left the server: {outside}"
    assert not failed, failed


OVERFLOWING_TABLES = """() => [...document.querySelectorAll('.card table')].filter(table => {
    const card = table.closest('.card');
    const clipped = getComputedStyle(card).overflowX !== 'visible';
    return !clipped && table.getBoundingClientRect().right > card.getBoundingClientRect().right + 0.5;
}).map(table => table.closest('.card').querySelector('h2')?.textContent || '(card)')"""


@pytest.fixture
def listed_objects(db):
    """Rows as the ingest writes them (this module's tests each start from an empty database)."""
    from pipeline.models import Object, OutlierScore

    for i in range(30):
        obj = Object.objects.create(oid=f"ZTFSIM24aapi{i:03d}"[:15], simulated=True, meanra=123.456789 + i,
                                    meandec=-45.678912, ndet=40 + i, firstmjd=60000.12345, lastmjd=60100.54321 + i,
                                    corrected=False)
        OutlierScore.objects.create(oid=obj, version="hrf-1.0.0", branch=("Transient", "Stochastic", "Periodic")[i % 3],
                                    score=0.9 + i / 1000, is_outlier=True)


@pytest.mark.parametrize("page_path", ["/", "/outliers?all=1", "/pipeline"])
@pytest.mark.parametrize("width", [1400, 1300, 800])
def test_tables_stay_inside_their_cards(listed_objects, deployed_server, page_path, width):
    chromium_path()
    with chromium_page() as page:
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(f"{deployed_server.url}{page_path}")
        page.wait_for_load_state("networkidle")
        assert page.locator(".card table").count() > 0
        assert page.evaluate(OVERFLOWING_TABLES) == []
        assert page.evaluate("document.documentElement.scrollWidth") <= width, "the page scrolls sideways"
