"""FAISS indexes by index-factory string: the choice by catalog size, construction, search parameters.

The file catalog (index/catalog.py) holds any FAISS index that `faiss.index_factory(d, STRING,
METRIC_INNER_PRODUCT)` builds: "Flat" (exact), "HNSW32,Flat", "IVF4096,Flat", "IVF65536_HNSW32,Flat",
"OPQ64,IVF4096,PQ64x4fs,RFlat", ... (https://github.com/facebookresearch/faiss/wiki/The-index-factory).
Vectors are unit length, so inner product is cosine.

The names of the first catalog code stay as aliases, and an index folder written before factory strings
(index.json with `kind` and no `factory`) reads as its alias's string:

    flat   "Flat"                exact search
    hnsw   "HNSW32,Flat"         efConstruction 80 (the old `IndexHNSWFlat`)
    ivf    "IVF{nlist},Flat"     nlist = 4 sqrt(n), at most n / 39, chosen at the first add (the old rule)
    auto   by catalog size, at the first add (`default_factory`): what `rtd index build` uses unless told

`default_factory` follows FAISS's "Guidelines to choose an index"
(https://github.com/facebookresearch/faiss/wiki/Guidelines-to-choose-an-index): exact search while a scan is
cheap; below 1M vectors "IVFK,Flat" with K between 4 sqrt(N) and 16 sqrt(N); from 1M to 10M "IVF65536_HNSW32"
(the coarse quantizer itself an HNSW graph); beyond, IVF262144_HNSW32. The codes stay "Flat" (exact distances
within the probed lists): a compressed code (PQ, SQ8) is the choice when memory is short, given with
`--factory`. Measured: docs/benchmarks.md ("Catalog engines and factory strings").

Ids. IVF indexes take the catalog's ids themselves (with a hash-table direct map, so vectors can be
reconstructed and removed by id); every other index is wrapped in an `IndexIDMap2`.
"""

from __future__ import annotations

import math
import re

import faiss

from rtdgan.index.errors import UserError

ALIASES = ("flat", "hnsw", "ivf")  # the catalog's original kinds
AUTO = "auto"
HNSW_M = 32  # graph degree: 32 is FAISS's usual choice for 1e5..1e7 vectors of a few hundred dims and up
HNSW_EF_CONSTRUCTION = 80  # FAISS's default is 40; 80 is what the catalog has always built with
IVF_MIN_POINTS_PER_LIST = 39  # FAISS's k-means warns below this
# k-means on at most 64 points per list (FAISS samples; its default is 256): at 1M products that is 256k training
# vectors instead of all 1M, which keeps a CPU build to minutes at equal recall (docs/benchmarks.md).
IVF_MAX_POINTS_PER_LIST = 64
EXACT_MAX = 10_000  # up to here an exact scan is a few ms (D = 1280) and needs no training
IVF_MAX = 2_000_000  # below: IVF{~4 sqrt(n)},Flat; from here: IVF65536_HNSW32,Flat (30 points per list or more)
HUGE = 20_000_000  # from here: IVF262144_HNSW32,Flat
# A refine step ("...,RFlat") re-ranks this many times k candidates of its compressed base index exactly; FAISS's
# own default (1) re-ranks only the k it returns, which cannot repair the base's order beyond k.
REFINE_K_FACTOR = 4


def ivf_alias_nlist(n: int) -> int:
    """The `ivf` alias's list count: ~4 sqrt(n) (FAISS's guideline), capped so k-means has 39 points per list."""
    return max(1, min(round(4 * math.sqrt(n)), n // IVF_MIN_POINTS_PER_LIST))


def default_factory(n: int) -> str:
    """The factory string for a catalog of n products (module docstring: FAISS's guidelines)."""
    if n <= EXACT_MAX:
        return "Flat"
    if n < IVF_MAX:
        # 4 sqrt(n) rounded to a power of two (100k: 1024 lists, 1M: 4096), never under 39 points per list
        nlist = 2 ** round(math.log2(4 * math.sqrt(n)))
        return f"IVF{min(nlist, n // IVF_MIN_POINTS_PER_LIST)},Flat"
    return "IVF65536_HNSW32,Flat" if n < HUGE else "IVF262144_HNSW32,Flat"


def is_deferred(spec: str) -> bool:
    """Whether the string is only known once the first vectors arrive (`auto`, `ivf`)."""
    return spec in (AUTO, "ivf")


def resolve(spec: str, n: int) -> str:
    """An alias, `auto` or a factory string -> the factory string for a first add of n vectors."""
    if spec == AUTO:
        return default_factory(n)
    if spec == "flat":
        return "Flat"
    if spec == "hnsw":
        return f"HNSW{HNSW_M},Flat"
    if spec == "ivf":
        return f"IVF{ivf_alias_nlist(n)},Flat"
    return spec


def kind_of(factory: str) -> str:
    """The alias a factory string is the expansion of (flat, hnsw, ivf), else "factory" (index.json's `kind`)."""
    if factory == "Flat":
        return "flat"
    if factory == f"HNSW{HNSW_M},Flat":
        return "hnsw"
    if re.fullmatch(r"IVF\d+,Flat", factory):
        return "ivf"
    return "factory"


def check(spec: str, dim: int) -> None:
    """UserError unless `spec` is an alias, `auto`, or a string FAISS builds for this dim and inner product."""
    if spec in (*ALIASES, AUTO):
        return
    if not isinstance(spec, str) or not spec.strip():
        raise UserError("--factory: an empty index-factory string")
    try:
        faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        text = str(e).strip()
        why = f" ({text.split('Error: ', 1)[1].splitlines()[0][:120]})" if "Error: " in text else ""
        raise UserError(f"unknown index kind or FAISS index-factory string {spec!r} for {dim}-d inner-product "
                        f"vectors{why}; e.g. Flat, HNSW32,Flat, IVF4096,Flat, IVF65536_HNSW32,Flat, "
                        f"OPQ64,IVF4096,PQ64x4fs,RFlat, or the aliases {', '.join(ALIASES)}, {AUTO}") from e


def _takes_ids(index: faiss.Index) -> bool:
    """IVF (possibly behind a pre-transform such as OPQ) stores our ids itself; the rest need an IDMap2."""
    top = faiss.downcast_index(index)
    if isinstance(top, faiss.IndexPreTransform):
        top = faiss.downcast_index(top.index)
    return isinstance(top, faiss.IndexIVF)


def new_index(factory: str, dim: int) -> faiss.Index:
    """An empty (maybe untrained) index for a concrete factory string, ready for `add_with_ids`."""
    check(factory, dim)
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    hnsw = hnsw_of(index)
    if hnsw is not None:
        hnsw.hnsw.efConstruction = max(hnsw.hnsw.efConstruction, HNSW_EF_CONSTRUCTION)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.cp.max_points_per_centroid = IVF_MAX_POINTS_PER_LIST
        # A hash-table direct map lets IVF reconstruct and remove by our (sparse) ids.
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
    return index if _takes_ids(index) else faiss.IndexIDMap2(index)


def hnsw_of(index: faiss.Index) -> faiss.IndexHNSW | None:
    """The HNSW graph index at the top of the chain (under an IDMap, pre-transform or refine), or None."""
    node = faiss.downcast_index(index)
    while True:
        if isinstance(node, faiss.IndexHNSW):
            return node
        if isinstance(node, (faiss.IndexIDMap, faiss.IndexIDMap2, faiss.IndexPreTransform)):
            node = faiss.downcast_index(node.index)
        elif isinstance(node, faiss.IndexRefine):
            node = faiss.downcast_index(node.base_index)
        else:
            return None


def train(index: faiss.Index, x) -> None:
    """Train an untrained index on the first add's vectors; UserError when there are too few for it."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and len(x) < ivf.nlist:
        raise UserError(f"an IVF index with {ivf.nlist} lists needs at least {ivf.nlist} vectors to train "
                        f"(FAISS recommends {IVF_MIN_POINTS_PER_LIST * ivf.nlist}); the catalog has {len(x)}: "
                        f"choose fewer lists, or Flat")
    try:
        index.train(x)
    except RuntimeError as e:
        raise UserError(f"FAISS could not train the index on {len(x)} vectors: "
                        f"{str(e).strip().splitlines()[-1][:200]}") from e


class SearchParams:
    """Typed FAISS search parameters for an index chain, holding the Python objects their pointers refer to.

    Each FAISS index checks the type of the parameters it is given (IVF wants SearchParametersIVF, HNSW
    SearchParametersHNSW, ...), so they are built to match: an IDMap passes them on to its index (and translates
    the selector), a pre-transform passes them on unchanged, IVF with an HNSW coarse quantizer gets its efSearch
    in `quantizer_params`, a refine step gets its base index's in `base_index_params`."""

    def __init__(self, index: faiss.Index, nprobe: int, ef_search: int, sel: faiss.IDSelector | None) -> None:
        self._keep: list = [sel]
        self.params = self._build(faiss.downcast_index(index), nprobe, ef_search, sel)

    def _build(self, node: faiss.Index, nprobe: int, ef_search: int, sel: faiss.IDSelector | None):
        if isinstance(node, (faiss.IndexIDMap, faiss.IndexIDMap2, faiss.IndexPreTransform)):
            return self._build(faiss.downcast_index(node.index), nprobe, ef_search, sel)
        if isinstance(node, faiss.IndexRefine):
            params = faiss.IndexRefineSearchParameters()
            params.k_factor = max(node.k_factor, REFINE_K_FACTOR)
            # No selector below a refine step: under an IDMap2 only the top parameters get the translated one;
            # the catalog drops ineligible ids from the results itself (index/catalog.py `_search_ids`).
            base = self._build(faiss.downcast_index(node.base_index), nprobe, ef_search, None)
            self._keep.append(base)
            params.base_index_params = base
        elif isinstance(node, faiss.IndexIVF):
            params = faiss.SearchParametersIVF()
            params.nprobe = min(nprobe, node.nlist)
            quantizer = faiss.downcast_index(node.quantizer)
            if isinstance(quantizer, faiss.IndexHNSW):
                q = faiss.SearchParametersHNSW()
                q.efSearch = max(ef_search, nprobe)  # the quantizer must return nprobe lists
                self._keep.append(q)
                params.quantizer_params = q
        elif isinstance(node, faiss.IndexHNSW):
            params = faiss.SearchParametersHNSW()
            params.efSearch = ef_search
        else:
            params = faiss.SearchParameters()
        if sel is not None:
            params.sel = sel
        self._keep.append(params)
        return params
