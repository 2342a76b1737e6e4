"""The synthetic street-to-shop data set: photos of a stylised person wearing a garment, and its product image.

No real paired clothing data can be downloaded here, so tests, benchmarks and the demo rest on this set. It
mimics LookBook (Yoo et al. 2016), the paper's data set (Sec. 4): per product one clean product image (the
garment flat and frontal on white, centred) and K photos of a person wearing it, in the LookBook layout
`PID%06d_CLEAN1_IID%06d.jpg` / `PID%06d_CLEAN0_IID%06d.jpg`, plus `products.csv`. Pure PIL + numpy.

How a garment stays the same garment in both images: a garment is a few rigid pieces (torso, two sleeves
or two trouser legs) in figure units (height 1 from the top of the head to the feet, x = 0 on the body's
axis, y down). Its texture (pattern, trims, print) is drawn once, in product-image pixels. The product
image lays the pieces flat; a photo turns the limb pieces to the pose's angles and maps the figure through a
random homography (scale, rotation, perspective); each piece samples the texture through the inverse of its
own map. Everything is drawn with PIL polygons at the final size, which keeps a pair to a few milliseconds.
"""

from __future__ import annotations

import csv
import json
import math
import multiprocessing
import time
from dataclasses import dataclass, replace
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont
from tqdm import tqdm

from index.errors import UserError
from training.data import LOOKBOOK_RE

RGB = tuple[int, int, int]
CATEGORIES = ("t-shirt", "long-sleeve", "sweater", "dress", "skirt", "trousers")
PATTERNS = ("solid", "stripes-h", "stripes-v", "two-tone", "dots", "checks", "logo")
# A modest palette, so that many products share category and colour and retrieval is not trivial.
COLOURS: dict[str, RGB] = {
    "black": (32, 32, 36), "charcoal": (78, 80, 88), "grey": (160, 162, 166), "navy": (30, 44, 92),
    "blue": (66, 124, 196), "red": (188, 38, 44), "burgundy": (112, 30, 50), "green": (38, 108, 64),
    "olive": (112, 112, 58), "mustard": (214, 168, 48), "pink": (234, 146, 172), "beige": (212, 192, 156),
}
PRINT_WHITE: RGB = (240, 238, 228)  # the second colour of white stripes, dots and prints
SKIN: tuple[RGB, ...] = ((250, 222, 196), (238, 196, 162), (224, 172, 130), (200, 138, 98), (164, 106, 72),
                         (126, 82, 56), (92, 60, 42), (232, 186, 148))
HAIR: tuple[RGB, ...] = ((24, 20, 18), (58, 38, 26), (104, 70, 40), (196, 160, 96), (140, 66, 34), (150, 150, 150))
HAIR_STYLES = ("short", "long", "bun", "buzz")
NEUTRAL: tuple[RGB, ...] = ((58, 82, 128), (34, 34, 38), (232, 232, 226), (128, 128, 132), (184, 164, 120),
                            (96, 66, 46))  # denim, black, white, grey, khaki, brown: what goes with the product
SHOES: tuple[RGB, ...] = ((20, 20, 20), (236, 236, 236), (110, 68, 40), (160, 30, 30))
EMBLEMS = ("star", "circle", "ring", "diamond", "triangle", "cross", "heart", "bolt")
LETTERS = "ABCDEFGHKMNPRSTUVWXYZ"
MARKER = "synth.json"  # marks a folder as written by synth, so a re-run may overwrite it
FORMAT = 1

# The body, in figure units (see the module docstring).
HEAD = (0.0, 0.068, 0.046, 0.060)  # centre x, y and radii
NECK_Y = 0.152  # where the neck meets the shoulders
ARM_JOINT = (0.09, 0.20)
LEG_JOINT = (0.05, 0.48)
FLAT_ARM = {True: 0.80, False: 0.40}  # flat-lay sleeve angle (radians from hanging down): short sleeves, long
FLAT_LEG = 0.05


@dataclass(frozen=True)
class SynthConfig:
    """`rtd data synth`: where to write, how many products and photos, image side, seed, processes."""

    out: Path
    products: int = 50
    photos_per_product: int = 4
    size: int = 128
    seed: int = 0
    workers: int = 1
    jpeg_quality: int = 92


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


# ---- small geometry --------------------------------------------------------------------------------------

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


def _edge(rgb: RGB) -> RGB:
    """The colour of a garment's outline: darker, or lighter on an almost black garment."""
    return _shade(rgb, 0.6) if sum(rgb) > 180 else tuple(c + 40 for c in rgb)  # type: ignore[return-value]


# ---- products ---------------------------------------------------------------------------------------------

def make_garment(rng: np.random.Generator, index: int) -> Garment:
    """Draw product `index`: category and pattern cycle (gcd(6, 7) = 1, so 42 products hold every pair)."""
    category, pattern = CATEGORIES[index % len(CATEGORIES)], PATTERNS[index % len(PATTERNS)]
    colour = str(rng.choice(list(COLOURS)))
    rgb = tuple(int(c) for c in np.clip(np.array(COLOURS[colour]) + rng.integers(-10, 11, 3), 0, 255))
    seconds = [c for name, c in COLOURS.items() if name != colour] + [PRINT_WHITE] * 4
    rgb2 = seconds[int(rng.integers(len(seconds)))]
    u = rng.uniform
    kw: dict = dict(period=u(0.022, 0.06), duty=u(0.25, 0.6), phase=u(0.0, 1.0), split=str(rng.choice(["h", "v", "d"])),
                    split_at=u(0.3, 0.7), logo_size=u(0.035, 0.075),
                    trim=seconds[int(rng.integers(len(seconds)))] if u() < 0.3 else None)
    if pattern == "solid":  # no pattern to tell it apart: a contrasting trim in its second colour does
        kw["trim"] = rgb2
    kw["logo"] = str(rng.choice(EMBLEMS)) if u() < 0.6 else "".join(rng.choice(list(LETTERS), int(rng.integers(2, 4))))
    top = dict(fit=u(0.92, 1.1), neckline=str(rng.choice(["crew", "v", "scoop", "boat"])), pocket=bool(u() < 0.3),
               logo_at=(u(-0.02, 0.02), u(0.25, 0.31)))
    if category == "t-shirt":
        kw |= top | dict(hem=u(0.50, 0.56), sleeve=u(0.08, 0.13), cuff=u(0.032, 0.042))
    elif category == "long-sleeve":
        kw |= top | dict(hem=u(0.50, 0.55), sleeve=u(0.29, 0.32), cuff=u(0.018, 0.026),
                         neckline=str(rng.choice(["crew", "v", "scoop", "turtle"])),
                         buttons=int(rng.integers(2, 5)) if u() < 0.3 else 0)
    elif category == "sweater":  # boxy, with ribbed bands at the neck, cuffs and hem
        kw |= top | dict(fit=u(1.05, 1.2), hem=u(0.50, 0.55), sleeve=u(0.30, 0.32), cuff=u(0.026, 0.032),
                         neckline=str(rng.choice(["crew", "v", "turtle"])), pocket=False)
    elif category == "dress":
        kw |= top | dict(fit=u(0.9, 1.02), hem=u(0.64, 0.82), flare=u(0.12, 0.22), pocket=False,
                         sleeve=float(rng.choice([0.0, u(0.05, 0.08), u(0.28, 0.31)])), cuff=u(0.022, 0.04),
                         buttons=int(rng.integers(3, 6)) if u() < 0.25 else 0)
    elif category == "skirt":
        kw |= dict(fit=u(0.95, 1.1), waist=u(0.38, 0.41), hem=u(0.58, 0.75), flare=u(0.1, 0.21),
                   logo_at=(u(-0.05, 0.05), u(0.5, 0.56)))
    else:  # trousers
        kw |= dict(fit=u(0.95, 1.12), waist=u(0.38, 0.41), hem=u(0.40, 0.47), flare=u(0.022, 0.045),
                   logo_at=(u(0.05, 0.09), u(0.56, 0.62)))
    kw["phase"] *= kw["period"]
    return Garment(category=category, colour=colour, pattern=pattern, rgb=rgb, rgb2=rgb2, **kw)  # type: ignore[arg-type]


def _neckline(g: Garment) -> list[tuple[float, float]]:
    """The front neck opening, from the right neck point to the left one."""
    if g.neckline == "v":
        return [(0.034, NECK_Y), (0.0, NECK_Y + 0.075), (-0.034, NECK_Y)]
    if g.neckline == "turtle":  # a collar up the neck: it covers the neck, drawn after it
        return [(0.034, NECK_Y), (0.029, 0.118), (-0.029, 0.118), (-0.034, NECK_Y)]
    half, depth = {"crew": (0.034, 0.028), "scoop": (0.046, 0.055), "boat": (0.058, 0.012)}[g.neckline]
    return [tuple(p) for p in _ellipse(0.0, NECK_Y, half, depth, 9, 0.0, math.pi).tolist()] + [(-half, NECK_Y)]


def garment_pieces(g: Garment) -> list[Piece]:
    """The garment's rigid pieces, in drawing order (sleeves over the torso, the hips over the trouser legs)."""
    f = g.fit
    if g.category == "trousers":
        w = g.waist
        hips = [(0.086 * f, w), (-0.086 * f, w), (-0.104 * f, 0.49), (0.0, 0.535), (0.104 * f, 0.49)]
        leg = [(-0.05 * f, -0.03), (0.056 * f, -0.03), (g.flare + 0.004, g.hem), (-g.flare, g.hem), (-0.046 * f, 0.06)]
        leg_a = np.array(leg)
        legs = [Piece(leg_a, leg_a[1:], "leg", side) for side in (-1, 1)]
        hips_a = np.array(hips)
        return legs + [Piece(hips_a, hips_a[[4, 0, 1, 2]])]
    if g.category == "skirt":
        right = [(0.084 * f, g.waist)] + ([(0.1 * f, 0.49)] if g.flare < 0.13 else []) + [(g.flare, g.hem)]
        hem = [(-g.flare * 0.5, g.hem + 0.008), (0.0, g.hem + 0.011), (g.flare * 0.5, g.hem + 0.008)]
        outline = np.array(_mirror_x(right) + hem + right[::-1])
        return [Piece(outline, np.vstack([outline, outline[:1]]))]
    if g.category == "dress" and g.sleeve == 0.0:  # sleeveless: straps and cut-in armholes
        right = [(0.07 * f, 0.162), (0.072 * f, 0.21), (0.09 * f, 0.26), (0.078 * f, 0.37), (0.1 * f, 0.48)]
    else:
        waist = {"sweater": 0.1, "dress": 0.076}.get(g.category, 0.086) * f
        right = [(0.106 * f, 0.176), (0.097 * f, 0.258), (waist, 0.39)] + ([(0.1 * f, 0.48)] if g.category == "dress" else [])
    if g.category == "dress":
        right.append((g.flare, g.hem))
        hem = [(-g.flare * 0.5, g.hem + 0.01), (0.0, g.hem + 0.014), (g.flare * 0.5, g.hem + 0.01)]
    else:
        right.append(({"sweater": 0.098}.get(g.category, 0.094) * f, g.hem))
        hem = [(0.0, g.hem + 0.004)]
    outline = np.array(_neckline(g) + _mirror_x(right) + hem + right[::-1])
    pieces = [Piece(outline, np.vstack([outline, outline[:1]]))]
    if g.sleeve > 0:
        top = 0.04 * f
        sleeve = np.array([(-top, 0.0), (-g.cuff, g.sleeve), (g.cuff, g.sleeve), (top, -0.008), (top * 0.3, -0.026),
                           (-top * 0.5, -0.022)])
        pieces += [Piece(sleeve, sleeve[:4], "arm", side) for side in (-1, 1)]
    return pieces


def flat_pose(g: Garment) -> Pose:
    """How the product is laid flat for its product image."""
    a = FLAT_ARM[g.sleeve < 0.2]
    return Pose((a, a), (FLAT_LEG, FLAT_LEG))


# ---- the texture: pattern and details, in product-image pixels ----------------------------------------------

@lru_cache(maxsize=64)
def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(6, px))


def _emblem(name: str, cx: float, cy: float, r: float) -> list[np.ndarray]:
    """An emblem print as polygons (the second one, if any, is a hole in the garment colour)."""
    if name == "star":
        radii = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        t = np.arange(10) * math.pi / 5 - math.pi / 2
        return [np.stack([cx + radii * np.cos(t), cy + radii * np.sin(t)], axis=1)]
    if name == "circle":
        return [_ellipse(cx, cy, r, r)]
    if name == "ring":
        return [_ellipse(cx, cy, r, r), _ellipse(cx, cy, r * 0.6, r * 0.6)]
    if name == "diamond":
        return [np.array([(cx, cy - r), (cx + 0.7 * r, cy), (cx, cy + r), (cx - 0.7 * r, cy)])]
    if name == "triangle":
        return [np.array([(cx, cy - r), (cx + r, cy + 0.8 * r), (cx - r, cy + 0.8 * r)])]
    if name == "cross":
        a, b = r, r * 0.35
        return [np.array([(cx - b, cy - a), (cx + b, cy - a), (cx + b, cy - b), (cx + a, cy - b), (cx + a, cy + b),
                          (cx + b, cy + b), (cx + b, cy + a), (cx - b, cy + a), (cx - b, cy + b), (cx - a, cy + b),
                          (cx - a, cy - b), (cx - b, cy - b)])]
    if name == "heart":
        t = np.linspace(0, 2 * math.pi, 24, endpoint=False)
        x, y = 16 * np.sin(t) ** 3, -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        return [np.stack([cx + x * r / 16, cy + y * r / 16], axis=1)]
    # bolt
    return [np.array([(cx + 0.2 * r, cy - r), (cx - 0.5 * r, cy + 0.1 * r), (cx, cy + 0.1 * r), (cx - 0.2 * r, cy + r),
                      (cx + 0.5 * r, cy - 0.1 * r), (cx, cy - 0.1 * r)])]


def _band(d: ImageDraw.ImageDraw, m: np.ndarray, quad: np.ndarray, fill: RGB, ribs: float = 0.0) -> None:
    """A band (neck, cuff, hem, waist) as a quad in piece coordinates mapped by m; optional rib lines."""
    px = _apply(m, quad)
    d.polygon(px.ravel().tolist(), fill=fill)
    if ribs > 0:  # knit ribbing: lines across the band, from its top edge to its bottom edge
        n = int(np.linalg.norm(px[1] - px[0]) / ribs)
        for t in np.linspace(0.0, 1.0, max(n, 2))[1:-1]:
            a, b = px[0] + t * (px[1] - px[0]), px[3] + t * (px[2] - px[3])
            d.line([tuple(a), tuple(b)], fill=_shade(fill, 0.8), width=1)


def render_texture(g: Garment, m: np.ndarray, size: int) -> Image.Image:
    """The garment's surface over the whole canvas, in product-image pixels (m: figure units -> pixels)."""
    tex = Image.new("RGB", (size, size), g.rgb)
    d = ImageDraw.Draw(tex, "RGBA")
    s = m[0, 0]
    (x0, y0), (x1, y1) = _apply(np.linalg.inv(m), np.array([[0.0, 0.0], [size, size]]))
    pieces = garment_pieces(g)
    top = NECK_Y if g.category not in ("skirt", "trousers") else g.waist
    bottom = g.hem + (LEG_JOINT[1] if g.category == "trousers" else 0.0)
    tx, ty = m[0, 2], m[1, 2]  # m is a similarity: pixel = s * figure + (tx, ty)
    if g.pattern in ("stripes-h", "stripes-v", "checks"):
        fill = (*g.rgb2, 255 if g.pattern != "checks" else 120)  # gingham: band crossings come out darker
        band = g.duty * g.period * s
        if g.pattern != "stripes-v":  # horizontal bands
            for a in np.arange(y0 - (y0 - g.phase) % g.period, y1, g.period) * s + ty:
                d.rectangle([0, a, size, a + band], fill=fill)
        if g.pattern != "stripes-h":  # vertical bands
            for a in np.arange(x0 - (x0 - g.phase) % g.period, x1, g.period) * s + tx:
                d.rectangle([a, 0, a + band, size], fill=fill)
    elif g.pattern == "two-tone":
        ys = top + g.split_at * (bottom - top)
        if g.split == "h":
            poly = [(x0, ys), (x1, ys), (x1, y1), (x0, y1)]
        elif g.split == "v":
            xs = (g.split_at - 0.5) * 0.1
            poly = [(xs, y0), (x1, y0), (x1, y1), (xs, y1)]
        else:
            poly = [(x0, ys - 0.6 * (x0 - 0.0)), (x1, ys - 0.6 * x1), (x1, y1), (x0, y1)]
        d.polygon(_apply(m, np.array(poly)).ravel().tolist(), fill=g.rgb2)
    elif g.pattern == "dots":  # staggered rows
        r = g.duty * g.period * 0.45 * s
        ys = np.arange(y0 + g.phase, y1 + g.period, g.period * 0.87)
        xs = np.arange(x0, x1 + g.period, g.period)
        cx = (xs[None, :] + (np.arange(len(ys)) % 2)[:, None] * g.period / 2) * s + tx  # (rows, cols)
        cy = np.broadcast_to(ys[:, None] * s + ty, cx.shape)
        for px, py in zip(cx.ravel().tolist(), cy.ravel().tolist(), strict=True):
            d.ellipse([px - r, py - r, px + r, py + r], fill=g.rgb2)
    elif g.pattern == "logo":
        cx, cy = g.logo_at
        if g.logo in EMBLEMS:
            polys = _emblem(g.logo, cx, cy, g.logo_size)
            d.polygon(_apply(m, polys[0]).ravel().tolist(), fill=g.rgb2)
            for hole in polys[1:]:
                d.polygon(_apply(m, hole).ravel().tolist(), fill=g.rgb)
        else:
            (px, py), = _apply(m, np.array([[cx, cy]]))
            d.text((px, py), g.logo, fill=g.rgb2, font=_font(int(g.logo_size * s)), anchor="mm")
    # Construction details: they identify a product as much as its pattern does.
    band = g.trim or _shade(g.rgb, 0.85)
    flat = flat_pose(g)
    if g.category in ("skirt", "trousers"):
        _band(d, m, np.array([(-0.12, g.waist), (0.12, g.waist), (0.12, g.waist + 0.02), (-0.12, g.waist + 0.02)]), band)
        if g.category == "trousers":  # fly and front pockets
            line = _apply(m, np.array([(0.0, g.waist + 0.02), (0.004, 0.47), (0.012, 0.5)]))
            d.line([tuple(p) for p in line], fill=_edge(g.rgb), width=max(1, int(s * 0.004)))
            for side in (-1, 1):
                pocket = _apply(m, np.array([(side * 0.05, g.waist + 0.02), (side * 0.075, 0.46), (side * 0.1, 0.47)]))
                d.line([tuple(p) for p in pocket], fill=_edge(g.rgb), width=max(1, int(s * 0.003)))
            for piece in pieces if g.trim else []:  # side stripes and turn-ups
                if piece.limb == "leg":
                    leg = m @ place(piece, flat)
                    (a, b), w = piece.outline[1:3], 0.012
                    _band(d, leg, np.array([a - (w, 0), a, b, b - (w, 0)]), g.trim)
                    _band(d, leg, np.array([(-0.1, g.hem - 0.03), (0.1, g.hem - 0.03), (0.1, g.hem + 0.01),
                                            (-0.1, g.hem + 0.01)]), g.trim)
        elif g.trim:  # skirt: a hem band
            _band(d, m, np.array([(-0.3, g.hem - 0.03), (0.3, g.hem - 0.03), (0.3, g.hem + 0.02), (-0.3, g.hem + 0.02)]),
                  g.trim)
        return tex
    if g.neckline == "turtle" or g.category == "sweater" or g.trim:
        neck = _apply(m, np.array(_neckline(g)))
        d.line([tuple(p) for p in neck], fill=band, width=max(1, int(s * 0.012)), joint="curve")
    ribbed = g.category == "sweater"
    if ribbed or (g.trim and g.category != "dress"):
        hw = 0.12 * g.fit
        _band(d, m, np.array([(-hw, g.hem - 0.028), (hw, g.hem - 0.028), (hw, g.hem + 0.01), (-hw, g.hem + 0.01)]),
              band, ribs=0.006 * s if ribbed else 0.0)
    if g.sleeve > 0.2 and (ribbed or g.trim):
        for piece in pieces:
            if piece.limb == "arm":
                c = g.cuff * 1.3
                _band(d, m @ place(piece, flat), np.array([(-c, g.sleeve - 0.025), (c, g.sleeve - 0.025),
                                                           (c, g.sleeve + 0.01), (-c, g.sleeve + 0.01)]),
                      band, ribs=0.006 * s if ribbed else 0.0)
    if g.category == "dress":  # waist seam or belt
        w = 0.012 if g.trim else 0.003
        _band(d, m, np.array([(-0.12, 0.38 - w), (0.12, 0.38 - w), (0.12, 0.38 + w), (-0.12, 0.38 + w)]),
              g.trim or _edge(g.rgb))
    if g.pocket:
        box = _apply(m, np.array([(0.035, 0.215), (0.072, 0.26)]))
        d.rectangle(box.ravel().tolist(), outline=_edge(g.rgb), width=max(1, int(s * 0.003)))
    dip = max(y for _, y in _neckline(g)) if g.neckline != "turtle" else NECK_Y
    for k in range(g.buttons):
        (px, py), = _apply(m, np.array([[0.0, dip + 0.02 + 0.028 * k]]))
        r = max(1.0, 0.006 * s)
        d.ellipse([px - r, py - r, px + r, py + r], fill=_edge(g.rgb))
    return tex


# ---- drawing pieces ---------------------------------------------------------------------------------------

def _persp(inv: np.ndarray) -> tuple[float, ...]:
    """PIL's PERSPECTIVE data: the 8 coefficients of the output -> input map."""
    inv = inv / inv[2, 2]
    return tuple(inv.ravel()[:8].tolist())


def _paste_piece(img: Image.Image, poly: np.ndarray, texture: Image.Image, to_texture: np.ndarray | None,
                 shade: float = 0.0) -> None:
    """Fill the polygon (pixels) with the texture sampled through to_texture (pixel -> texture pixel).

    Only the polygon's bounding box is resampled. `shade` darkens the sides, as light falls on a body."""
    w, h = img.size
    bx0, by0 = max(0, int(poly[:, 0].min())), max(0, int(poly[:, 1].min()))
    bx1, by1 = min(w, int(poly[:, 0].max()) + 2), min(h, int(poly[:, 1].max()) + 2)
    if bx1 <= bx0 or by1 <= by0:
        return
    mask = Image.new("L", (bx1 - bx0, by1 - by0), 0)
    ImageDraw.Draw(mask).polygon((poly - [bx0, by0]).ravel().tolist(), fill=255)
    if to_texture is None:
        crop = texture.crop((bx0, by0, bx1, by1))
    else:
        crop = texture.transform(mask.size, Image.Transform.PERSPECTIVE, _persp(to_texture @ _translate(bx0, by0)),
                                 Image.Resampling.BILINEAR)
    if shade > 0:
        x = np.linspace(-1.0, 1.0, mask.size[0])
        light = Image.fromarray((255 * (1.0 - shade * x * x)).astype(np.uint8)[None, :], "L").resize(mask.size)
        crop = ImageChops.multiply(crop, Image.merge("RGB", (light, light, light)))
    img.paste(crop, (bx0, by0), mask)


def draw_garment(img: Image.Image, g: Garment, pieces: list[Piece], pose: Pose, fig_to_px: np.ndarray,
                 texture: Image.Image | None = None, tex_m: np.ndarray | None = None, width: int = 1) -> None:
    """Draw pieces of a garment at a pose: textured (texture, tex_m: figure units -> texture pixels) or solid."""
    d = ImageDraw.Draw(img)
    flat = flat_pose(g)
    for piece in pieces:
        m = fig_to_px @ place(piece, pose)
        poly = _apply(m, piece.outline)
        if texture is None:
            d.polygon(poly.ravel().tolist(), fill=g.rgb)
        else:  # pixel -> this pose's piece frame -> the flat lay's figure units -> texture pixel
            to_texture = tex_m @ place(piece, flat) @ np.linalg.inv(m)
            flat_lay = np.allclose(to_texture, np.eye(3))
            _paste_piece(img, poly, texture, None if flat_lay else to_texture, 0.0 if flat_lay else 0.25)
        if piece.stroke is not None:
            d.line([tuple(p) for p in _apply(m, piece.stroke)], fill=_edge(g.rgb), width=width, joint="curve")


def product_frame(g: Garment, size: int) -> np.ndarray:
    """Figure units -> product-image pixels: the flat garment centred, 80 % of the image on its long side."""
    flat = flat_pose(g)
    pts = np.vstack([_apply(place(p, flat), p.outline) for p in garment_pieces(g)])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    s = 0.8 * size / float((hi - lo).max())
    return _translate(size / 2, size / 2) @ _scale(s, s) @ _translate(*(-(lo + hi) / 2))


def render_product(g: Garment, size: int) -> tuple[Image.Image, Image.Image, np.ndarray]:
    """The product image (flat and frontal on white), its texture, and the figure -> texture-pixel map.

    Drawn at twice the size and reduced, for the smooth edges of a catalog shot; the photos sample the
    double-size texture, so their garment keeps detail when the person stands close."""
    big = 2 * size
    m = product_frame(g, big)
    texture = render_texture(g, m, big)
    img = Image.new("RGB", (big, big), (255, 255, 255))
    if g.category not in ("skirt", "trousers") and g.neckline != "turtle":  # the inside of the back neck
        neck = _neckline(g)
        half = neck[0][0]
        back = np.array(neck + [(-half * 0.9, NECK_Y - 0.012), (half * 0.9, NECK_Y - 0.012)])
        ImageDraw.Draw(img).polygon(_apply(m, back).ravel().tolist(), fill=_shade(g.rgb, 0.7))
    draw_garment(img, g, garment_pieces(g), flat_pose(g), m, texture, m, width=max(1, big // 160))
    return img.reduce(2), texture, m


# ---- the person and the scene -----------------------------------------------------------------------------

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


def figure_transform(rng: np.random.Generator, size: int) -> np.ndarray:
    """Figure units -> photo pixels: a random place and size (40-95 % of the height), tilt, turn, perspective."""
    height = rng.uniform(0.40, 0.95) * size
    xs = rng.uniform(0.85, 1.1)  # body width, or a slight turn away from the camera
    tilt = rng.uniform(-0.14, 0.14)
    persp = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [rng.uniform(-0.5, 0.5), rng.uniform(-0.15, 0.15), 1.0]])
    half_w, half_h = 0.3 * height * xs, 0.5 * height + 0.01 * size
    cx = rng.uniform(min(half_w, size / 2), max(size - half_w, size / 2))
    cy = rng.uniform(min(half_h, size / 2), max(size - half_h, size / 2))
    return _translate(cx, cy) @ _rotate(tilt) @ _scale(height * xs, height) @ persp @ _translate(0.0, -0.5)


def _colour(rng: np.random.Generator, lo: int, hi: int) -> RGB:
    return tuple(int(c) for c in rng.integers(lo, hi + 1, 3))  # type: ignore[return-value]


def _gradient(size: int, c1: RGB, c2: RGB, angle: float) -> Image.Image:
    """A linear gradient, computed on a 16x16 grid and resized (exact for a linear ramp, and fast)."""
    t = np.linspace(-1.0, 1.0, 16)
    u = (t[None, :] * math.cos(angle) + t[:, None] * math.sin(angle) + 1.42) / 2.84  # (16, 16) in [0, 1]
    a = np.array(c1, np.float32) + u[..., None] * (np.array(c2, np.float32) - np.array(c1, np.float32))
    return Image.fromarray(a.astype(np.uint8), "RGB").resize((size, size), Image.Resampling.BILINEAR)


def _background(rng: np.random.Generator, size: int) -> Image.Image:
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


def _camera(img: Image.Image, rng: np.random.Generator) -> Image.Image:
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


def _occluder(img: Image.Image, rng: np.random.Generator, fig: np.ndarray, person: Person) -> None:
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


def render_photo(g: Garment, texture: Image.Image, tex_m: np.ndarray, rng: np.random.Generator,
                 size: int) -> Image.Image:
    """One street photo: a person wearing garment g (sampled from its texture), somewhere on a background."""
    person = make_person(rng, g)
    fig = figure_transform(rng, size)
    img = _background(rng, size)
    d = ImageDraw.Draw(img, "RGBA")
    width = max(1, size // 180)

    def poly(pts: np.ndarray, m: np.ndarray = fig) -> list[float]:
        return _apply(m, pts).ravel().tolist()

    d.polygon(poly(_ellipse(0.0, 0.985, 0.16, 0.02)), fill=(0, 0, 0, 60))  # the shadow at the feet
    for hair in _hair(person, front=False):
        d.polygon(poly(hair), fill=person.hair)
    for side in (-1, 1):
        leg = fig @ place(Piece(LEG.outline, limb="leg", side=side), person.pose)
        d.polygon(poly(LEG.outline, leg), fill=person.legs)
        d.polygon(poly(SHOE, leg), fill=person.shoes)
    d.polygon(poly(np.array([(-0.02, 0.1), (0.02, 0.1), (0.022, 0.17), (-0.022, 0.17)])), fill=person.skin)

    product, other = garment_pieces(g), garment_pieces(person.other) if person.other else []
    def body(pieces: list[Piece]) -> list[Piece]:
        return [p for p in pieces if p.limb != "arm"]

    def sleeves(pieces: list[Piece]) -> list[Piece]:
        return [p for p in pieces if p.limb == "arm"]

    # Bottoms first, tops over them, except a plain top tucked into product bottoms.
    layers = [(person.other, other, None), (g, product, texture)]
    if g.category in ("skirt", "trousers"):
        layers.reverse()
    for garment, pieces, tex in layers:
        if garment is not None:
            draw_garment(img, garment, body(pieces), person.pose, fig, tex, tex_m, width)
    for side in (-1, 1):
        arm = fig @ place(Piece(ARM.outline, limb="arm", side=side), person.pose)
        d.polygon(poly(ARM.outline, arm), fill=person.skin)
        d.polygon(poly(HAND, arm), fill=person.skin)
    for garment, pieces, tex in layers:
        if garment is not None:
            draw_garment(img, garment, sleeves(pieces), person.pose, fig, tex, tex_m, width)

    cx, cy, rx, ry = HEAD
    d.polygon(poly(_ellipse(cx, cy, rx, ry)), fill=person.skin)
    for hair in _hair(person, front=True):
        d.polygon(poly(hair), fill=person.hair)
    for ex in (-0.016, 0.016):
        d.polygon(poly(_ellipse(ex, cy + 0.004, 0.005, 0.004, 8)), fill=(40, 30, 30))
    d.line([tuple(p) for p in _apply(fig, np.array([(-0.01, 0.1), (0.01, 0.1)]))], fill=_shade(person.skin, 0.7),
           width=width)
    if rng.random() < 0.3:
        _occluder(img, rng, fig, person)
    return _camera(img, rng)


# ---- the data set on disk ---------------------------------------------------------------------------------

def _check(cfg: SynthConfig) -> None:
    """Bad settings are the user's: one line each."""
    if cfg.products < 1:
        raise UserError(f"--products must be at least 1, got {cfg.products}")
    if cfg.photos_per_product < 1:
        raise UserError(f"--photos-per-product must be at least 1, got {cfg.photos_per_product}")
    if cfg.size < 16:
        raise UserError(f"--size must be at least 16 pixels, got {cfg.size}")
    if cfg.seed < 0:
        raise UserError(f"--seed must be non-negative, got {cfg.seed}")
    if cfg.workers < 1:
        raise UserError(f"--workers must be at least 1, got {cfg.workers}")
    if not 1 <= cfg.jpeg_quality <= 95:
        raise UserError(f"jpeg_quality must be in 1..95, got {cfg.jpeg_quality}")
    if cfg.products * (cfg.photos_per_product + 1) > 1_000_000:  # PID and IID are six digits
        raise UserError(f"{cfg.products} products x {cfg.photos_per_product + 1} images do not fit six-digit image ids")


def _prepare_out(out: Path) -> None:
    """Create `out`; a non-empty folder is overwritten only if synth wrote it (its synth.json), never mixed."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise UserError(f"--out {out} is not empty and was not written by `rtd data synth`; "
                            "refusing to mix files: choose a new or empty folder")
        for path in out.iterdir():  # our own earlier output: LookBook images, products.csv, the marker
            if path.is_file() and (LOOKBOOK_RE.match(path.name) or path.name in ("products.csv", MARKER)):
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _save(img: Image.Image, path: Path, quality: int) -> None:
    # Fixed encoder settings: the same seed gives byte-identical files.
    img.save(path, "JPEG", quality=quality, subsampling="4:2:0", optimize=False, progressive=False)


def write_product(cfg: SynthConfig, index: int) -> list[str]:
    """Render and write product `index` and its photos; returns its products.csv row."""
    # Independent streams per image: the product does not change with --photos-per-product or --workers.
    g = make_garment(np.random.default_rng([cfg.seed, index, 0]), index)
    product, texture, tex_m = render_product(g, cfg.size)
    pid, first = f"{index:06d}", index * (cfg.photos_per_product + 1)
    _save(product, cfg.out / f"PID{pid}_CLEAN1_IID{first:06d}.jpg", cfg.jpeg_quality)
    for k in range(cfg.photos_per_product):
        photo = render_photo(g, texture, tex_m, np.random.default_rng([cfg.seed, index, k + 1]), cfg.size)
        _save(photo, cfg.out / f"PID{pid}_CLEAN0_IID{first + 1 + k:06d}.jpg", cfg.jpeg_quality)
    return [pid, g.category, g.colour, g.pattern]


def synthesize(cfg: SynthConfig) -> dict:
    """Write the data set (LookBook layout + products.csv) into cfg.out; returns a small report."""
    _check(cfg)
    cfg = replace(cfg, out=Path(cfg.out))
    _prepare_out(cfg.out)
    info = {"format": FORMAT, "written_by": "rtd data synth", "products": cfg.products,
            "photos_per_product": cfg.photos_per_product, "size": cfg.size, "seed": cfg.seed,
            "jpeg_quality": cfg.jpeg_quality, "categories": list(CATEGORIES), "patterns": list(PATTERNS)}
    (cfg.out / MARKER).write_text(json.dumps(info | {"complete": False}, indent=1) + "\n", encoding="utf-8")
    start = time.perf_counter()
    work = partial(write_product, cfg)
    workers = min(cfg.workers, cfg.products)
    bar = dict(total=cfg.products, desc="synth", unit="product", disable=None)
    if workers == 1:
        rows = [row for row in tqdm(map(work, range(cfg.products)), **bar)]
    else:  # spawn: safe even when the caller has imported torch (its threads do not survive a fork)
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            chunk = max(1, min(16, cfg.products // (workers * 8)))
            rows = [row for row in tqdm(pool.imap(work, range(cfg.products), chunksize=chunk), **bar)]
    with (cfg.out / "products.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["product_id", "category", "colour", "pattern"])
        writer.writerows(rows)
    (cfg.out / MARKER).write_text(json.dumps(info | {"complete": True}, indent=1) + "\n", encoding="utf-8")
    seconds = time.perf_counter() - start
    photos = cfg.products * cfg.photos_per_product
    return {"out": str(cfg.out), "products": cfg.products, "photos": photos, "seconds": round(seconds, 3),
            "pairs_per_s": round(photos / max(seconds, 1e-9), 1)}
