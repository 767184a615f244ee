"""The web status page of `oneroot serve`, in headless Chromium (Selenium), on loopback.

The node's events come as a node sends them: its boot script and kernel fetched, then its
stage reports POSTed, all from the node's own address (127.0.0.21, a loopback address), and
the page follows without a reload. The administrator's listener refuses power actions without
the token, with a wrong one, and from another origin."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from oneroot.model.paths import Paths
from oneroot.ops.admin_token import csrf_token
from oneroot.ops.power import PowerAction, PowerResult, stage_events, store_recorder
from oneroot.testing.ports import free_port
from oneroot.testing.serving import running

PAGE_WAIT = 60  # seconds: a bound for the page to show a change on a loaded machine

pytestmark = pytest.mark.integration

ONEROOT = [sys.executable, "-m", "oneroot"]
NODE_IP = "127.0.0.21"
INJECTED = "<img src=x onerror=window.__pwned=1>"
REPO = Path(__file__).resolve().parents[2]
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1440,560")


@dataclass
class Served:
    url: str  # the port nodes reach
    admin: str  # the administrator's listener
    home: Path
    tmp: Path

    def oneroot(self, *args: str) -> str:
        return subprocess.run([*ONEROOT, "--home", str(self.home), *args], check=True,
                              capture_output=True, text=True, timeout=30).stdout


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", *args], capture_output=True,
                          text=True, timeout=30)


def status_code(result: subprocess.CompletedProcess[str]) -> int:
    return int(result.stdout.rsplit("\n", 1)[-1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("web")
    home, boot = tmp / "home", tmp / "boot"
    base = [*ONEROOT, "--home", str(home)]
    subprocess.run([*base, "init", "--server", "127.0.0.1", "--subnet", "127.0.0.0/24",
                    "--image-root", str(tmp), "--boot-dir", str(boot),
                    "--state-dir", str(tmp / "state")], check=True, capture_output=True)
    for name, mac, ip in (("node01", "52:54:00:00:00:01", NODE_IP),
                          ("node02", "52:54:00:00:00:02", "127.0.0.22")):
        subprocess.run([*base, "node", "add", name, "--mac", mac, "--ip", ip], check=True,
                       capture_output=True)
    boot.mkdir(exist_ok=True)
    (boot / "vmlinuz").write_bytes(os.urandom(64 * 1024))
    port, admin_port = free_port(), free_port()
    with running([*base, "serve", "--no-dhcp", "--no-tftp", "--no-nfs", "--bind", "127.0.0.1",
                  "--http-port", str(port), "--admin-listen", f"127.0.0.1:{admin_port}"],
                 tmp / "serve.log"):
        yield Served(url=f"http://127.0.0.1:{port}", admin=f"http://127.0.0.1:{admin_port}",
                     home=home, tmp=tmp)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium')}")
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def node_sends(served: Served, *reports: tuple[str, str, str]) -> None:
    """What a booting node sends, from its own address."""
    for stage, status, message in reports:
        done = curl("--interface", NODE_IP, "-d", f"stage={stage}", "-d", f"status={status}",
                    "--data-urlencode", f"message={message}", f"{served.url}/api/v1/report")
        assert status_code(done) == 200, done.stdout + done.stderr
        time.sleep(0.3)  # phases long enough to see


def row(browser: webdriver.Chrome, node: str) -> dict[str, str]:
    found: dict[str, str] = browser.execute_script(
        "const r = document.getElementById('node-' + arguments[0]);"
        "return r ? {stage: r.dataset.stage, cls: r.className,"
        " message: r.querySelector('.message').textContent,"
        " phases: [...r.querySelectorAll('g.phase')].map(g => g.dataset.phase).join(' '),"
        " buttons: r.querySelectorAll('button').length} : {};", node)
    return found


def test_node_boots_live_on_the_admin_page(served: Served, browser: webdriver.Chrome,
                                           tmp_path: Path) -> None:
    login = served.oneroot("admin", "token", "--url", served.admin.removeprefix("http://"))
    browser.get(login.strip())  # sets the cookie, then shows the page
    wait = WebDriverWait(browser, PAGE_WAIT)
    wait.until(lambda b: row(b, "node01").get("stage") == "never booted")
    assert row(browser, "node01")["buttons"] == 4  # on off reboot reset, administrator only
    browser.execute_script("window.__loaded = 1")  # gone if the page reloads
    for path in ("/boot/node01.ipxe", "/boot/vmlinuz"):
        fetched = curl("--interface", NODE_IP, "-o", "/dev/null", served.url + path)
        assert status_code(fetched) == 200
        time.sleep(0.3)
    node_sends(served, ("dhcp", "ok", "eth0 127.0.0.21"), ("layers", "ok", "3 layers"),
               ("union", "ok", INJECTED), ("switch_root", "ok", ""),
               ("init", "ok", "systemd"), ("runlevel", "ok", "multi-user"))
    wait.until(lambda b: row(b, "node01").get("stage") == "runlevel")
    shown = row(browser, "node01")
    assert browser.execute_script("return window.__loaded") == 1, "the page was reloaded"
    assert shown["cls"] == "up"
    assert shown["phases"] == "loader kernel layers union init runlevel"
    durations = browser.execute_script(
        "return [...document.querySelectorAll('#node-node01 text.duration')]"
        ".map(t => t.textContent)")
    assert len(durations) == 6 and all(d.endswith(" s") for d in durations)
    # The injected message was shown as text, never parsed as HTML.
    node_sends(served, ("failed", "failed", f"layers: {INJECTED}"))
    wait.until(lambda b: INJECTED in b.find_element(By.ID, "errors").text)
    assert browser.execute_script("return window.__pwned") is None
    assert browser.find_elements(By.CSS_SELECTOR, "#nodes img, #errors img") == []
    assert "hint: a layer did not mount" in browser.find_element(By.ID, "errors").text
    node_sends(served, ("init", "ok", "systemd"), ("runlevel", "ok", "multi-user"))
    wait.until(lambda b: row(b, "node01").get("stage") == "runlevel")
    shot = tmp_path / "web-status.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("ONEROOT_UPDATE_SCREENSHOT"):
        shutil.copyfile(shot, REPO / "docs" / "web-status.png")


def test_power_stages_stored_by_oneroot_power_reach_the_page_live(
        served: Served, browser: webdriver.Chrome) -> None:
    """`oneroot power off|on` (another process) stores `off` and `power-on`; serve's watcher
    pushes them: the row goes `off`, its timeline ends in an `off` phase, then a new boot."""
    browser.get(served.url + "/")
    wait = WebDriverWait(browser, PAGE_WAIT)
    wait.until(lambda b: row(b, "node01").get("stage") not in (None, "never booted"))
    browser.execute_script("window.__loaded = 1")
    record = store_recorder(Paths(home=served.home))
    record(stage_events([PowerResult(node="node01", action=PowerAction.OFF, bmc="x")],
                        now=time.time()))
    wait.until(lambda b: row(b, "node01").get("stage") == "off")
    shown = row(browser, "node01")
    assert shown["cls"] == "off" and shown["phases"].endswith("runlevel off")
    record(stage_events([PowerResult(node="node01", action=PowerAction.ON, bmc="x")],
                        now=time.time()))
    wait.until(lambda b: row(b, "node01").get("stage") == "power-on")
    assert row(browser, "node01")["phases"] == "power-on"
    assert browser.execute_script("return window.__loaded") == 1, "the page was reloaded"


def test_node_port_is_read_only(served: Served, browser: webdriver.Chrome) -> None:
    browser.get(served.url + "/")
    WebDriverWait(browser, PAGE_WAIT).until(
        lambda b: row(b, "node02").get("stage") == "never booted")
    assert row(browser, "node02")["buttons"] == 0
    assert browser.find_element(By.ID, "mode").text == "read-only"
    assert status_code(curl("-X", "POST", f"{served.url}/api/v1/admin/power")) in (404, 405)


def power(served: Served, *headers: str) -> subprocess.CompletedProcess[str]:
    args = [a for h in headers for a in ("-H", h)]
    return curl(*args, "-H", "Content-Type: application/json", "-d",
                json.dumps({"node": "node02", "action": "off"}),
                f"{served.admin}/api/v1/admin/power")


def test_admin_refuses_without_token_or_cross_origin(served: Served) -> None:
    token = served.oneroot("admin", "token").strip()
    assert (served.home / "admin-token").stat().st_mode & 0o777 == 0o600
    csrf = f"X-Oneroot-CSRF: {csrf_token(token)}"
    assert status_code(power(served, csrf)) == 401
    assert status_code(power(served, f"Cookie: oneroot_admin={token[:-1]}x", csrf)) == 401
    assert status_code(power(served, "Authorization: Bearer wrong")) == 401
    cookie = f"Cookie: oneroot_admin={token}"
    assert status_code(power(served, cookie, csrf, "Origin: http://evil.example")) == 403
    assert status_code(power(served, cookie)) == 403  # no CSRF header
    assert status_code(curl(f"{served.admin}/")) == 401
    # With everything right the action runs: node02 has no BMC, so it fails as the CLI would.
    done = power(served, cookie, csrf, f"Origin: {served.admin}")
    assert status_code(done) == 502
    assert json.loads(done.stdout.rsplit("\n", 1)[0])["error"]
