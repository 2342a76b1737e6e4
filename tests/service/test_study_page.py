"""The study page in a real browser: three raters complete a 5-item study (both tasks: 10 rankings each) in headless
Chromium driven through chromedriver's WebDriver protocol (plain HTTP; no selenium needed), one by mouse, one by
keyboard with a reload halfway (resume), one using Undo and drag and drop. Every ranking stored must be what the
page showed and what the rater picked, in the order the page showed it."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from rtdgan.service.study.app import StudySettings, create_study_app
from rtdgan.service.study.study import Study
from tests.service.conftest import CHROMIUM, free_port
from tests.service.study_world import make_study

CHROMEDRIVER = Path("/usr/bin/chromedriver")
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C WebDriver element reference key

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromedriver (apt-get install chromium chromium-driver)")]


class Browser:
    """One WebDriver session of headless Chromium (its own profile, so its own cookies: one rater)."""

    def __init__(self, driver: str, profile: Path) -> None:
        self.http = httpx.Client(base_url=driver, timeout=60)
        options = {"binary": str(CHROMIUM), "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                                                     "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                                                     "--window-size=1100,900"]}
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}}
        self.session = self._call("POST", "/session", caps)["sessionId"]

    def _call(self, method: str, path: str, body: dict | None = None) -> Any:
        response = self.http.request(method, path, json=body)
        value = response.json()["value"]
        assert response.status_code == 200, value
        return value

    def do(self, method: str, path: str, body: dict | None = None) -> Any:
        return self._call(method, f"/session/{self.session}{path}", body)

    def open(self, url: str) -> None:
        self.do("POST", "/url", {"url": url})

    def js(self, script: str, *args: Any) -> Any:
        return self.do("POST", "/execute/sync", {"script": script, "args": list(args)})

    def find(self, css: str) -> str:
        return self.do("POST", "/element", {"using": "css selector", "value": css})[ELEMENT]

    def click(self, css: str) -> None:
        self.do("POST", f"/element/{self.find(css)}/click", {})

    def type(self, css: str, text: str) -> None:
        self.do("POST", f"/element/{self.find(css)}/value", {"text": text})

    def keys(self, *keys: str) -> None:
        actions = [a for k in keys for a in ({"type": "keyDown", "value": k}, {"type": "keyUp", "value": k})]
        self.do("POST", "/actions", {"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})

    def wait(self, condition: str, *args: Any, timeout_s: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = self.js(f"return {condition};", *args)
            if value:
                return value
            time.sleep(0.05)
        state = self.js("return [document.body.dataset.state, document.getElementById('status').textContent];")
        raise AssertionError(f"timed out waiting for {condition}; page state: {state}")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.do("DELETE", "")
        self.http.close()


@contextlib.contextmanager
def chromedriver() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen([str(CHROMEDRIVER), f"--port={port}"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/status", timeout=2).json()["value"]["ready"]:
                    break
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextlib.contextmanager
def study_server(study: Study, responses: Path) -> Iterator[tuple[str, Any]]:
    app = create_study_app(StudySettings(study.folder, responses=responses))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not server.started:
        time.sleep(0.05)
    try:
        yield base, app.state.store
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        app.state.store.close()


SHOWN = "return [...document.querySelectorAll('.candidate')].map(b => b.dataset.id);"
# HTML5 drag and drop, dispatched as the browser would (WebDriver's pointer actions do not start an HTML5 drag).
DRAG = """const [from, to] = arguments, data = new DataTransfer();
const el = (id) => document.querySelector(`.candidate[data-id='${id}']`);
el(from).dispatchEvent(new DragEvent("dragstart", {dataTransfer: data, bubbles: true}));
el(to).dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true}));"""


def rank_one(browser: Browser, how: str, seen: list[dict]) -> None:
    """Rank the step on screen (`how`: mouse in display order, keyboard in reverse, "undo": mouse with an Undo
    and drag and drop on alternate steps) and send it."""
    done = int(browser.js("return document.body.dataset.done;"))
    shown = browser.js(SHOWN)
    step = {"item": browser.js("return document.body.dataset.item;"), "task": browser.js("return document.body.dataset.task;"),
            "shown": shown}
    assert browser.js("return document.getElementById('send').disabled;")
    if how == "keyboard":
        browser.keys(*(str(i + 1) for i in reversed(range(len(shown)))))
        step["picked"] = shown[::-1]
        browser.wait("!document.getElementById('send').disabled")
        browser.keys("\ue007")  # Enter
    else:
        order = list(range(len(shown)))
        if how == "undo" and done % 2 == 0:
            order = [1, 0, 2]
            browser.click(f".candidate[data-id='{shown[2]}']")
            browser.click("#undo")
            for i in order:
                browser.click(f".candidate[data-id='{shown[i]}']")
        elif how == "undo":  # by dragging: 2 onto 0 ranks 2 above 0, then 1 onto 0 puts 1 between them
            order = [2, 1, 0]
            browser.js(DRAG, shown[2], shown[0])
            browser.js(DRAG, shown[1], shown[0])
        else:
            for i in order:
                browser.click(f".candidate[data-id='{shown[i]}']")
        assert browser.js("return [...document.querySelectorAll('.candidate .badge')].map(b => b.textContent);") == \
            [str(order.index(i) + 1) for i in range(len(shown))]
        step["picked"] = [shown[i] for i in order]
        browser.click("#send")
    browser.wait("Number(document.body.dataset.done) === arguments[0]", done + 1)
    seen.append(step)


def test_three_raters_complete_a_study_with_a_resume(tmp_path: Path) -> None:
    study = make_study(tmp_path / "world", items=5)
    seen: dict[str, list[dict]] = {"ann": [], "ben": [], "": []}
    with study_server(study, tmp_path / "responses.sqlite") as (base, store), chromedriver() as driver:
        for name, how in (("ann", "mouse"), ("ben", "keyboard"), ("", "undo")):
            browser = Browser(driver, tmp_path / f"profile-{how}")
            try:
                browser.open(f"{base}/")
                browser.wait("document.body.dataset.state === 'start'")
                if name:
                    browser.type("#name", name)
                browser.click("#begin")
                browser.wait("document.body.dataset.state === 'item'")
                assert browser.js("return document.getElementById('progress-text').textContent;") == "0 / 10"
                for k in range(10):
                    if how == "keyboard" and k == 4:  # reload: the cookie brings the rater back where they were
                        before = browser.js("return document.body.dataset.item + document.body.dataset.task;")
                        browser.do("POST", "/refresh", {})
                        browser.wait("document.body.dataset.state === 'item'")
                        assert browser.js("return document.body.dataset.done;") == "4"
                        assert browser.js("return document.getElementById('progress').value;") == 4
                        assert browser.js("return document.body.dataset.item + document.body.dataset.task;") == before
                    rank_one(browser, how, seen[name])
                browser.wait("document.body.dataset.state === 'done'")
                assert not browser.js("return document.getElementById('finished').hidden;")
                page = browser.js("return document.documentElement.outerHTML;")
                assert not [m for m in study.methods if m in page]
            finally:
                browser.close()
        rows = store.responses()
        counts = store.counts()
    assert counts == {"raters": 3, "responses": 30, "planned": 30}
    by_rater: dict[str, list[dict]] = {}
    for r in rows:
        by_rater.setdefault(r["name"], []).append(r)
    assert sorted(by_rater) == ["", "ann", "ben"]
    for name, steps in seen.items():
        stored = by_rater[name]
        assert len(stored) == 10 and {(r["item"], r["task"]) for r in stored} == \
            {(i.id, t) for i in study.items for t in study.tasks}
        for step, r in zip(steps, stored, strict=True):
            item = study.item(step["item"])
            assert item is not None and r["item"] == item.id and r["task"] == step["task"]
            method_of = {v: k for k, v in item.images.items()}
            assert r["shown"] == [method_of[i] for i in step["shown"]]
            assert r["ranking"] == [method_of[i] for i in step["picked"]]
        tasks = [r["task"] for r in stored]
        assert tasks[:5] == [tasks[0]] * 5 and tasks[5:] == [tasks[5]] * 5 and tasks[0] != tasks[5]  # task blocks
