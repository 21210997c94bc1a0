"""`facefold label` end to end in a real headless Chromium: a small set labeled with the keys
and the mouse on the page, then the person folders it wrote checked.

The faces are made by hand (tests/labelkit.py), so only the page, the API and the folders
are under test here. Needs Debian's ``chromium`` and ``chromium-driver`` and ``selenium``;
skips cleanly without them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from browserkit import chromium, page_wait, require_chromium, served
from labelkit import Photos, folders, make_photos

require_chromium()
pytest.importorskip("dlib", reason="the dlib extra is not installed")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

from facefold.label import open_session, read_log  # noqa: E402
from facefold.label.app import create_label_app  # noqa: E402
from facefold.label.decisions import LOG_FILE  # noqa: E402
from facefold.label.store import STATE_DIR  # noqa: E402


@pytest.fixture
def labeling(tmp_path) -> Iterator[tuple[Photos, str]]:
    kit = make_photos(tmp_path, {"ann": 5, "bob": 4, "cy": 3})
    session = open_session(kit.photos, kit.faces, size=kit.store.size, log=lambda _: None)
    with served(create_label_app(session)) as url:
        yield kit, url


@pytest.fixture
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    with chromium(tmp_path_factory.mktemp("chromium-profile"), 1200) as driver:
        yield driver


def test_label_a_small_set_with_keys_and_clicks(labeling, browser):
    kit, url = labeling
    ann, bob, cy = kit.ids_of("ann"), kit.ids_of("bob"), kit.ids_of("cy")
    browser.get(url)
    wait = page_wait(browser, 30)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".group")) == 3)
    body = browser.find_element(By.TAG_NAME, "body")
    saved = [0]

    def press(keys: str) -> None:
        browser.switch_to.active_element.send_keys(keys)

    def landed() -> None:  # wait for the page to show the next decision saved
        saved[0] += 1
        wait.until(lambda d: f"decision {saved[0]} saved" in d.find_element(By.ID,
                                                                            "status").text)

    def group_with(face: str):
        return browser.find_element(By.XPATH, f"//div[@class and contains(@class, 'group')]"
                                    f"[.//div[@data-face='{face}']]")

    def face(face_id: str):
        return browser.find_element(By.CSS_SELECTOR, f".face[data-face='{face_id}']")

    # Largest first, no proposals yet: Ann's group is the current one. n, type, Enter.
    assert {e.get_attribute("data-face") for e in browser.find_elements(
        By.CSS_SELECTOR, ".group.current .face")} == set(ann)
    body.send_keys("n")
    press("Ann\n")
    landed()
    assert folders(kit.faces) == {"Ann": sorted(kit.store.faces[f].name for f in ann)}
    # Merge the two remaining groups by mistake (m), then undo it (u).
    browser.find_elements(By.CSS_SELECTOR, ".group .proposal")[0].click()  # the first group
    body.send_keys("m")
    landed()
    assert len(browser.find_elements(By.CSS_SELECTOR, ".group")) == 1
    body.send_keys("u")
    landed()
    assert len(browser.find_elements(By.CSS_SELECTOR, ".group")) == 2
    # Split one of Bob's faces off (click, s), name the rest, then accept the proposal for it.
    face(bob[0]).click()
    body.send_keys("s")
    landed()
    group_with(bob[1]).find_element(By.CSS_SELECTOR, "input.name").send_keys("Bob\n")
    landed()
    proposal = group_with(bob[0]).find_element(By.CLASS_NAME, "proposal")
    proposal.click()  # makes it the current group
    proposal = proposal.text
    assert proposal.startswith("Bob? similarity")
    body.send_keys("a")
    landed()
    # Reject one of Cy's faces (click, 3 = unsure), then name the group with its button.
    face(cy[0]).click()
    body.send_keys("3")
    landed()
    group_with(cy[1]).find_element(By.CSS_SELECTOR, "input.name").send_keys("Cy")
    group_with(cy[1]).find_element(By.XPATH, ".//button[starts-with(., 'Name')]").click()
    landed()
    assert browser.find_elements(By.CSS_SELECTOR, ".group") == []
    assert len(browser.find_elements(By.CSS_SELECTOR, "#rejected .face")) == 1
    people = [e.get_attribute("data-person") for e in browser.find_elements(
        By.CSS_SELECTOR, "#people li")]
    assert people == ["Ann", "Bob", "Cy"]

    name = {f: kit.store.faces[f].name for f in kit.truth}
    assert folders(kit.faces) == {"Ann": sorted(name[f] for f in ann),
                                  "Bob": sorted(name[f] for f in bob),
                                  "Cy": sorted(name[f] for f in cy[1:])}
    log = read_log(kit.faces / STATE_DIR / LOG_FILE)
    assert [d["action"] for d in log] == ["name", "merge", "undo", "split", "name", "accept",
                                          "reject", "name"]
    assert log[6]["reason"] == "unsure" and log[6]["faces"] == cy[:1]


def test_fix_a_wrong_name_from_the_suspects_panel(tmp_path, browser):
    """Faces named (one of Ann's as Bob, one of Cy's as Dee) through the API, then on the page:
    c lists the suspects, v moves the first to the person it seems to be, and the second's
    Keep button keeps its name."""
    kit = make_photos(tmp_path, {"ann": 8, "bob": 8, "cy": 8, "dee": 8}, seed=3)
    wrong = {kit.ids_of("ann")[2]: "Bob", kit.ids_of("cy")[4]: "Dee"}
    session = open_session(kit.photos, kit.faces, size=kit.store.size, log=lambda _: None)
    for person in ("ann", "bob", "cy", "dee"):
        session.decide({"action": "name", "name": person.title(),
                        "faces": [f for f in kit.ids_of(person) if f not in wrong]})
    for face, given in wrong.items():
        session.decide({"action": "name", "faces": [face], "name": given})
    with served(create_label_app(session)) as url:
        browser.get(url)
        wait = page_wait(browser, 30)
        wait.until(lambda d: "0 groups" in d.title)
        browser.find_element(By.TAG_NAME, "body").send_keys("c")

        def suspects(driver) -> list[str]:  # read inside a wait: the panel may be redrawing
            return [r.get_attribute("data-face")
                    for r in driver.find_elements(By.CSS_SELECTOR, ".suspect")]

        first, second = wait.until(lambda d: len(listed := suspects(d)) >= 2 and listed)[:2]
        assert {first, second} == set(wrong)
        browser.find_element(By.TAG_NAME, "body").send_keys("v")
        wait.until(lambda d: "decision 7 saved" in d.find_element(By.ID, "status").text)
        wait.until(lambda d: first not in suspects(d))
        keep = f"//div[@data-face='{second}' and @class='suspect']//button[starts-with(., 'Keep')]"
        wait.until(lambda d: d.find_element(By.XPATH, keep).click() or True)  # again if redrawn
        wait.until(lambda d: "decision 8 saved" in d.find_element(By.ID, "status").text)
        wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, ".suspect"))
    truth = {f: p.title() for f, p in kit.truth.items()}
    name = {f: kit.store.faces[f].name for f in kit.truth}
    assert name[first] in folders(kit.faces)[truth[first]]
    assert name[second] in folders(kit.faces)[wrong[second]]
    log = read_log(kit.faces / STATE_DIR / LOG_FILE)
    assert [(d["action"], d["faces"]) for d in log[6:]] == [("name", [first]),
                                                            ("confirm", [second])]
    assert log[6]["name"] == truth[first]
