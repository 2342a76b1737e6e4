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

This file holds the config, the garments (drawn per product, their pieces, textures and drawing), the product
image, the composition of a photo and the files on disk. `training/synth_scene.py` holds the figure-unit
geometry, the body, poses and the `Garment` record, and the rest of a photo: the person, the background, the
occluders and the camera effects.
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
from typing import Literal

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFont
from tqdm import tqdm

from rtdgan.index.configs import opt
from rtdgan.index.errors import UserError
from rtdgan.training.data import LOOKBOOK_RE
from rtdgan.training.synth_scene import (
    FRAMINGS,
    LEG_JOINT,
    NECK_Y,
    RGB,
    Garment,
    Piece,
    Pose,
    _apply,
    _ellipse,
    _mirror_x,
    _scale,
    _shade,
    _translate,
    background,
    camera,
    draw_arms,
    draw_behind,
    draw_head,
    figure_transform,
    make_person,
    occluder,
    place,
)

CATEGORIES = ("t-shirt", "long-sleeve", "sweater", "dress", "skirt", "trousers")
PATTERNS = ("solid", "stripes-h", "stripes-v", "two-tone", "dots", "checks", "logo")
# A modest palette, so that many products share category and colour and retrieval is not trivial.
COLOURS: dict[str, RGB] = {
    "black": (32, 32, 36), "charcoal": (78, 80, 88), "grey": (160, 162, 166), "navy": (30, 44, 92),
    "blue": (66, 124, 196), "red": (188, 38, 44), "burgundy": (112, 30, 50), "green": (38, 108, 64),
    "olive": (112, 112, 58), "mustard": (214, 168, 48), "pink": (234, 146, 172), "beige": (212, 192, 156),
}
PRINT_WHITE: RGB = (240, 238, 228)  # the second colour of white stripes, dots and prints
EMBLEMS = ("star", "circle", "ring", "diamond", "triangle", "cross", "heart", "bolt")
LETTERS = "ABCDEFGHKMNPRSTUVWXYZ"
MARKER = "synth.json"  # marks a folder as written by synth, so a re-run may overwrite it
BOXES_CSV = "boxes.csv"  # each photo's person box, normalized (the `rtd fit-crop` targets)
BOX_COLUMNS = ("photo", "x0", "y0", "x1", "y1")
# The person in figure units (training/synth_scene.py): head top y ~0.008, shoes ~0.98; half width 0.3 as
# figure_transform's own placement uses (arms held out may reach a little beyond).
PERSON_BOX = np.array([(-0.3, 0.0), (0.3, 0.0), (0.3, 1.0), (-0.3, 1.0)])
FORMAT = 1

FLAT_ARM = {True: 0.80, False: 0.40}  # flat-lay sleeve angle (radians from hanging down): short sleeves, long
FLAT_LEG = 0.05


FramingName = Literal[tuple(FRAMINGS)]  # type: ignore[valid-type]  # "street" or "lookbook" (synth_scene.FRAMINGS)


@dataclass(frozen=True)
class SynthConfig:
    """`rtd data synth`: where to write, how many products and photos, image side, seed, processes.

    The flags of `rtd data synth` are derived from these fields (training/data_cli.py)."""

    out: Path = opt(help="folder to write")
    products: int = opt(50, "products to draw")
    photos_per_product: int = opt(4, "street photos per product")
    size: int = opt(128, "image side in pixels (at least 16)")
    seed: int = opt(0, "seed of the products and photos")
    workers: int = opt(1, "processes (output is identical for any value)")
    jpeg_quality: int = opt(92, cli=False)
    framing: FramingName = opt("street", "street: a person 40-95% of the height anywhere in the photo; "
                                     "lookbook: 80-95%, centred")


def _edge(rgb: RGB) -> RGB:
    """The colour of a garment's outline: darker, or lighter on an almost black garment."""
    return _shade(rgb, 0.6) if sum(rgb) > 180 else tuple(c + 40 for c in rgb)  # type: ignore[return-value]


# ---- products (the `Garment` record lives in synth_scene: the person wears plain ones) -------------------

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


# ---- the photo --------------------------------------------------------------------------------------------

def person_box(fig: np.ndarray) -> np.ndarray:
    """The person's box (x0, y0, x1, y1) in photo pixels, from the figure -> pixel map of `render_photo`; it may
    reach past the photo's edges (a person cut by the frame)."""
    pts = _apply(fig, PERSON_BOX)
    return np.concatenate([pts.min(axis=0), pts.max(axis=0)])


def photo_person_box(seed: int, index: int, k: int, size: int, framing: str = "street") -> np.ndarray:
    """`person_box` of photo k of product `index` (seed, size, framing as synthesized), replayed from the
    photo's random stream: the same draws `render_photo` makes before placing the figure."""
    g = make_garment(np.random.default_rng([seed, index, 0]), index)
    rng = np.random.default_rng([seed, index, k + 1])
    make_person(rng, g)
    return person_box(figure_transform(rng, size, FRAMINGS[framing]))


def render_photo(g: Garment, texture: Image.Image, tex_m: np.ndarray, rng: np.random.Generator,
                 size: int, framing: str = "street") -> tuple[Image.Image, np.ndarray]:
    """One street photo: a person wearing garment g (sampled from its texture), somewhere on a background; and
    the person's box in pixels (`person_box`)."""
    person = make_person(rng, g)
    fig = figure_transform(rng, size, FRAMINGS[framing])
    img = background(rng, size)
    d = ImageDraw.Draw(img, "RGBA")
    width = max(1, size // 180)
    draw_behind(d, fig, person)

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
    draw_arms(d, fig, person)
    for garment, pieces, tex in layers:
        if garment is not None:
            draw_garment(img, garment, sleeves(pieces), person.pose, fig, tex, tex_m, width)
    draw_head(d, fig, person, width)
    if rng.random() < 0.3:
        occluder(img, rng, fig, person)
    return camera(img, rng), person_box(fig)


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
    if cfg.framing not in FRAMINGS:
        raise UserError(f"--framing must be one of {', '.join(FRAMINGS)}, got {cfg.framing!r}")
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
            if path.is_file() and (LOOKBOOK_RE.match(path.name) or path.name in ("products.csv", BOXES_CSV, MARKER)):
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _save(img: Image.Image, path: Path, quality: int) -> None:
    # Fixed encoder settings: the same seed gives byte-identical files.
    img.save(path, "JPEG", quality=quality, subsampling="4:2:0", optimize=False, progressive=False)


def write_product(cfg: SynthConfig, index: int) -> tuple[list[str], list[list[str]]]:
    """Render and write product `index` and its photos; returns its products.csv row and its boxes.csv rows
    (each photo's person box, clipped to the photo and divided by its side: x0, y0, x1, y1 in [0, 1])."""
    # Independent streams per image: the product does not change with --photos-per-product or --workers.
    g = make_garment(np.random.default_rng([cfg.seed, index, 0]), index)
    product, texture, tex_m = render_product(g, cfg.size)
    pid, first = f"{index:06d}", index * (cfg.photos_per_product + 1)
    _save(product, cfg.out / f"PID{pid}_CLEAN1_IID{first:06d}.jpg", cfg.jpeg_quality)
    boxes = []
    for k in range(cfg.photos_per_product):
        photo, box = render_photo(g, texture, tex_m, np.random.default_rng([cfg.seed, index, k + 1]), cfg.size,
                                  cfg.framing)
        name = f"PID{pid}_CLEAN0_IID{first + 1 + k:06d}.jpg"
        _save(photo, cfg.out / name, cfg.jpeg_quality)
        boxes.append([name, *(f"{v:.5f}" for v in np.clip(box / cfg.size, 0.0, 1.0))])
    return [pid, g.category, g.colour, g.pattern], boxes


def synthesize(cfg: SynthConfig) -> dict:
    """Write the data set (LookBook layout + products.csv) into cfg.out; returns a small report."""
    _check(cfg)
    cfg = replace(cfg, out=Path(cfg.out))
    _prepare_out(cfg.out)
    info = {"format": FORMAT, "written_by": "rtd data synth", "products": cfg.products,
            "photos_per_product": cfg.photos_per_product, "size": cfg.size, "seed": cfg.seed,
            "jpeg_quality": cfg.jpeg_quality, "framing": cfg.framing,
            "categories": list(CATEGORIES), "patterns": list(PATTERNS)}
    (cfg.out / MARKER).write_text(json.dumps(info | {"complete": False}, indent=1) + "\n", encoding="utf-8")
    start = time.perf_counter()
    work = partial(write_product, cfg)
    workers = min(cfg.workers, cfg.products)
    bar = dict(total=cfg.products, desc="synth", unit="product", disable=None)
    if workers == 1:
        done = list(tqdm(map(work, range(cfg.products)), **bar))
    else:  # spawn: safe even when the caller has imported torch (its threads do not survive a fork)
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            chunk = max(1, min(16, cfg.products // (workers * 8)))
            done = list(tqdm(pool.imap(work, range(cfg.products), chunksize=chunk), **bar))
    with (cfg.out / "products.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["product_id", "category", "colour", "pattern"])
        writer.writerows(row for row, _ in done)
    with (cfg.out / BOXES_CSV).open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(BOX_COLUMNS)
        writer.writerows(box for _, boxes in done for box in boxes)
    (cfg.out / MARKER).write_text(json.dumps(info | {"complete": True}, indent=1) + "\n", encoding="utf-8")
    seconds = time.perf_counter() - start
    photos = cfg.products * cfg.photos_per_product
    return {"out": str(cfg.out), "products": cfg.products, "photos": photos, "seconds": round(seconds, 3),
            "pairs_per_s": round(photos / max(seconds, 1e-9), 1)}
