"""The demo's check: how often `/search` finds the product of a held-out photo, measured once (ROOT/check.json) and
printed. The queries are the shop's LookBook-framed photos and street-framed photos of the same products
(ROOT/street-data: the shop's seed, street framing, 256 px), the whole shop is the gallery; the served query
(through the person crop and the head when the artifacts have them) is measured beside the head on the frozen
embedder (when the served embedder is fine-tuned) and the frozen embedder's generated and photo queries (the
paper's protocol)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from rtdgan.training.demo_config import DemoConfig
from rtdgan.training.demo_stage import say, synth_world

CHECK_K = 10
CHECK_KS = (1, 5, 10)
CHECK_FORMAT = 3  # check.json: recall rows with and without the head, LookBook and street photos (1: hit rates only;
# 2: LookBook photos only)


def _recall(ranks: list[int], queries: int) -> dict[str, float]:
    """{"1": R@1, ...} from the true product's 0-based rank per query (-1: not in the top CHECK_K)."""
    return {str(k): round(sum(0 <= r < k for r in ranks) / queries, 4) for k in CHECK_KS}


def frozen_version(artifacts: Path) -> Path | None:
    """For artifacts whose embedder is fine-tuned: the kept version folder holding the frozen embedder it was tuned
    from (with its head, when it has one), or None (not fine-tuned, or that version was pruned)."""
    from rtdgan.index.runtime.artifacts import read_model_json
    from rtdgan.training.export import versions

    model = read_model_json(artifacts)
    tuned = model["embedder"].get("tuned") if model is not None else None
    if tuned is None:
        return None
    for version in reversed(versions(Path(artifacts))):
        doc = read_model_json(version)
        if doc is not None and doc["embedder"].get("onnx_sha256") == tuned.get("frozen_onnx_sha256"):
            return version
    return None


def measure(artifacts: Path, index: Path, data: Path, batch: int = 32, queries_from: Path | None = None) -> dict:
    """R@1/5/10 of the shop's held-out street photos, every photo a query and the whole shop the gallery
    (`queries_from`: photos of the same products in another data folder, e.g. street-framed ones):

    - the served query: `/search`'s own path (index/pipeline.py: ONNX generator -> ONNX embedder [-> the head's
      query side] -> the demo's FAISS index), the default query (with a head: its mode, fused);
    - when the served embedder is fine-tuned: the head on the frozen embedder it was tuned from (the artifacts'
      previous version, `frozen_version`), its query against an in-memory catalog embedded through it;
    - without the head (the paper's protocol): the generated image, and the photo itself, on the frozen embedder,
      against an in-memory catalog embedded by a pipeline opened with `head=False`. Their features are the
      frozen embedder's outputs a query above already computed (`QueryResult.features`), so each image is
      embedded once per embedder."""
    from rtdgan.index.pipeline import FROZEN_KINDS, Pipeline
    from rtdgan.training.data import load_records
    from rtdgan.training.eval_protocol import gallery_catalog

    served = Pipeline.open(artifacts, index)
    baseline_folder = frozen_version(artifacts)
    frozen_folder = baseline_folder or artifacts
    baseline = Pipeline.open(baseline_folder) if baseline_folder is not None else None
    frozen = Pipeline.open(frozen_folder, head=False, generator=False)
    records = load_records(data).records
    queries = [(photo, r.product_id) for r in load_records(queries_from or data).records for photo in r.photos]
    tuned = "tuned" in served.artifacts.model["embedder"]
    served_name = f"{'fine-tuned ' if tuned else ''}head {served.default_query}" if served.head is not None else \
        f"frozen {served.default_query}"

    def gallery(pipeline: Pipeline) -> None:
        images = (np.stack([pipeline.preprocess(r.product_image) for r in records[i:i + batch]])
                  for i in range(0, len(records), batch))
        pipeline.catalog = gallery_catalog(pipeline, records, np.concatenate([pipeline.embed_catalog(x) for x in images]))

    if served.head is None and not tuned:  # the served index is the frozen embedder's space already
        frozen.catalog = served.catalog
    else:
        gallery(frozen)  # as `rtd eval` builds its gallery
    ranks: dict[str, list[int]] = {served_name: []}
    if baseline is not None:
        gallery(baseline)
        baseline_name = f"head {baseline.default_query}" if baseline.head is not None else None
        if baseline_name is not None:
            ranks[baseline_name] = []
    ranks |= {f"frozen {kind}": [] for kind in FROZEN_KINDS}

    def rank(truth: str, found: list) -> int:
        return next((i for i, hit in enumerate(found) if hit.product_id == truth), -1)

    for start in range(0, len(queries), batch):
        chunk = queries[start:start + batch]
        truths = [truth for _, truth in chunk]
        # As /search takes them: (B, 3, S, S), or with a person crop the decoded photos the crop stage cuts.
        photos = served.batch([served.prepare(path) for path, _ in chunk])
        result = served.query(photos, CHECK_K)  # the served query; its embedder features come back with it
        ranks[served_name] += [rank(t, found) for t, found in zip(truths, result.hits, strict=True)]
        source, features = served, result.features
        if baseline is not None:  # the frozen embedder's query, and its features for the frozen rows
            base = baseline.query(photos, CHECK_K)
            if baseline.head is not None:
                ranks[f"head {baseline.default_query}"] += [rank(t, f) for t, f in zip(truths, base.hits, strict=True)]
            source, features = baseline, base.features
        for kind in FROZEN_KINDS:  # an input the query does not use: the same path's features for it
            if kind not in features:
                features[kind] = source.features(photos, kind).features[kind]
        for kind in FROZEN_KINDS:
            if f"frozen {kind}" != served_name:  # without a head the served query is one of them, counted above
                hits = frozen.search(features[kind], CHECK_K)
                ranks[f"frozen {kind}"] += [rank(t, found) for t, found in zip(truths, hits, strict=True)]

    n, catalog = len(queries), len(served.catalog)  # type: ignore[arg-type]
    assert all(len(r) == n for r in ranks.values()), {name: len(r) for name, r in ranks.items()}
    recall = {name: _recall(r, n) for name, r in ranks.items()}
    return {"format": CHECK_FORMAT, "k": CHECK_K, "queries": n, "catalog": catalog,
            "embed_level": served.artifacts.model["embedder"].get("level", 0),
            "head": served.head.describe() if served.head is not None else None,
            "crop": served.cropper.info.describe() if served.cropper is not None else None,
            "tuned": served.artifacts.model["embedder"]["tuned"]["blocks"] if tuned else None,
            "served": served_name, "recall": recall,
            # The served query's top-10 hit rate (/search's path), and the photo itself as the query (frozen).
            "hit_rate": recall[served_name][str(CHECK_K)],
            "photo_query_hit_rate": recall["frozen photo"][str(CHECK_K)],
            "chance": min(1.0, CHECK_K / catalog), "chance_recall": {str(k): min(1.0, k / catalog) for k in CHECK_KS}}


def street_photos(cfg: DemoConfig) -> Path:
    """The shop's products photographed street-style (the person anywhere, 40-95 % of the height) at street_size px:
    the same seed draws the same products, so the demo's index is their gallery."""
    return synth_world(cfg.root / "street-data", cfg.products, cfg.photos_per_product, cfg, cfg.seed, "street",
                       cfg.street_size)


def check(cfg: DemoConfig, artifacts: Path, index: Path, data: Path) -> dict:
    """Measure (once) and print how often the demo's /search finds the product of a held-out photo: the shop's
    LookBook-framed photos (check.json's top level) and street-framed photos of the same products ("street")."""
    from rtdgan.index.catalog.engines import read_manifest

    path = cfg.root / "check.json"
    result = json.loads(path.read_text()) if path.is_file() else {}
    # Measured again unless it was measured on this very index (its embedder and head: a stale file of another
    # build is never printed as this one's).
    manifest = read_manifest(index)
    space = {"embedder_sha256": manifest["embedder"]["sha256"], "head_sha256": (manifest.get("head") or {}).get("sha256")}
    if result.get("format") != CHECK_FORMAT or result.get("space") != space:
        street = street_photos(cfg)
        start = time.perf_counter()
        result = measure(artifacts, index, data) | {"seconds": 0.0}
        result["street"] = measure(artifacts, index, data, queries_from=street) | {
            "photos": {"framing": "street", "size": cfg.street_size}}
        result["seconds"] = round(time.perf_counter() - start, 1)
        result["space"] = space
        path.write_text(json.dumps(result, indent=1) + "\n")
    crop = "through the person crop" if result.get("crop") else "no person crop"
    for name, rows in (("LookBook-framed", result), ("street-framed", result.get("street"))):
        if rows is None:
            continue
        say(f"check: {rows['queries']} held-out {name} photos of {rows['catalog']} products ({crop}), the whole "
            f"shop the gallery, embed level {rows['embed_level']}: the true product's rank")
        say(f"  {'query':<46} {'R@1':>6} {'R@10':>6}")
        for query, r in rows["recall"].items():
            label = f"{query} (served by /search)" if query == rows["served"] else query
            say(f"  {label:<46} {r['1']:>6.3f} {r['10']:>6.3f}")
        say(f"  {'chance':<46} {rows['chance_recall']['1']:>6.3f} {rows['chance_recall']['10']:>6.3f}")
    return result
