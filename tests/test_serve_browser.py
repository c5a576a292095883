"""End to end: the web page in headless Chromium (Debian's `chromium` driven by Playwright's Python
package) uploads a clip, asks, and the streamed answer on the page equals the library's answer.

Skips when /usr/bin/chromium or the `playwright` package is missing. Set AF_SCREENSHOT=path.png to keep
a screenshot of the page.
"""

import os
import shutil

import pytest
import soundfile as sf

from audioflamingo.chat import AudioMark, Round
from audioflamingo.serve import ServeConfig, create_app
from conftest import sine
from test_serve import expected, running, talkative_model

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]  # a fake microphone (a beep) for recording


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server():
    model = talkative_model()
    with running(create_app(model, ServeConfig(model_name="tiny-page", default_max_tokens=12))) as url:
        yield url, model


def test_page_uploads_a_clip_and_streams_answers(browser, server, tmp_path):
    url, model = server
    clip = sine(1.0, 440)
    path = tmp_path / "tone.wav"
    sf.write(path, clip[0], clip[1], subtype="PCM_16")  # the page sends 16-bit WAV: the same samples reach the model
    page = browser.new_page()
    page.goto(url)
    page.wait_for_selector("body[data-ready]", timeout=20000)
    page.set_input_files("#file", str(path))
    page.wait_for_selector("#attachments .chip", timeout=20000)
    assert "(1.0 s)" in page.inner_text("#attachments")  # decoded in the browser and re-encoded as WAV
    page.fill("#question", "What do you hear?")
    page.click("#send")
    page.wait_for_selector(".msg.assistant[data-done]", timeout=60000)
    assert page.locator(".msg.error").count() == 0, page.locator(".msg.error").inner_text()
    first = page.locator(".msg.assistant .text").nth(0).inner_text()
    clip16 = sf.read(path, dtype="float32")
    want, _ = expected(model, [AudioMark(0), Round("What do you hear?")], [clip16], 12)
    assert first == want
    # keep chatting: the follow-up carries the history and the same audio
    page.fill("#question", "Anything else?")
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelectorAll('.msg.assistant[data-done]').length == 2", timeout=60000)
    second = page.locator(".msg.assistant .text").nth(1).inner_text()
    items = [AudioMark(0), Round("What do you hear?", want), Round("Anything else?")]
    assert second == expected(model, items, [clip16], 12)[0]
    assert page.locator(".msg.user audio").count() == 1
    page.screenshot(path=os.environ.get("AF_SCREENSHOT", str(tmp_path / "page.png")), full_page=True)


def test_page_records_from_the_microphone(browser, server):
    url, _ = server
    page = browser.new_page()
    page.goto(url)
    page.wait_for_selector("body[data-ready]", timeout=20000)
    page.click("#record")
    page.wait_for_selector("#record.on", timeout=10000)
    page.wait_for_timeout(1200)
    page.click("#record")
    page.wait_for_selector("#attachments .chip", timeout=20000)
    assert "recording-" in page.inner_text("#attachments")
    page.fill("#question", "What was that?")
    page.click("#send")
    page.wait_for_selector(".msg.assistant[data-done]", timeout=60000)
    assert page.locator(".msg.error").count() == 0, page.locator(".msg.error").inner_text()
    assert page.locator(".msg.user audio").count() == 1
