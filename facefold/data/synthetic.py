"""A SYNTHETIC face dataset: crude cartoon faces drawn with numpy + Pillow.

Nothing here is a photograph of a real person and nothing is downloaded. Each
"person" is a random set of face parameters (face shape, skin tone, eyes,
eyebrows, nose, mouth, hair, maybe glasses or a beard); each image of that
person redraws the same parameters with per-image nuisance variation (small
pose change, expression, lighting, background, noise, hair jitter, glasses not
always worn, beard sometimes shaved, sometimes a cap or an occluder).
The result is laid out like any facefold input folder::

    out_dir/synthetic_00/0000.png
    out_dir/synthetic_00/0001.png
    ...
    out_dir/synthetic_09/0059.png

It exists so that the toolkit has an embedded, offline demo dataset and so that
tests can train on something with a known answer. The task is meant to be
learnable by a small CNN but not trivial: per-image variation is large enough
that two people with similar parameters get confused.

Generation is fully deterministic: every person's parameters and every image
get their own random generator derived from ``(seed, person[, image])``, so the
same arguments give byte-identical PNG files regardless of generation order
(given the same numpy and Pillow versions: a different rasteriser or zlib may
change pixels or compressed bytes).
"""

from __future__ import annotations

import colorsys
import dataclasses
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from facefold.atomic import atomic_path

__all__ = [
    "FaceIdentity",
    "identity_rng",
    "image_rng",
    "make_synthetic_faces",
    "person_name",
    "render_face",
    "sample_identity",
]

Colour = tuple[int, int, int]

# Faces are drawn at SUPERSAMPLE × size and box-downsampled: cheap anti-aliasing
# for the polygon edges, which Pillow's ImageDraw does not anti-alias itself.
SUPERSAMPLE = 2

# Hair styles, drawn as shapes (see _draw_hair_back / _draw_hair_front).
HAIR_STYLES = ("bald", "short", "long", "curly", "fringe")
# Beard styles (index into this tuple).
BEARD_STYLES = ("none", "moustache", "goatee", "full")

_SKIN_LIGHT = np.array([241.0, 212.0, 188.0])
_SKIN_MID = np.array([200.0, 148.0, 112.0])
_SKIN_DARK = np.array([98.0, 64.0, 44.0])
_HAIR_PALETTE = (
    (24, 21, 21),  # black
    (62, 42, 28),  # dark brown
    (108, 72, 42),  # brown
    (146, 68, 34),  # auburn
    (206, 172, 108),  # blond
    (156, 154, 150),  # grey
)
_IRIS_PALETTE = (
    (92, 58, 30),  # brown
    (46, 32, 22),  # dark brown
    (72, 116, 170),  # blue
    (82, 126, 82),  # green
    (120, 130, 140),  # grey
    (132, 102, 52),  # hazel
)
_FRAME_PALETTE = ((20, 20, 20), (90, 55, 30), (170, 170, 175), (120, 20, 30))


@dataclasses.dataclass(frozen=True)
class FaceIdentity:
    """Everything that stays the same across one synthetic person's images.

    Lengths are in canvas units: the image is the unit square, x to the right
    and y downwards, so the values do not depend on the output size.
    """

    face_aspect: float  # face half-width / half-height
    jaw: float  # > 0 narrows the chin (pointed), < 0 widens it (square)
    skin: Colour
    eye_spacing: float  # horizontal distance from the face centre to each eye
    eye_y: float  # vertical position of the eyes
    eye_size: float  # half-width of an eye
    iris: Colour
    brow_gap: float  # distance from eye centre up to the eyebrow
    brow_thickness: float
    brow_arch: float
    brow_tilt: float  # > 0 raises the inner ends (worried look), < 0 lowers them
    nose_length: float
    nose_width: float
    mouth_y: float
    mouth_width: float  # half-width of the mouth
    lip_thickness: float
    mouth_curve: float  # resting curvature; > 0 smiles
    lip: Colour
    hair: Colour
    hair_style: int  # index into HAIR_STYLES
    hairline: float  # y of the hairline in the middle of the forehead
    hair_volume: float  # how far the hair stands out from the skull
    glasses: bool
    glasses_round: bool
    frame: Colour
    beard: int  # index into BEARD_STYLES
    ear_size: float


def person_name(index: int, people: int = 100) -> str:
    """Folder name of synthetic person ``index``: ``synthetic_00``, ``synthetic_01``, ….

    The number is zero-padded to at least two digits, wider if ``people`` needs it,
    so that the folders sort in person order.
    """
    width = max(2, len(str(people - 1)))
    return f"synthetic_{index:0{width}d}"


def identity_rng(seed: int, person: int) -> np.random.Generator:
    """The generator that decides person ``person``'s identity parameters.

    Derived with a SeedSequence spawn key instead of a running generator so that
    the result does not depend on how many persons/images were drawn before.
    """
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0, person)))


def image_rng(seed: int, person: int, image: int) -> np.random.Generator:
    """The generator for the per-image variation of image ``image`` of ``person``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, person, image)))


def _jitter(rng: np.random.Generator, colour, sd: float) -> Colour:
    """A colour with independent Gaussian noise of ``sd`` on each channel, clipped to 0..255."""
    values = np.asarray(colour, dtype=float) + rng.normal(0.0, sd, 3)
    return tuple(int(v) for v in np.clip(np.rint(values), 0, 255))


def _shade(colour: Colour, factor: float) -> Colour:
    """``colour`` scaled by ``factor`` (darker below 1), clipped to 0..255."""
    return tuple(min(255, max(0, round(c * factor))) for c in colour)


def _mix(a: Colour, b: Colour, t: float) -> Colour:
    """Linear blend: ``a`` at t=0, ``b`` at t=1."""
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b, strict=True))


def sample_identity(rng: np.random.Generator) -> FaceIdentity:
    """Draw one random synthetic person.

    Takes a numpy Generator (consumed), returns a frozen FaceIdentity. Ranges are
    wide enough that people look different, but continuous, so with enough people
    some pairs are close and the identification task stays non-trivial.
    """
    # Skin: a point on a light → mid → dark tone ramp, a warm/cool undertone (red
    # vs blue) and only a little free per-channel jitter, which would turn it green.
    tone = rng.uniform(0.0, 1.0)
    if tone < 0.5:
        base = _SKIN_LIGHT + (_SKIN_MID - _SKIN_LIGHT) * (tone / 0.5)
    else:
        base = _SKIN_MID + (_SKIN_DARK - _SKIN_MID) * ((tone - 0.5) / 0.5)
    undertone = rng.uniform(-8.0, 8.0)
    skin = _jitter(rng, base + np.array([undertone, 0.0, -undertone]), 3.0)

    # Hair: a palette colour blended part way towards another one (natural in-between
    # shades such as dark blond or salt-and-pepper) instead of random channel noise.
    first, second = rng.integers(len(_HAIR_PALETTE), size=2)
    hair = _jitter(
        rng, _mix(_HAIR_PALETTE[first], _HAIR_PALETTE[second], rng.uniform(0.0, 0.35)), 4.0
    )
    iris = _jitter(rng, _IRIS_PALETTE[rng.integers(len(_IRIS_PALETTE))], 10.0)
    # Lips: the skin pulled towards a muted red, so they stay plausible on every tone.
    lip = _jitter(rng, _mix(skin, (165, 62, 70), rng.uniform(0.3, 0.55)), 6.0)

    glasses = bool(rng.uniform() < 0.25)
    beard_p = rng.uniform()
    beard = 0 if beard_p < 0.62 else 1 if beard_p < 0.76 else 2 if beard_p < 0.86 else 3

    return FaceIdentity(
        face_aspect=float(rng.uniform(0.70, 0.90)),
        jaw=float(rng.uniform(-0.12, 0.38)),
        skin=skin,
        eye_spacing=float(rng.uniform(0.115, 0.16)),
        eye_y=float(rng.uniform(0.42, 0.47)),
        eye_size=float(rng.uniform(0.048, 0.068)),
        iris=iris,
        brow_gap=float(rng.uniform(0.05, 0.08)),
        brow_thickness=float(rng.uniform(0.010, 0.030)),
        brow_arch=float(rng.uniform(0.0, 0.03)),
        brow_tilt=float(rng.uniform(-0.02, 0.02)),
        nose_length=float(rng.uniform(0.10, 0.16)),
        nose_width=float(rng.uniform(0.035, 0.065)),
        mouth_y=float(rng.uniform(0.72, 0.78)),
        mouth_width=float(rng.uniform(0.075, 0.13)),
        lip_thickness=float(rng.uniform(0.010, 0.026)),
        mouth_curve=float(rng.uniform(-0.008, 0.02)),
        lip=lip,
        hair=hair,
        hair_style=int(rng.integers(len(HAIR_STYLES))),
        hairline=float(rng.uniform(0.19, 0.28)),
        hair_volume=float(rng.uniform(0.02, 0.07)),
        glasses=glasses,
        glasses_round=bool(rng.uniform() < 0.5),
        frame=_jitter(rng, _FRAME_PALETTE[rng.integers(len(_FRAME_PALETTE))], 6.0),
        beard=beard,
        ear_size=float(rng.uniform(0.035, 0.05)),
    )


class _Painter:
    """ImageDraw in canvas units, with the per-image pose applied to every point.

    All shapes are polygons or polylines, so the pose (rotation, scale, shift) is
    applied exactly to the points instead of resampling a rendered layer: no
    blurring, no transparent-edge fringes, and it is cheaper.
    """

    def __init__(self, image: Image.Image, angle_deg: float, scale: float, shift: np.ndarray):
        self.draw = ImageDraw.Draw(image)
        self.px = float(image.size[0])  # canvas unit → pixels
        a = np.deg2rad(angle_deg)
        self.linear = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        self.centre = np.array([0.5, 0.5])
        self.shift = shift
        self.scale = scale

    def _points(self, pts) -> list[tuple[float, float]]:
        p = np.asarray(pts, dtype=float).reshape(-1, 2)
        q = (p - self.centre) @ self.linear.T + self.centre + self.shift
        return [tuple(xy) for xy in (q * self.px).tolist()]

    def polygon(self, pts, fill: Colour) -> None:
        self.draw.polygon(self._points(pts), fill=fill)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, fill: Colour, n: int = 40):
        t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
        self.polygon(np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1), fill)

    def line(self, pts, fill: Colour, width: float) -> None:
        w = max(1, round(width * self.scale * self.px))
        self.draw.line(self._points(pts), fill=fill, width=w, joint="curve")


def _face_outline(cx: float, cy: float, rx: float, ry: float, jaw: float, n: int = 72):
    """Points of the face contour: an ellipse whose lower half is pinched by ``jaw``."""
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    s = np.sin(t)
    # Only the lower half (s > 0 with y pointing down) is narrowed, most at the chin.
    pinch = 1.0 - jaw * np.where(s > 0, s, 0.0) ** 2
    return np.stack([cx + rx * np.cos(t) * pinch, cy + ry * s], axis=1)


def _hair_cap(ident: FaceIdentity, cx, cy, rx, ry, hairline: float, fringe: bool, rng):
    """Polygon of the hair on top of the head: outer skull arc + hairline back."""
    vol = ident.hair_volume
    t = np.linspace(np.pi - 0.18, 2.0 * np.pi + 0.18, 40)
    outer = np.stack([cx + (rx + vol) * np.cos(t), cy + (ry + vol) * np.sin(t)], axis=1)
    temple_y = ident.eye_y - 0.05
    u = np.linspace(1.0, -1.0, 31)
    if fringe:
        # A straight fringe with a ragged lower edge, down near the eyebrows.
        low = ident.eye_y - ident.brow_gap - 0.035
        y = low + rng.uniform(-0.012, 0.012, u.size) * (np.abs(u) < 0.9)
        y = np.where(np.abs(u) > 0.85, temple_y, y)
    else:
        # Flat across the forehead, dropping steeply at the temples.
        y = hairline + (temple_y - hairline) * np.abs(u) ** 4
    inner = np.stack([cx + u * rx * 0.99, y], axis=1)
    return np.concatenate([outer, inner])


def _draw_hair_back(p: _Painter, ident: FaceIdentity, cx, cy, rx, ry) -> None:
    """Hair that is behind the face (long hair, curly volume)."""
    style = HAIR_STYLES[ident.hair_style]
    vol = ident.hair_volume
    if style == "long":
        top = cy - ry * 0.3
        p.ellipse(cx, cy - 0.05, rx + vol + 0.03, ry + vol, ident.hair)
        p.polygon(
            [
                (cx - rx - vol - 0.03, top),
                (cx + rx + vol + 0.03, top),
                (cx + rx + vol + 0.08, 1.2),
                (cx - rx - vol - 0.08, 1.2),
            ],
            ident.hair,
        )
    elif style == "curly":
        t = np.linspace(np.pi - 0.5, 2.0 * np.pi + 0.5, 13)
        r = 0.055 + vol
        for ti in t:
            p.ellipse(
                cx + (rx + vol) * np.cos(ti),
                cy + (ry + vol * 0.5) * np.sin(ti),
                r,
                r,
                ident.hair,
                n=24,
            )


def _draw_hair_front(p: _Painter, ident: FaceIdentity, cx, cy, rx, ry, rng) -> None:
    """Hair that covers the top of the face."""
    style = HAIR_STYLES[ident.hair_style]
    if style == "bald":
        # Just a thin crescent of hair along the sides of the head, above the ears,
        # inside the face contour (outside it, it reads as headphones).
        for side in (-1, 1):
            t = np.linspace(-0.6, 0.1, 14)  # angle from the horizontal, up is negative
            thick = 0.03 * np.sin(np.linspace(0.0, np.pi, t.size)) ** 0.7
            x_out = cx + side * rx * 0.995 * np.cos(t)
            x_in = cx + side * (rx * 0.995 - thick) * np.cos(t)
            y = cy + ry * np.sin(t)
            p.polygon(
                np.concatenate([np.stack([x_out, y], axis=1), np.stack([x_in, y], axis=1)[::-1]]),
                ident.hair,
            )
        return
    p.polygon(_hair_cap(ident, cx, cy, rx, ry, ident.hairline, style == "fringe", rng), ident.hair)


def _draw_eye(p: _Painter, ident: FaceIdentity, ex, ey, openness, gaze) -> None:
    """Almond-shaped eye with iris, pupil, highlight and an upper-lid line."""
    ew = ident.eye_size
    eh = ew * 0.62 * openness
    u = np.linspace(0.0, 1.0, 21)
    bump = 4.0 * u * (1.0 - u)
    xs = ex - ew + 2.0 * ew * u
    upper = np.stack([xs, ey - eh * bump**0.8], axis=1)
    lower = np.stack([xs, ey + eh * 0.8 * bump**0.9], axis=1)
    p.polygon(np.concatenate([upper, lower[::-1]]), (244, 242, 236))
    ri = ew * 0.45
    ix = ex + gaze * ew * 0.25
    p.ellipse(ix, ey, ri, ri, ident.iris, n=28)
    p.ellipse(ix, ey, ri * 0.45, ri * 0.45, (12, 10, 10), n=20)
    p.ellipse(ix + ri * 0.3, ey - ri * 0.3, ri * 0.18, ri * 0.18, (250, 250, 250), n=12)
    # Cover the iris where it pokes out of the almond: redraw skin above and below
    # the lid curves (cheaper than masking, and exact because the skin is flat).
    top = ey - ri - 0.02
    bottom = ey + ri + 0.02
    p.polygon(np.concatenate([upper, [(ex + ew, top), (ex - ew, top)]]), ident.skin)
    p.polygon(np.concatenate([lower, [(ex + ew, bottom), (ex - ew, bottom)]]), ident.skin)
    p.line(upper, _shade(ident.skin, 0.35), 0.008)
    p.line(lower[3:-3], _shade(ident.skin, 0.75), 0.004)


def _draw_brow(p: _Painter, ident: FaceIdentity, ex, ey, side: int, raise_: float) -> None:
    """Eyebrow above the eye at (ex, ey); side = -1 left, +1 right."""
    u = np.linspace(-1.0, 1.0, 15)  # -1 inner end, +1 outer end
    half = ident.eye_size * 1.25
    xs = ex + side * u * half
    ys = ey - ident.brow_gap - raise_ - ident.brow_arch * (1.0 - u**2) - ident.brow_tilt * (-u)
    # Thicker at the inner end, thinner at the outer end, like a drawn brow.
    p.line(np.stack([xs, ys], axis=1), _shade(ident.hair, 0.85), ident.brow_thickness)
    p.line(np.stack([xs[:8], ys[:8]], axis=1), _shade(ident.hair, 0.85), ident.brow_thickness * 1.3)


def _draw_nose(p: _Painter, ident: FaceIdentity, cx, ey) -> None:
    """Nose: a faint shaded wedge, a curved base and two nostrils."""
    tip = ey + ident.nose_length
    nw = ident.nose_width
    p.polygon(
        [
            (cx - 0.01, ey + 0.02),
            (cx + 0.012, ey + 0.02),
            (cx + nw * 0.55, tip),
            (cx - nw * 0.35, tip),
        ],
        _shade(ident.skin, 0.93),
    )
    u = np.linspace(-1.0, 1.0, 15)
    base = np.stack([cx + u * nw, tip + 0.012 * (1.0 - u**2) - 0.012], axis=1)
    p.line(base, _shade(ident.skin, 0.68), 0.007)
    for side in (-1, 1):
        p.ellipse(
            cx + side * nw * 0.45, tip - 0.004, nw * 0.22, 0.007, _shade(ident.skin, 0.5), n=16
        )


def _draw_mouth(p: _Painter, ident: FaceIdentity, cx, my, curve, opening) -> None:
    """Mouth: upper and lower lip around a middle line bent by ``curve`` (> 0 smiles)."""
    mw = ident.mouth_width
    u = np.linspace(-1.0, 1.0, 25)
    xs = cx + u * mw
    # Corners up by curve/2, centre down by curve/2.
    mid = my + curve * (1.0 - u**2) - curve * 0.5
    env = np.sqrt(np.clip(1.0 - u**2, 0.0, 1.0))
    lt = ident.lip_thickness
    upper_mid = mid - opening * env * 0.5
    lower_mid = mid + opening * env * 0.5
    upper = np.stack([xs, upper_mid - lt * env * (1.0 - 0.35 * np.exp(-((u * 6) ** 2)))], axis=1)
    lower = np.stack([xs, lower_mid + lt * 1.25 * env], axis=1)
    if opening > 0.002:
        inside = np.concatenate(
            [np.stack([xs, upper_mid], axis=1), np.stack([xs, lower_mid], axis=1)[::-1]]
        )
        p.polygon(inside, (60, 22, 26))
        teeth = np.stack([xs[6:-6], upper_mid[6:-6] + opening * env[6:-6] * 0.35], axis=1)
        p.polygon(
            np.concatenate([np.stack([xs[6:-6], upper_mid[6:-6]], axis=1), teeth[::-1]]),
            (236, 232, 220),
        )
    p.polygon(np.concatenate([upper, np.stack([xs, upper_mid], axis=1)[::-1]]), ident.lip)
    p.polygon(
        np.concatenate([np.stack([xs, lower_mid], axis=1), lower[::-1]]), _shade(ident.lip, 1.08)
    )
    p.line(np.stack([xs, upper_mid], axis=1), _shade(ident.lip, 0.5), 0.005)


def _draw_beard(p: _Painter, ident: FaceIdentity, outline, cx, my) -> None:
    """Facial hair below/around the mouth, in a slightly darker hair colour."""
    colour = _shade(ident.hair, 0.9)
    style = BEARD_STYLES[ident.beard]
    mw = ident.mouth_width
    if style in ("moustache", "goatee", "full"):
        p.polygon(
            [
                (cx - mw * 1.1, my + 0.005),
                (cx - mw * 0.5, my - 0.045),
                (cx, my - 0.038),
                (cx + mw * 0.5, my - 0.045),
                (cx + mw * 1.1, my + 0.005),
                (cx, my - 0.015),
            ],
            colour,
        )
    if style == "full":
        # The face contour below the cheekbones (outline points are in angle
        # order, so the slice is one contiguous arc from the right side round the
        # chin to the left), closed by an edge that dips around the mouth.
        jaw = outline[outline[:, 1] > my - 0.09]
        top = [
            (cx - mw * 1.4, my - 0.03),
            (cx - mw * 0.6, my - 0.05),
            (cx, my - 0.045),
            (cx + mw * 0.6, my - 0.05),
            (cx + mw * 1.4, my - 0.03),
        ]
        p.polygon(np.concatenate([jaw, top]), colour)
    elif style == "goatee":
        # A tuft from under the lower lip down over the chin.
        chin = float(outline[:, 1].max())
        top = my + ident.lip_thickness * 1.25 + 0.012
        p.polygon(
            [
                (cx - mw * 0.45, top),
                (cx + mw * 0.45, top),
                (cx + mw * 0.5, chin - 0.03),
                (cx + mw * 0.2, chin + 0.005),
                (cx - mw * 0.2, chin + 0.005),
                (cx - mw * 0.5, chin - 0.03),
            ],
            colour,
        )


def _draw_hat(p: _Painter, ident: FaceIdentity, cx, cy, rx, ry, colour: Colour) -> None:
    """A cap: a dome over the top of the head with a brim just above the eyebrows."""
    brim_y = ident.eye_y - ident.brow_gap - 0.045
    top_y = cy - ry - ident.hair_volume - 0.03
    t = np.linspace(np.pi, 2.0 * np.pi, 33)
    dome = np.stack([cx + (rx + 0.045) * np.cos(t), brim_y + (brim_y - top_y) * np.sin(t)], axis=1)
    p.polygon(dome, colour)
    brim = [
        (cx - rx - 0.06, brim_y - 0.02),
        (cx + rx + 0.06, brim_y - 0.02),
        (cx + rx + 0.03, brim_y + 0.012),
        (cx - rx - 0.03, brim_y + 0.012),
    ]
    p.polygon(brim, _shade(colour, 0.8))


def _draw_glasses(p: _Painter, ident: FaceIdentity, ex_l, ex_r, ey, rx) -> None:
    """Frames around both eyes, a bridge and the arms towards the ears."""
    r = ident.eye_size * 1.45
    width = 0.009
    for ex in (ex_l, ex_r):
        if ident.glasses_round:
            t = np.linspace(0.0, 2.0 * np.pi, 33)
            ring = np.stack([ex + r * np.cos(t), ey + 0.005 + r * 0.8 * np.sin(t)], axis=1)
        else:
            h = r * 0.7
            ring = np.array(
                [
                    (ex - r, ey - h),
                    (ex + r, ey - h),
                    (ex + r * 0.9, ey + h),
                    (ex - r * 0.9, ey + h),
                    (ex - r, ey - h),
                ]
            )
        p.line(ring, ident.frame, width)
    p.line(
        [(ex_l + r, ey - 0.01), (0.5 * (ex_l + ex_r), ey - 0.02), (ex_r - r, ey - 0.01)],
        ident.frame,
        width,
    )
    p.line([(ex_l - r, ey - 0.01), (0.5 - rx, ey - 0.015)], ident.frame, width)
    p.line([(ex_r + r, ey - 0.01), (0.5 + rx, ey - 0.015)], ident.frame, width)


def _background(rng: np.random.Generator, px: int) -> Image.Image:
    """A random background: muted base colour, smooth blotches and a few panels."""
    # Muted colours (low saturation) like walls and rooms, not a colour chart.
    hue = rng.uniform(0.0, 1.0)
    sat = rng.uniform(0.0, 0.45)
    val = rng.uniform(0.25, 0.92)
    base = 255.0 * np.array(colorsys.hsv_to_rgb(hue, sat, val))
    # Smooth texture: a coarse random grid upsampled bicubically.
    k = int(rng.integers(2, 6))
    grid = base + rng.normal(0.0, rng.uniform(5.0, 25.0), (k, k, 3))
    grid = np.clip(np.rint(grid), 0, 255).astype(np.uint8)
    img = Image.fromarray(grid, "RGB").resize((px, px), Image.Resampling.BICUBIC)
    # A few axis-aligned panels (door frames, shelves, windows) as background clutter.
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 4))):
        x0, y0 = rng.uniform(-0.2, 1.0, 2) * px
        w, h = rng.uniform(0.1, 0.6, 2) * px
        draw.rectangle([x0, y0, x0 + w, y0 + h], fill=_jitter(rng, base, 25.0))
    return img


def _check_int(name: str, value, minimum: int) -> int:
    """``value`` as an int, or ValueError naming ``name`` if it is not an int >= minimum."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def render_face(identity: FaceIdentity, rng: np.random.Generator, size: int = 112) -> np.ndarray:
    """Draw one image of ``identity`` with per-image variation taken from ``rng``.

    Returns a uint8 array of shape (size, size, 3), RGB. The face is roughly centred
    like an aligned face crop (eyes a bit above the middle, chin near the bottom).
    Per-image variation: pose (rotation ±10°, shift, scale ±8 %), expression (mouth
    curve and opening, eye openness, gaze, brow raise), background, lighting
    (colour balance, brightness, contrast, a directional gradient, sometimes
    greyscale), blur, pixel noise; skin and hair colour, hair volume and hairline
    jitter, glasses not always worn, beard sometimes shaved, sometimes a cap or a
    small occluder.
    """
    size = _check_int("size", size, 16)
    px = size * SUPERSAMPLE
    # Hair and accessories change from day to day: small per-image changes of the
    # identity itself, so that they are strong but not perfectly reliable cues.
    wears_glasses = rng.uniform() < (0.75 if identity.glasses else 0.08)
    keeps_beard = rng.uniform() < 0.9
    ident = dataclasses.replace(
        identity,
        skin=_shade(identity.skin, rng.uniform(0.95, 1.05)),
        hair=_jitter(rng, _shade(identity.hair, rng.uniform(0.8, 1.2)), 4.0),
        hairline=identity.hairline + rng.uniform(-0.02, 0.02),
        hair_volume=max(0.0, identity.hair_volume + rng.uniform(-0.015, 0.015)),
        glasses=bool(wears_glasses),
        beard=identity.beard if keeps_beard else 0,
    )

    # Pose. Shift in canvas units: ±0.035 is ±4 px at 112.
    angle = rng.uniform(-10.0, 10.0)
    scale = rng.uniform(0.92, 1.08)
    shift = rng.uniform(-0.035, 0.035, 2)
    # Expression.
    openness = rng.uniform(0.55, 1.1) if rng.uniform() > 0.06 else rng.uniform(0.08, 0.2)
    gaze = rng.uniform(-1.0, 1.0)
    curve = ident.mouth_curve + rng.uniform(-0.012, 0.03)
    opening = rng.uniform(0.0, 0.03) if rng.uniform() < 0.35 else 0.0
    brow_raise = rng.uniform(-0.008, 0.018)

    img = _background(rng, px)
    p = _Painter(img, angle, scale, shift)

    cx, cy = 0.5, 0.53
    ry = 0.37
    rx = ry * ident.face_aspect
    outline = _face_outline(cx, cy, rx, ry, ident.jaw)
    ey = ident.eye_y
    ex_l, ex_r = cx - ident.eye_spacing, cx + ident.eye_spacing

    # Back to front: hair behind the head, shoulders, neck, ears, face, features.
    _draw_hair_back(p, ident, cx, cy, rx, ry)
    shirt = tuple(int(v) for v in rng.integers(20, 235, 3))
    p.ellipse(cx, 1.12, 0.5, 0.2, shirt)
    p.polygon(
        [(cx - rx * 0.5, cy), (cx + rx * 0.5, cy), (cx + rx * 0.55, 1.05), (cx - rx * 0.55, 1.05)],
        _shade(ident.skin, 0.82),
    )
    for side in (-1, 1):
        ear_x = cx + side * rx * (1.0 - 0.02)
        p.ellipse(
            ear_x, ey + 0.04, ident.ear_size, ident.ear_size * 1.7, _shade(ident.skin, 0.9), n=24
        )
    p.polygon(outline, ident.skin)
    _draw_beard(p, ident, outline, cx, ident.mouth_y)
    _draw_nose(p, ident, cx, ey)
    _draw_mouth(p, ident, cx, ident.mouth_y, curve, opening)
    for side, ex in ((-1, ex_l), (1, ex_r)):
        _draw_eye(p, ident, ex, ey, openness, gaze)
        _draw_brow(p, ident, ex, ey, side, brow_raise)
    _draw_hair_front(p, ident, cx, cy, rx, ry, rng)
    if ident.glasses:
        _draw_glasses(p, ident, ex_l, ex_r, ey, rx)
    # Sometimes a cap hides the hair, the strongest single cue.
    if rng.uniform() < 0.15:
        hat = tuple(int(v) for v in rng.integers(10, 245, 3))
        _draw_hat(p, ident, cx, cy, rx, ry, hat)

    # Occasionally something in front of the face (a hand, a cup, a sticker).
    if rng.uniform() < 0.25:
        ox, oy = rng.uniform(0.2, 0.8), rng.uniform(0.4, 0.95)
        orx, ory = rng.uniform(0.06, 0.16, 2)
        colour = (
            _jitter(rng, ident.skin, 15)
            if rng.uniform() < 0.5
            else tuple(int(v) for v in rng.integers(0, 256, 3))
        )
        if rng.uniform() < 0.5:
            p.ellipse(ox, oy, orx, ory, colour)
        else:
            p.polygon(
                [
                    (ox - orx, oy - ory),
                    (ox + orx, oy - ory),
                    (ox + orx, oy + ory),
                    (ox - orx, oy + ory),
                ],
                colour,
            )

    img = img.reduce(SUPERSAMPLE)
    if rng.uniform() < 0.4:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.3) * size / 112))

    # Lighting in float: colour balance, contrast, brightness, directional gradient.
    arr = np.asarray(img, dtype=np.float32)
    # White balance along the warm/cool axis (red vs blue) plus a slight green
    # tint, like camera colour casts; independent channel gains make faces green.
    warmth, tint = rng.uniform(-0.09, 0.09), rng.uniform(-0.03, 0.03)
    arr *= np.array([1.0 + warmth, 1.0 + tint, 1.0 - warmth], dtype=np.float32)
    mean = arr.mean()
    arr = (arr - mean) * rng.uniform(0.7, 1.15) + mean
    arr *= rng.uniform(0.7, 1.25)
    theta = rng.uniform(0.0, 2.0 * np.pi)
    coords = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    ramp = np.cos(theta) * coords[None, :] + np.sin(theta) * coords[:, None]
    arr *= (1.0 + rng.uniform(0.0, 0.45) * ramp)[:, :, None]
    if rng.uniform() < 0.08:
        # A few greyscale photos, as in real collections: colour is not always there.
        arr[:] = (arr @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[:, :, None]
    arr += rng.normal(0.0, rng.uniform(2.0, 10.0), arr.shape).astype(np.float32)
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def _write_png(array: np.ndarray, path: Path) -> None:
    """Write ``array`` as a PNG at ``path`` atomically (:func:`facefold.atomic.atomic_path`).

    A reader never sees a half-written file, and an interrupted run leaves at most
    a dot-prefixed temp file behind, never a truncated PNG under the final name.
    """
    with atomic_path(path) as tmp:
        # Level 1: the noisy images barely compress anyway (little larger than at the
        # default level 6), and encoding is a large share of the generation time.
        Image.fromarray(array, "RGB").save(tmp, format="PNG", compress_level=1)


def make_synthetic_faces(
    out_dir: str | Path,
    people: int = 10,
    per_person: int = 60,
    size: int = 112,
    seed: int = 0,
) -> Path:
    """Write a synthetic face dataset and return ``out_dir`` as a Path.

    Creates ``out_dir/<person>/<NNNN>.png`` (RGB, size×size) for ``people`` persons
    named ``synthetic_00``, ``synthetic_01``, … with ``per_person`` images each.
    Folders are created with parents; existing files with the same names are
    overwritten, other files are left alone. Same arguments → byte-identical files.

    Raises ValueError (naming the parameter and value) unless people >= 2,
    per_person >= 1, size >= 16 and seed >= 0.
    """
    people = _check_int("people", people, 2)
    per_person = _check_int("per_person", per_person, 1)
    size = _check_int("size", size, 16)
    seed = _check_int("seed", seed, 0)

    out = Path(out_dir)
    digits = max(4, len(str(per_person - 1)))
    for person in range(people):
        identity = sample_identity(identity_rng(seed, person))
        person_dir = out / person_name(person, people)
        person_dir.mkdir(parents=True, exist_ok=True)
        for image in range(per_person):
            pixels = render_face(identity, image_rng(seed, person, image), size)
            _write_png(pixels, person_dir / f"{image:0{digits}d}.png")
    return out
