"""The playground page in a real headless Chromium, against `fluxgate demo`.

Usage: python check_playground.py http://127.0.0.1:PORT

Drives the page only through its labelled controls (Model, Prompt, Width, Height, the reference
file input, Generate), as a user would:
  1. generates a 512x384 PNG and checks the displayed image's natural size;
  2. makes an edit with two uploaded PNG references ("image 1", "image 2");
  3. types an invalid size (1000x1000 on flux-2-pro) and checks that the page shows, live and
     after Generate, the very message the API returns for it (fetched directly to compare), and
     the live check for a few more sizes and models;
  4. looks at it on a phone-sized screen, and loads the Usage tab.
A screenshot of each step goes to $FLUXGATE_SCREENSHOTS (default: a fresh temporary folder).
Browser console errors (a CSP violation, a script error) fail the check.

Needs Debian's `chromium` and `chromium-driver` (paths from $CHROMIUM_BIN / $CHROMEDRIVER) and
selenium (.ci/browser/requirements.txt); nothing is downloaded at run time.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
import zlib

# Selenium Manager must never fetch a browser or driver: the system's are given explicitly.
os.environ.setdefault("SE_OFFLINE", "true")

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

BASE = sys.argv[1].rstrip("/") if len(sys.argv) > 1 else "http://127.0.0.1:8080"
SHOTS = os.environ.get("FLUXGATE_SCREENSHOTS") or tempfile.mkdtemp(prefix="fluxgate-playground-")
CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
DRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
JOB_TIMEOUT = float(os.environ.get("FLUXGATE_PLAYGROUND_TIMEOUT", "90"))


class CheckFailed(Exception):
    pass


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A solid-colour PNG, written with the standard library only."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + bytes(rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(row * height)) + chunk(b"IEND", b"")


def api_message(path: str, body: dict) -> str:
    """The API's own `error.message` for a request expected to fail."""
    req = urllib.request.Request(
        BASE + path, data=json.dumps(body).encode(), headers={"content-type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raise CheckFailed(f"{path} {body} answered {r.status}, expected a 400")
    except urllib.error.HTTPError as e:
        if e.code != 400:
            raise CheckFailed(f"{path} {body} answered {e.code}, expected a 400") from e
        return json.loads(e.read())["error"]["message"]


def start_browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,1100"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)


class Page:
    def __init__(self, driver: webdriver.Chrome):
        self.d = driver
        self.step = 0

    def by_label(self, text: str):
        """The control a visible <label> with exactly this text names (the label must exist)."""
        labels = self.d.find_elements(By.XPATH, f"//label[normalize-space()='{text}']")
        if not labels:
            raise CheckFailed(f"no label {text!r} on the page")
        return self.d.find_element(By.ID, labels[0].get_attribute("for"))

    def button(self, text: str):
        return self.d.find_element(By.XPATH, f"//button[normalize-space()='{text}']")

    def text(self, element_id: str) -> str:
        return self.d.find_element(By.ID, element_id).text.strip()

    def wait(self, what: str, condition, timeout: float = 20):
        try:
            return WebDriverWait(self.d, timeout, poll_frequency=0.1).until(lambda _: condition())
        except TimeoutException as e:
            raise CheckFailed(f"timed out after {timeout:.0f}s waiting for {what}") from e

    def shot(self, name: str) -> str:
        self.step += 1
        path = os.path.join(SHOTS, f"{self.step:02d}-{name}.png")
        self.d.save_screenshot(path)
        print(f"    screenshot {path}")
        return path

    def type(self, label: str, value: str):
        field = self.by_label(label)
        field.clear()
        field.send_keys(value)

    def choose_model(self, model: str):
        Select(self.by_label("Model")).select_by_value(model)
        self.wait(
            f"{model}'s rules",
            lambda: self.d.execute_script("return document.getElementById('model').dataset.loaded") == model,
        )

    def result_stamp(self) -> str:
        return self.d.execute_script("return document.getElementById('result-image').dataset.done || ''")

    def generate_and_wait(self) -> dict:
        before = self.result_stamp()
        self.button("Generate").click()

        def finished():
            if self.result_stamp() != before:
                return True
            err = self.d.find_element(By.ID, "error")
            if err.is_displayed() and err.text.strip():
                raise CheckFailed(f"the page shows an error instead of an image: {err.text.strip()}")
            return False

        self.wait("the generated image", finished, timeout=JOB_TIMEOUT)
        return self.d.execute_script(
            "const i = document.getElementById('result-image');"
            "return {w: i.naturalWidth, h: i.naturalHeight, src: i.src.slice(0, 5), caption: document.getElementById('result-caption').textContent};"
        )


def check_generate(p: Page):
    p.choose_model("flux-2-pro")
    p.type("Prompt", "a lighthouse at dusk, #ff0088 sky")
    p.type("Width", "512")
    p.type("Height", "384")
    Select(p.by_label("Output format")).select_by_value("png")
    p.type("Seed", "42")
    if p.text("size-error"):
        raise CheckFailed(f"512x384 is valid, but the page says: {p.text('size-error')}")
    image = p.generate_and_wait()
    if (image["w"], image["h"]) != (512, 384):
        raise CheckFailed(f"displayed image is {image['w']}x{image['h']}, asked for 512x384")
    if image["src"] != "blob:":
        raise CheckFailed(f"the image should come from the stream's base64 as a blob: URL, got {image['src']}")
    curl = p.text("curl-code")
    python = p.text("python-code")
    for needle in ('"size":"512x384"', '"stream":true', "/v1/images/generations"):
        if needle not in curl:
            raise CheckFailed(f"the curl snippet lacks {needle}: {curl}")
    if 'client.images.generate(' not in python or 'size="512x384"' not in python or '"seed": 42' not in python:
        raise CheckFailed(f"the Python snippet does not match the request: {python}")
    download = p.d.find_element(By.ID, "download")
    if not download.get_attribute("download") or not download.get_attribute("href").startswith("blob:"):
        raise CheckFailed("no download link for the result")
    p.d.execute_script("window.scrollTo(0, 0)")
    p.shot("generate-512x384")
    return f"{image['w']}x{image['h']} shown ({image['caption']})"


def check_edit(p: Page, folder: str):
    paths = []
    for name, colour in (("red.png", (220, 40, 40)), ("blue.png", (40, 60, 220))):
        path = os.path.join(folder, name)
        with open(path, "wb") as f:
            f.write(png(96, 64, colour))
        paths.append(path)
    p.choose_model("flux-2-pro")
    files = p.by_label("Add reference images")
    if files.get_attribute("type") != "file":
        raise CheckFailed("the reference control is not a file input")
    files.send_keys("\n".join(paths))
    p.wait("two references listed", lambda: len(p.d.find_elements(By.CSS_SELECTOR, "#ref-list li")) == 2)
    names = [e.text for e in p.d.find_elements(By.CSS_SELECTOR, "#ref-list .ref-name")]
    if names != ["image 1", "image 2"]:
        raise CheckFailed(f"references are shown as {names}, expected image 1, image 2")
    p.type("Prompt", "the lighthouse of image 1 painted in the colours of image 2")
    p.type("Width", "768")
    p.type("Height", "512")
    image = p.generate_and_wait()
    if (image["w"], image["h"]) != (768, 512):
        raise CheckFailed(f"edited image is {image['w']}x{image['h']}, asked for 768x512")
    if "2 references" not in image["caption"]:
        raise CheckFailed(f"the result does not say it used two references: {image['caption']}")
    curl = p.text("curl-code")
    if "/v1/images/edits" not in curl or curl.count("image[]=@") != 2:
        raise CheckFailed(f"the curl snippet is not a two-reference edit: {curl}")
    p.d.execute_script("document.getElementById('ref-list').scrollIntoView()")
    p.shot("edit-two-references")
    return f"{image['w']}x{image['h']} from 2 references"


def check_invalid_size(p: Page):
    # References from the previous step are removed first: this is a plain generation.
    while p.d.find_elements(By.CSS_SELECTOR, "#ref-list button"):
        p.d.find_elements(By.CSS_SELECTOR, "#ref-list button")[0].click()
    checked = []
    for model, w, h in (
        ("flux-2-pro", 4096, 64),
        ("flux-pro-1.1", 1000, 1000),
        ("flux-kontext-pro", 3000, 1000),
        ("flux-2-pro", 1000, 1000),  # last: the one the screenshot shows
    ):
        expected = api_message("/v1/images/generations", {"model": model, "prompt": "x", "size": f"{w}x{h}"})
        p.choose_model(model)
        p.type("Width", str(w))
        p.type("Height", str(h))
        p.wait(f"the live size message for {model} {w}x{h}", lambda: p.text("size-error") != "")
        live = p.text("size-error")
        if live != expected:
            raise CheckFailed(f"{model} {w}x{h}: the page says {live!r}, the API says {expected!r}")
        checked.append(f"{model} {w}x{h}")
    p.type("Prompt", "a lighthouse at dusk")
    p.button("Generate").click()
    p.wait("the API's error", lambda: p.d.find_element(By.ID, "error").is_displayed())
    shown = p.text("error")
    if shown != expected:
        raise CheckFailed(f"after Generate the page shows {shown!r}, the API says {expected!r}")
    p.d.execute_script("document.getElementById('error').scrollIntoView({block: 'center'})")
    p.shot("invalid-size-1000x1000")
    return f"{expected!r}; live checks equal the API for {', '.join(checked)}"


def check_phone_and_usage(p: Page):
    p.d.set_window_size(390, 844)
    p.d.execute_script("window.scrollTo(0, 0)")
    width = p.d.execute_script("return document.documentElement.scrollWidth")
    if width > 400:
        raise CheckFailed(f"on a 390 px wide screen the page is {width} px wide (it scrolls sideways)")
    p.shot("phone")
    p.d.set_window_size(1280, 1100)
    p.button("Usage").click()
    p.button("Load usage").click()
    p.wait("the usage table", lambda: p.d.find_element(By.ID, "usage-table").is_displayed())
    rows = p.d.find_elements(By.CSS_SELECTOR, "#usage-table tbody tr")
    models = [r.find_elements(By.TAG_NAME, "td")[1].text for r in rows if len(r.find_elements(By.TAG_NAME, "td")) > 1]
    if "flux-2-pro" not in models:
        raise CheckFailed(f"the usage table has no flux-2-pro row: {models}")
    if not p.d.find_elements(By.CSS_SELECTOR, "#usage-chart svg rect"):
        raise CheckFailed("the usage chart has no bars")
    p.shot("usage")
    p.button("Gallery").click()
    items = p.d.find_elements(By.CSS_SELECTOR, "#gallery li img")
    if len(items) < 2:
        raise CheckFailed(f"the gallery shows {len(items)} results, expected at least 2")
    p.shot("gallery")
    return f"no sideways scroll at 390 px; usage rows {models}; gallery {len(items)} items"


def console_errors(driver) -> list[str]:
    errors = []
    for entry in driver.get_log("browser"):
        if entry.get("level") != "SEVERE":
            continue
        message = entry.get("message", "")
        # The invalid-size request is answered 400 on purpose.
        if "status of 400" in message:
            continue
        errors.append(message)
    return errors


def main() -> int:
    os.makedirs(SHOTS, exist_ok=True)
    print(f"playground at {BASE}/ (screenshots in {SHOTS})")
    started = time.monotonic()
    driver = start_browser()
    failures = 0
    try:
        print(f"  browser: {driver.capabilities.get('browserName')} {driver.capabilities.get('browserVersion')}")
        driver.get(BASE + "/")
        page = Page(driver)
        page.wait("the page to load its models", lambda: driver.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
        if driver.title != "fluxgate playground":
            raise CheckFailed(f"unexpected title {driver.title!r}")
        unlabelled = driver.execute_script(
            "return Array.from(document.querySelectorAll('input, select, textarea'))"
            ".filter(e => e.labels.length === 0 || !Array.from(e.labels).some(l => l.textContent.trim()))"
            ".map(e => e.id || e.outerHTML.slice(0, 60));"
        )
        if unlabelled:
            raise CheckFailed(f"controls without a visible label: {unlabelled}")
        with tempfile.TemporaryDirectory() as folder:
            for name, check in (
                ("generate 512x384 -> naturalWidth 512", lambda: check_generate(page)),
                ("edit with two references", lambda: check_edit(page, folder)),
                ("invalid size shows the API's message", lambda: check_invalid_size(page)),
                ("phone-sized screen, usage tab, gallery", lambda: check_phone_and_usage(page)),
            ):
                t = time.monotonic()
                try:
                    detail = check()
                    print(f"  ok   {name} ({time.monotonic() - t:.1f}s): {detail}")
                except Exception as e:  # noqa: BLE001 - every failure is reported, then the next check runs
                    failures += 1
                    print(f"  FAIL {name}: {e}")
                    if not isinstance(e, CheckFailed):
                        traceback.print_exc()
                    try:
                        page.shot("failed")
                    except Exception:  # noqa: BLE001
                        pass
        errors = console_errors(driver)
        if errors:
            failures += 1
            print("  FAIL browser console errors:\n    " + "\n    ".join(errors))
    finally:
        driver.quit()
    print(f"playground: {'all ok' if not failures else f'{failures} failed'} in {time.monotonic() - started:.1f}s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
