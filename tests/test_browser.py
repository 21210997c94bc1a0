"""End to end in a real headless Chromium: upload a photo on the page, read the names it draws.

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium``
package; skips cleanly without them. The server runs in a thread on a free
localhost port. The screenshot is written to ``$FACEFOLD_SCREENSHOT`` when set.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from browserkit import chromium, page_wait, require_chromium, served
from conftest import SHARED_DATASETS
from PIL import Image

require_chromium()

from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

from facefold.predict import Predictor, load_detector  # noqa: E402
from facefold.serve import create_app  # noqa: E402


@pytest.fixture(scope="module")
def server(predictor: Predictor) -> Iterator[str]:
    """The app served by uvicorn in a thread; yields its URL."""
    with served(create_app(predictor)) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


def test_photo(tmp_path: Path) -> Path:
    """A photo to upload: real celeb21 faces pasted on a background when a detector can find
    them, else one face crop (taken whole by the fallback rule)."""
    people = sorted(p for p in (SHARED_DATASETS / "celeb21").glob("*") if p.is_dir())[:2]
    path = tmp_path / "photo.png"
    if load_detector() is not None and people:
        photo = Image.new("RGB", (640, 360), (225, 230, 236))
        for i, person in enumerate(people):
            face = Image.open(sorted(person.glob("*.jpg"))[0]).convert("RGB").resize((200, 200))
            photo.paste(face, (60 + i * 320, 60))
    else:
        rng = np.random.default_rng(0)
        photo = Image.fromarray(rng.integers(0, 256, (40, 40, 3), np.uint8)).resize((240, 240))
    photo.save(path)
    return path


test_photo.__test__ = False  # a helper, not a test


def test_upload_shows_boxes_and_names(server, browser, predictor, tmp_path):
    photo_path = test_photo(tmp_path)
    with Image.open(photo_path) as photo:
        expected = predictor.recognize_photo(photo.convert("RGB"), top_k=3)
    browser.get(server)
    assert "who is in this photo" in browser.title
    browser.find_element(By.ID, "file").send_keys(str(photo_path))
    page_wait(browser, 60).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".box .label")) == len(expected)
        or "error" in d.find_element(By.ID, "status").get_attribute("class")
    )
    assert browser.find_element(By.ID, "status").get_attribute("class") != "error"
    labels = browser.find_elements(By.CSS_SELECTOR, ".box .label")

    def texts(label, kind: str) -> list[str]:  # shown or not (the other guesses: on hover)
        return [e.get_attribute("textContent") for e in label.find_elements(By.CLASS_NAME, kind)]

    shown = [texts(label, "name") for label in labels]
    assert shown == [[n for n, _ in face.top] for face in expected]
    # A classifier's values are probabilities, shown as such (a similarity never is).
    values = [texts(label, "prob") for label in labels]
    percents = [[f"{100 * p:.1f} %" for _, p in face.top] for face in expected]
    assert values == [p if face.known else ["", *p]  # an unknown face: "unknown", no value
                      for p, face in zip(percents, expected, strict=True)]
    assert all(label.is_displayed() for label in labels)
    # Each label lies inside its own face's box, so it covers no neighbouring face.
    for box in browser.find_elements(By.CSS_SELECTOR, ".box"):
        outer, inner = box.rect, box.find_element(By.CLASS_NAME, "label").rect
        assert outer["x"] - 1 <= inner["x"] and outer["y"] - 1 <= inner["y"]
        assert inner["x"] + inner["width"] <= outer["x"] + outer["width"] + 1
        assert inner["y"] + inner["height"] <= outer["y"] + outer["height"] + 1
    screenshot = Path(os.environ.get("FACEFOLD_SCREENSHOT") or tmp_path / "page.png")
    assert browser.save_screenshot(str(screenshot))
    # The box sits on the image: inside the photo's rectangle.
    photo_rect = browser.find_element(By.ID, "photo").rect
    box_rect = browser.find_element(By.CSS_SELECTOR, ".box").rect
    assert photo_rect["x"] - 1 <= box_rect["x"] <= photo_rect["x"] + photo_rect["width"]


def test_bad_file_shows_the_error(server, browser, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    browser.get(server)
    browser.find_element(By.ID, "file").send_keys(str(bad))
    page_wait(browser, 30).until(
        lambda d: "not an image" in d.find_element(By.ID, "status").text
    )
    assert browser.find_elements(By.CSS_SELECTOR, ".box") == []
