"""The scene of a synthetic street photo: the person wearing the product, the background, occluders, the camera.

The shared frame first: figure units (height 1 from the top of the head to the feet, x = 0 on the body's
axis, y down), the body's joints, limb poses, the rigid pieces they turn, and the `Garment` record, which
`training/synth.py` makes and draws (the person here wears plain garments with the product). Then the person
(skin, hair, legs, shoes, what they wear with the product, and its drawing around the garments) and the
figure's place in the photo; the backgrounds (studio, gradient, texture, street); the occluders (bags, a
forearm) and the camera effects (colour and exposure jitter, light, blur, noise). Pure PIL + numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

RGB = tuple[int, int, int]
SKIN: tuple[RGB, ...] = ((250, 222, 196), (238, 196, 162), (224, 172, 130), (200, 138, 98), (164, 106, 72),
                         (126, 82, 56), (92, 60, 42), (232, 186, 148))
HAIR: tuple[RGB, ...] = ((24, 20, 18), (58, 38, 26), (104, 70, 40), (196, 160, 96), (140, 66, 34), (150, 150, 150))
HAIR_STYLES = ("short", "long", "bun", "buzz")
NEUTRAL: tuple[RGB, ...] = ((58, 82, 128), (34, 34, 38), (232, 232, 226), (128, 128, 132), (184, 164, 120),
                            (96, 66, 46))  # denim, black, white, grey, khaki, brown: what goes with the product
SHOES: tuple[RGB, ...] = ((20, 20, 20), (236, 236, 236), (110, 68, 40), (160, 30, 30))

# The body, in figure units (see the module docstring).
HEAD = (0.0, 0.068, 0.046, 0.060)  # centre x, y and radii
NECK_Y = 0.152  # where the neck meets the shoulders
ARM_JOINT = (0.09, 0.20)
LEG_JOINT = (0.05, 0.48)


@dataclass(frozen=True)
class Pose:
    """Limb angles in radians from hanging straight down, outward positive: (left, right)."""

    arms: tuple[float, float]
    legs: tuple[float, float]


@dataclass(frozen=True, eq=False)
class Piece:
    """A rigid part of a garment or body: its outline, the edge to stroke, and the joint it turns about."""

    outline: np.ndarray  # (n, 2) in the piece's frame: figure units, or limb units (origin at the joint, +y down it)
    stroke: np.ndarray | None = None  # (m, 2) open polyline drawn as the garment's edge
    limb: str | None = None  # "arm" or "leg"; None moves with the body
    side: int = 1  # +1 the body's right (image right), -1 its mirror


# ---- figure units: small geometry ------------------------------------------------------------------------

def _translate(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def _scale(sx: float, sy: float) -> np.ndarray:
    return np.diag([sx, sy, 1.0])


def _rotate(a: float) -> np.ndarray:
    """Limb frame -> body frame: (0, 1), straight down, goes to (sin a, cos a), outward for a > 0."""
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Homography m applied to points (n, 2)."""
    w = pts @ m[2, :2] + m[2, 2]
    return (pts @ m[:2, :2].T + m[:2, 2]) / w[:, None]


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 20, a0: float = 0.0,
             a1: float = 2 * math.pi) -> np.ndarray:
    t = np.linspace(a0, a1, n, endpoint=(a1 - a0) < 2 * math.pi - 1e-9)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _mirror_x(pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(-x, y) for x, y in pts]


def place(piece: Piece, pose: Pose) -> np.ndarray:
    """3x3 map from the piece's frame to figure units for this pose."""
    if piece.limb is None:
        return np.eye(3)
    angles, joint = (pose.arms, ARM_JOINT) if piece.limb == "arm" else (pose.legs, LEG_JOINT)
    m = _translate(*joint) @ _rotate(angles[0 if piece.side < 0 else 1])
    return _scale(-1.0, 1.0) @ m if piece.side < 0 else m


def _shade(rgb: RGB, k: float) -> RGB:
    return tuple(int(min(255, c * k)) for c in rgb)  # type: ignore[return-value]


# ---- the garment record (training/synth.py makes and draws garments; the person wears plain ones) --------

@dataclass(frozen=True)
class Garment:
    """One product, in figure units. Pattern parameters vary per product so that each one is identifiable."""

    category: str
    colour: str
    pattern: str
    rgb: RGB
    rgb2: RGB  # the pattern's second colour
    fit: float = 1.0  # width scale
    hem: float = 0.52  # y of the hem; for trousers the leg length below the hip joint
    waist: float = 0.40  # y of the waistband (skirt, trousers)
    flare: float = 0.1  # half-width of a dress or skirt hem; half-width of a trouser leg opening
    sleeve: float = 0.1  # sleeve length; 0 is sleeveless
    cuff: float = 0.035  # half-width of the sleeve opening
    neckline: str = "crew"  # crew, v, scoop, boat, turtle
    period: float = 0.04  # stripe, dot and check period
    duty: float = 0.5  # fraction of the period in the second colour
    phase: float = 0.0
    split: str = "h"  # two-tone: h (colour block), v (halves), d (diagonal)
    split_at: float = 0.5  # where, as a fraction of the garment's height (h, d) or of its width (v)
    logo: str = "star"  # the print: an emblem name, or 2-3 letters
    logo_at: tuple[float, float] = (0.0, 0.27)
    logo_size: float = 0.06
    trim: RGB | None = None  # contrasting neck band, cuffs, waistband or belt
    pocket: bool = False
    buttons: int = 0


# ---- the person ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Person:
    """Who wears the product in one photo, how they stand, and what they wear with it."""

    skin: RGB
    hair: RGB
    hair_style: str
    legs: RGB  # skin, or tights
    shoes: RGB
    pose: Pose
    other: Garment | None  # plain bottoms under a top, a plain top over bottoms, nothing with a dress


ARM = Piece(np.array([(-0.021, -0.012), (-0.014, 0.33), (0.014, 0.33), (0.022, -0.02)]), limb="arm")
HAND = _ellipse(0.0, 0.355, 0.017, 0.03, 12)
LEG = Piece(np.array([(-0.048, -0.03), (-0.03, 0.26), (-0.02, 0.465), (0.02, 0.465), (0.028, 0.26), (0.05, -0.03)]),
            limb="leg")
SHOE = _ellipse(0.008, 0.48, 0.03, 0.018, 12)
TOPS = ("t-shirt", "long-sleeve", "sweater")


def _pick(rng: np.random.Generator, items: tuple) -> object:
    return items[int(rng.integers(len(items)))]


def make_person(rng: np.random.Generator, g: Garment) -> Person:
    """A random person and pose to wear garment g."""
    u = rng.uniform
    arms = [u(0.06, 0.4), u(0.06, 0.4)]
    if u() < 0.15:  # one arm held out
        arms[int(rng.integers(2))] = u(0.6, 1.1)
    pose = Pose((arms[0], arms[1]), (u(0.0, 0.12), u(0.0, 0.12)))
    skin = _pick(rng, SKIN)
    colour = _pick(rng, NEUTRAL)
    other: Garment | None = None
    if g.category in TOPS:
        if u() < 0.75:
            other = Garment("trousers", "", "solid", colour, colour, fit=u(0.95, 1.1), waist=0.4, hem=u(0.44, 0.47),
                            flare=u(0.025, 0.04))
        else:
            other = Garment("skirt", "", "solid", colour, colour, waist=0.4, hem=u(0.58, 0.7), flare=u(0.11, 0.18))
    elif g.category != "dress":  # a plain top, tucked in so that the product shows whole
        other = Garment(str(_pick(rng, ("t-shirt", "long-sleeve"))), "", "solid", colour, colour, fit=u(0.95, 1.05),
                        hem=0.42, sleeve=float(_pick(rng, (u(0.08, 0.12), u(0.29, 0.32)))), cuff=0.03)
    tights = g.category in ("dress", "skirt") or (other is not None and other.category == "skirt")
    legs = _pick(rng, ((30, 30, 34), (60, 60, 66), (30, 36, 60))) if tights and u() < 0.3 else skin
    return Person(skin, _pick(rng, HAIR), str(_pick(rng, HAIR_STYLES)), legs, _pick(rng, SHOES), pose, other)


@dataclass(frozen=True)
class Framing:
    """Where the person stands in the photo: height as a fraction of the photo's, drawn uniformly, and how
    far from the centre (spread 1: anywhere the person fits; 0: always centred)."""

    height: tuple[float, float]
    spread: float


FRAMINGS = {
    "street": Framing(height=(0.40, 0.95), spread=1.0),  # anyone anywhere: street-snap variety
    "lookbook": Framing(height=(0.80, 0.95), spread=0.2),  # LookBook's shots: one full-length person, centred
}


def _place(rng: np.random.Generator, half: float, size: int, spread: float) -> float:
    lo, hi = min(half, size / 2), max(size - half, size / 2)
    mid = (lo + hi) / 2
    return mid + spread * (rng.uniform(lo, hi) - mid)


def figure_transform(rng: np.random.Generator, size: int, framing: Framing = FRAMINGS["street"]) -> np.ndarray:
    """Figure units -> photo pixels: a random place and size (see `Framing`), tilt, turn, perspective."""
    height = rng.uniform(*framing.height) * size
    xs = rng.uniform(0.85, 1.1)  # body width, or a slight turn away from the camera
    tilt = rng.uniform(-0.14, 0.14)
    persp = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [rng.uniform(-0.5, 0.5), rng.uniform(-0.15, 0.15), 1.0]])
    half_w, half_h = 0.3 * height * xs, 0.5 * height + 0.01 * size
    cx = _place(rng, half_w, size, framing.spread)
    cy = _place(rng, half_h, size, framing.spread)
    return _translate(cx, cy) @ _rotate(tilt) @ _scale(height * xs, height) @ persp @ _translate(0.0, -0.5)


def _hair(person: Person, front: bool) -> list[np.ndarray]:
    """Hair polygons behind the body (front=False) or over the head (front=True)."""
    cx, cy, rx, ry = HEAD
    if not front:
        if person.hair_style == "long":
            arc = _ellipse(cx, cy, rx + 0.012, ry + 0.01, 14, math.pi, 2 * math.pi)
            return [np.vstack([arc, [(0.07, 0.25), (-0.07, 0.25)]])]
        if person.hair_style == "bun":
            return [_ellipse(cx, cy - ry - 0.005, 0.026, 0.022, 14)]
        return []
    grow, fringe = (0.002, 0.03) if person.hair_style == "buzz" else (0.007, 0.045)
    arc = _ellipse(cx, cy, rx + grow, ry + grow, 16, math.pi - 0.3, 2 * math.pi + 0.3)
    return [np.vstack([arc, [(rx * 0.6, fringe), (0.0, fringe - 0.012), (-rx * 0.6, fringe + 0.004)]])]


def _poly(m: np.ndarray, pts: np.ndarray) -> list[float]:
    return _apply(m, pts).ravel().tolist()


def draw_behind(d: ImageDraw.ImageDraw, fig: np.ndarray, person: Person) -> None:
    """What the garments cover: the shadow at the feet (d in RGBA mode), hair behind, legs and shoes, the neck."""
    d.polygon(_poly(fig, _ellipse(0.0, 0.985, 0.16, 0.02)), fill=(0, 0, 0, 60))  # the shadow at the feet
    for hair in _hair(person, front=False):
        d.polygon(_poly(fig, hair), fill=person.hair)
    for side in (-1, 1):
        leg = fig @ place(Piece(LEG.outline, limb="leg", side=side), person.pose)
        d.polygon(_poly(leg, LEG.outline), fill=person.legs)
        d.polygon(_poly(leg, SHOE), fill=person.shoes)
    d.polygon(_poly(fig, np.array([(-0.02, 0.1), (0.02, 0.1), (0.022, 0.17), (-0.022, 0.17)])), fill=person.skin)


def draw_arms(d: ImageDraw.ImageDraw, fig: np.ndarray, person: Person) -> None:
    """Bare arms and hands: over the body of the garments, under their sleeves."""
    for side in (-1, 1):
        arm = fig @ place(Piece(ARM.outline, limb="arm", side=side), person.pose)
        d.polygon(_poly(arm, ARM.outline), fill=person.skin)
        d.polygon(_poly(arm, HAND), fill=person.skin)


def draw_head(d: ImageDraw.ImageDraw, fig: np.ndarray, person: Person, width: int) -> None:
    """The head, over the garments: face, hair, eyes and mouth."""
    cx, cy, rx, ry = HEAD
    d.polygon(_poly(fig, _ellipse(cx, cy, rx, ry)), fill=person.skin)
    for hair in _hair(person, front=True):
        d.polygon(_poly(fig, hair), fill=person.hair)
    for ex in (-0.016, 0.016):
        d.polygon(_poly(fig, _ellipse(ex, cy + 0.004, 0.005, 0.004, 8)), fill=(40, 30, 30))
    d.line([tuple(p) for p in _apply(fig, np.array([(-0.01, 0.1), (0.01, 0.1)]))], fill=_shade(person.skin, 0.7),
           width=width)


# ---- backgrounds -----------------------------------------------------------------------------------------

def _colour(rng: np.random.Generator, lo: int, hi: int) -> RGB:
    return tuple(int(c) for c in rng.integers(lo, hi + 1, 3))  # type: ignore[return-value]


def _gradient(size: int, c1: RGB, c2: RGB, angle: float) -> Image.Image:
    """A linear gradient, computed on a 16x16 grid and resized (exact for a linear ramp, and fast)."""
    t = np.linspace(-1.0, 1.0, 16)
    u = (t[None, :] * math.cos(angle) + t[:, None] * math.sin(angle) + 1.42) / 2.84  # (16, 16) in [0, 1]
    a = np.array(c1, np.float32) + u[..., None] * (np.array(c2, np.float32) - np.array(c1, np.float32))
    return Image.fromarray(a.astype(np.uint8), "RGB").resize((size, size), Image.Resampling.BILINEAR)


def background(rng: np.random.Generator, size: int) -> Image.Image:
    """Studio wall and floor, a gradient, a texture (blotches, bricks) or a street (buildings, windows, pavement)."""
    kind = rng.choice(4, p=[0.2, 0.15, 0.2, 0.45])
    s = size
    if kind == 0:  # studio: a wall, and a floor meeting it
        img = _gradient(s, _colour(rng, 150, 225), _colour(rng, 120, 215), rng.uniform(0, math.pi))
        floor = rng.uniform(0.7, 0.95) * s
        ImageDraw.Draw(img).rectangle([0, floor, s, s], fill=_colour(rng, 90, 190))
        return img
    if kind == 1:
        return _gradient(s, _colour(rng, 20, 235), _colour(rng, 20, 235), rng.uniform(0, 2 * math.pi))
    if kind == 2:
        base = rng.integers(40, 220, 3)
        if rng.random() < 0.5:  # blotches: a few random colours, smoothly upsampled
            k = int(rng.integers(3, 9))
            small = np.clip(base + rng.integers(-45, 46, (k, k, 3)), 0, 255).astype(np.uint8)
            return Image.fromarray(small, "RGB").resize((s, s), Image.Resampling.BICUBIC)
        img = Image.new("RGB", (s, s), _shade(tuple(int(c) for c in base), 0.6))  # mortar
        d = ImageDraw.Draw(img)
        bw, bh = rng.uniform(0.12, 0.3) * s, rng.uniform(0.05, 0.1) * s
        gap = min(1.0, bh / 4)
        for row, y in enumerate(np.arange(0.0, s, bh)):
            for x in np.arange(-(row % 2) * bw / 2, s, bw):
                c = np.clip(base + rng.integers(-25, 26, 3), 0, 255)
                d.rectangle([x + gap, y + gap, x + bw - gap, y + bh - gap], fill=tuple(int(v) for v in c))
        return img
    # street: sky, a row of buildings with windows, pavement in perspective
    horizon = rng.uniform(0.5, 0.8) * s
    img = _gradient(s, _colour(rng, 150, 210), _colour(rng, 200, 250), math.pi / 2)
    d = ImageDraw.Draw(img)
    x = -rng.uniform(0, 0.2) * s
    while x < s:
        w, top = rng.uniform(0.15, 0.45) * s, rng.uniform(0.0, 0.6) * horizon
        wall = _colour(rng, 60, 220)
        d.rectangle([x, top, x + w, horizon], fill=wall)
        glass = _shade(wall, 0.45) if rng.random() < 0.6 else _colour(rng, 150, 230)
        cols, rows = int(rng.integers(2, 6)), int(rng.integers(2, 8))
        cw, rh = w / cols, (horizon - top) / rows
        for i in range(cols):
            for j in range(rows - 1):
                wx, wy = x + i * cw + 0.25 * cw, top + j * rh + 0.25 * rh
                d.rectangle([wx, wy, wx + 0.5 * cw, wy + 0.5 * rh], fill=glass)
        x += w
    d.rectangle([0, horizon, s, s], fill=_colour(rng, 110, 170))  # pavement
    line = _colour(rng, 80, 140)
    vx = rng.uniform(0.2, 0.8) * s  # vanishing point: paving joints run to it
    for t in np.linspace(-1.0, 2.0, 9):
        d.line([(vx, horizon), (t * s, s * 1.5)], fill=line, width=1)
    for y in horizon + (s - horizon) * np.linspace(0.1, 1.0, 6) ** 1.6:
        d.line([(0, y), (s, y)], fill=line, width=1)
    if rng.random() < 0.4:  # a tree
        tx, tw = rng.uniform(0, s), rng.uniform(0.02, 0.04) * s
        d.rectangle([tx - tw / 2, horizon - 0.35 * s, tx + tw / 2, horizon + 0.02 * s], fill=(80, 60, 40))
        r = rng.uniform(0.1, 0.2) * s
        d.ellipse([tx - r, horizon - 0.35 * s - r, tx + r, horizon - 0.35 * s + r], fill=_colour(rng, 40, 110))
    return img


# ---- occluders and the camera ----------------------------------------------------------------------------

def occluder(img: Image.Image, rng: np.random.Generator, fig: np.ndarray, person: Person) -> None:
    """Something in front of the garment: a hand bag, a cross-body bag, or a forearm across the body."""
    d = ImageDraw.Draw(img)
    width = max(1, round(img.size[0] * 0.006))
    kind = int(rng.integers(3))
    if kind == 0:  # hand bag hanging from one hand
        side = int(rng.choice([-1, 1]))
        hand = _apply(place(Piece(HAND, limb="arm", side=side), person.pose), HAND).mean(axis=0)
        w, h = rng.uniform(0.05, 0.08), rng.uniform(0.07, 0.11)
        bag = hand + np.array([(-w, 0.04), (w, 0.04), (w * 1.1, 0.04 + h), (-w * 1.1, 0.04 + h)])
        colour = _colour(rng, 20, 200)
        d.line([tuple(p) for p in _apply(fig, np.array([bag[0], hand, bag[1]]))], fill=_shade(colour, 0.7), width=width)
        d.polygon(_apply(fig, bag).ravel().tolist(), fill=colour)
    elif kind == 1:  # cross-body bag: a strap from one shoulder to the other hip, the bag on that hip
        side = float(rng.choice([-1.0, 1.0]))
        colour = _colour(rng, 20, 200)
        strap = np.array([(-side * 0.07, 0.17), (side * 0.1, 0.44)])
        d.line([tuple(p) for p in _apply(fig, strap)], fill=_shade(colour, 0.7), width=2 * width)
        cx, cy, w, h = side * 0.11, 0.46, rng.uniform(0.04, 0.07), rng.uniform(0.035, 0.06)
        d.polygon(_apply(fig, np.array([(cx - w, cy - h), (cx + w, cy - h), (cx + w, cy + h), (cx - w, cy + h)]))
                  .ravel().tolist(), fill=colour)
    else:  # a forearm across the waist
        y, side = rng.uniform(0.3, 0.42), float(rng.choice([-1.0, 1.0]))
        arm = np.array([(side * 0.13, y - 0.02), (-side * 0.06, y - 0.015), (-side * 0.06, y + 0.015),
                        (side * 0.13, y + 0.02)])
        d.polygon(_apply(fig, arm).ravel().tolist(), fill=person.skin)
        d.polygon(_apply(fig, _ellipse(-side * 0.075, y, 0.028, 0.018, 12)).ravel().tolist(), fill=person.skin)


def camera(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Colour and exposure jitter, a directional light, focus blur and sensor noise."""
    s = img.size[0]
    gains = rng.uniform(0.88, 1.12, 3) * rng.uniform(0.8, 1.15)
    x = np.arange(256) / 255.0
    lut = np.concatenate([np.clip(255.0 * x ** rng.uniform(0.8, 1.25) * g, 0, 255) for g in gains])
    img = img.point(lut.astype(np.uint8).tolist())
    corners = (255 * (1.0 - rng.uniform(0.0, 0.35, (2, 2)))).astype(np.uint8)
    light = Image.fromarray(corners, "L").resize((s, s), Image.Resampling.BILINEAR)
    img = ImageChops.multiply(img, Image.merge("RGB", (light, light, light)))
    if rng.random() < 0.6:
        img = img.filter(ImageFilter.BoxBlur(rng.uniform(0.3, 0.9) * s / 128))  # 3x faster than GaussianBlur
    if rng.random() < 0.3:
        noise = rng.integers(-6, 7, (s, s, 1), dtype=np.int16)
        img = Image.fromarray(np.clip(np.asarray(img, np.int16) + noise, 0, 255).astype(np.uint8), "RGB")
    return img
