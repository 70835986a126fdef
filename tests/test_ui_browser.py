"""The UI in a real browser: ``orchestra ui`` serves the app on 127.0.0.1, headless Chromium types a message, waits
for the answer and its routing panel, and saves a screenshot to ``artifacts/ui-chat.png`` (a CI artifact).

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/browser.sh`` installs them); skipped without them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any
from pathlib import Path

import pytest

from orchestra import AgentCard, Orchestra

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "artifacts" / "ui-chat.png"
CHROME_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
)
SERVER_START_S = 90
ANSWER_S = 60

if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(f"needs {CHROMIUM} and {CHROMEDRIVER} (Debian chromium, chromium-driver: run .ci/browser.sh)",
                allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install selenium)")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the UI server exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the UI server did not answer within {SERVER_START_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """``orchestra ui`` on a free loopback port, over a SQLite store holding one function agent."""
    (tmp_path / "browser_agents.py").write_text("def echo(query):\n    return 'echo: ' + query\n")
    url_db = f"sqlite:///{tmp_path / 'browser.db'}"
    sys.path.insert(0, str(tmp_path))
    try:
        app = Orchestra(store=url_db)
        app.registry.add_agent(AgentCard(id="echo", description="Repeats the request.", backend="function",
                                         function="browser_agents:echo"))
    finally:
        sys.path.remove(str(tmp_path))
    port = _free_port()
    env = {
        **os.environ,
        "ORCHESTRA_DB_URL": url_db,
        "ORCHESTRA_UI_PROFILE": "none",
        "ORCHESTRA_UI_ROUTER": "all",
        "ORCHESTRA_UI_AGGREGATOR": "pass-through",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])),
    }
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "orchestra.cli", "ui", "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, log)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the CLI and the streamlit server it started
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument("--window-size=1400,1800")
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def test_chat_in_a_browser_shows_the_answer_and_the_routing_panel(server: str, browser: webdriver.Chrome) -> None:
    try:
        _chat_and_open_the_panel(browser, server)
    except Exception:
        # what the browser showed when it failed: a CI artifact beside the screenshot
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SCREENSHOT.with_name("ui-chat-failure.png")))
        raise
    assert SCREENSHOT.stat().st_size > 10_000


def _chat_and_open_the_panel(browser: webdriver.Chrome, server: str) -> None:
    browser.get(server)
    # Streamlit redraws the messages as the run's events arrive: an element found one moment can be replaced the
    # next (StaleElementReferenceException in CI), so a wait looks again rather than failing
    wait = WebDriverWait(browser, ANSWER_S, ignored_exceptions=(StaleElementReferenceException,))
    box = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "[data-testid='stChatInputTextArea']")))
    box.send_keys("hello browser")
    box.send_keys(Keys.ENTER)

    wait.until(lambda d: any("echo: hello browser" in m.text for m in d.find_elements(By.CSS_SELECTOR, "[data-testid='stChatMessage']")))
    expander = wait.until(lambda d: next(
        (e for e in d.find_elements(By.CSS_SELECTOR, "[data-testid='stChatMessage'] [data-testid='stExpander']")
         if "Routing:" in e.find_element(By.TAG_NAME, "summary").text),
        None,
    ))
    summary = expander.find_element(By.TAG_NAME, "summary")
    assert "all → echo" in summary.text
    summary.click()  # open it: router, rationale, candidates, answers, costs and the decision graph
    wait.until(lambda d: expander.find_elements(By.CSS_SELECTOR, "[data-testid='stGraphVizChart'] svg"))
    # textContent, not .text: Selenium's .text leaves out what is scrolled out of view, and the panel is long
    def panel_text(_: object) -> str:
        return expander.find_element(By.CSS_SELECTOR, "[data-testid='stExpanderDetails']").get_attribute("textContent") or ""

    wait.until(lambda d: "Answer passed through" in panel_text(d))
    details = panel_text(None)
    assert "every agent (1)" in details and "Answer passed through" in details
    time.sleep(1)  # let the graph finish its layout transition before the picture
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT))


def test_the_onboarding_form_is_empty_again_after_an_agent_is_added(server: str, browser: webdriver.Chrome) -> None:
    """The form keeps what was typed while a field is refused, and empties once the agent is added (it kept the
    values, so a second press was a duplicate-id error)."""
    browser.get(f"{server}/agents")
    wait = WebDriverWait(browser, ANSWER_S)

    def field(label: str) -> Any:
        return wait.until(lambda d: next((
            element.find_element(By.CSS_SELECTOR, "input, textarea")
            for element in d.find_elements(By.CSS_SELECTOR, "[data-testid='stTextInput'], [data-testid='stTextArea']")
            if element.find_element(By.TAG_NAME, "label").text.strip().startswith(label)
        ), None))

    field("Id").send_keys("shouter")
    field("Description").send_keys("Repeats the request in capitals.")
    field("Function").send_keys("browser_agents:echo")
    backend = wait.until(lambda d: next(
        (s for s in d.find_elements(By.CSS_SELECTOR, "[data-testid='stSelectbox']") if "Backend" in s.text), None))
    backend.click()
    wait.until(lambda d: next((o for o in d.find_elements(By.CSS_SELECTOR, "[role='option']") if o.text == "function"), None)).click()
    button = next(b for b in browser.find_elements(By.TAG_NAME, "button") if b.text.strip() == "Onboard agent")
    button.click()
    wait.until(lambda d: "shouter" in d.find_element(By.TAG_NAME, "body").text and "onboarded" in d.find_element(By.TAG_NAME, "body").text)
    wait.until(lambda d: field("Id").get_attribute("value") == "" and field("Description").get_attribute("value") == "")


def test_the_chat_page_opens_at_its_own_address(server: str, browser: webdriver.Chrome) -> None:
    """/chat opened a "Page not found" dialog: the default page is served at the root, whatever its url_path."""
    wait = WebDriverWait(browser, ANSWER_S)
    for address in (f"{server}/chat", server):
        browser.get(address)
        wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "[data-testid='stChatInputTextArea']")))
        time.sleep(1)  # a "Page not found" dialog comes with the page's first messages
        body = browser.find_element(By.TAG_NAME, "body").text
        assert "Page not found" not in body and "Chat" in browser.find_element(By.TAG_NAME, "h1").text, body[:500]
