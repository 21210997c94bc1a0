"""Make the photo -> named faces example of docs/results.md: a group photo and the page.

The photo is made of ORIGINAL photos (not crops) of people the model has never
seen in training: the held-out shard's pictures of known people, plus some of
the people held out as unknowns. They are pasted, enlarged, onto a plain
background, so finding, aligning and naming the faces is left to `facefold`::

    python docs/examples/photo_example.py RUN DATA SOURCE OUT.jpg [--screenshot PAGE.png]

RUN is an open-set case folder (``facefold cv --unknown-people``), DATA the
dataset it was trained on, SOURCE the folder of original photos the crops
were made from (``facefold faces crop SOURCE --out CROPS``, same relative
names).
With ``--screenshot``, the page of ``facefold serve RUN`` is opened in headless
Chromium (selenium), the photo uploaded and the rendered page saved.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

from PIL import Image

from facefold.data.images import file_sha256
from facefold.data.records import list_shards, read_labels, read_shard


def held_out_sources(data: Path, shard: int) -> dict[str, list[str]]:
    """Person -> source files (relative, without suffix) of the crops in ``shard``.

    The shard records carry the SHA-256 of their source file; the build
    manifest's ``source`` folder holds those files.
    """
    manifest = json.loads((data / "manifest.json").read_text())
    crops = Path(manifest["source"])
    wanted = {r.source_sha256 for r in read_shard(list_shards(data)[shard])}
    found: dict[str, list[str]] = {}
    for path in sorted(crops.rglob("*.png")):
        if file_sha256(path) in wanted:
            rel = path.relative_to(crops).with_suffix("")
            found.setdefault(rel.parent.name, []).append(str(rel))
    return found


def compose_photo(sources: list[Path], scale: float = 1.6, gap: int = 30) -> Image.Image:
    """Paste ``sources`` side by side, enlarged by ``scale``, on a light background."""
    faces = [Image.open(p).convert("RGB") for p in sources]
    faces = [f.resize((round(f.width * scale), round(f.height * scale))) for f in faces]
    width = sum(f.width for f in faces) + gap * (len(faces) + 1)
    height = max(f.height for f in faces) + 2 * gap
    photo = Image.new("RGB", (width, height), (214, 222, 230))
    x = gap
    for face in faces:
        photo.paste(face, (x, gap))
        x += face.width + gap
    return photo


def screenshot(run: Path, photo: Path, out: Path) -> None:
    """Serve ``run`` on a free localhost port, upload ``photo`` in headless Chromium, save it."""
    import shutil
    import socket

    import uvicorn
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from facefold.predict import Predictor
    from facefold.serve import create_app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(Predictor.load(run)), host="127.0.0.1",
                                           port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1000,820",
                 "--hide-scrollbars"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options,
                              service=Service(executable_path=shutil.which("chromedriver")))
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        driver.find_element(By.ID, "file").send_keys(str(photo.resolve()))
        WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".box .label"))
        time.sleep(0.5)  # let the boxes settle
        driver.save_screenshot(str(out))
    finally:
        driver.quit()
        server.should_exit = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("source", type=Path, help="original photos (e.g. ../shared/datasets/orl)")
    parser.add_argument("out", type=Path, help="the photo to write (.jpg)")
    parser.add_argument("--known", type=int, default=3, help="known people in the photo")
    parser.add_argument("--unknown", type=int, default=1, help="unknown people in the photo")
    parser.add_argument("--screenshot", type=Path)
    args = parser.parse_args()

    run_info = json.loads((args.run / "run.json").read_text())
    shard = run_info["eval_shards"][0]
    unknown = set(json.loads((args.run.parent / "openset.json").read_text())["unknown_people"])
    by_person = held_out_sources(args.data, shard)
    people = read_labels(args.data)
    known = [p for p in people if p not in unknown and p in by_person][: args.known]
    strangers = [p for p in people if p in unknown and p in by_person][: args.unknown]
    chosen = [by_person[p][0] for p in known + strangers]
    print("photo of", ", ".join(f"{c} ({'unknown' if c.split('/')[0] in unknown else 'known'})"
                                for c in chosen))
    sources = [next(args.source.glob(f"{c}.*")) for c in chosen]
    compose_photo(sources).save(args.out, quality=92)
    print("wrote", args.out)
    if args.screenshot:
        screenshot(args.run, args.out, args.screenshot)
        print("wrote", args.screenshot)


if __name__ == "__main__":
    main()
