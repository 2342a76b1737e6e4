"""Fixtures shared by every test package, and the guard that keeps the fast test loop fast.

The guard: a test not marked `slow` fails when it takes longer than FAST_TEST_LIMIT_S, counting its call phase
plus the setup of the function-, class- and module-scoped fixtures built for it. A module-scoped fixture is charged
to the first test that uses it, so an expensive fixture shows up just like an expensive test. Session- and
package-scoped fixtures are not counted: they are shared by the whole run and whichever test comes first under a
given selection (-k, a single file) would carry them. Teardown is not counted. `make test-fast` runs
`-m "not slow"`; `make test` runs everything, and the guard holds there too.

RTDGAN_TEST_LIMIT_S replaces the limit (seconds; `inf` turns the guard off). The limit is wall time, and a machine
shared with other work can stretch a 2-second test past 5 seconds: relax it there rather than marking fast tests slow.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Generator
from pathlib import Path

import pytest

from tests.helpers import make_lookbook

# pytester: tests/test_speed_guard.py runs the guard inside a throwaway pytest session; tests.milvus_server: the
# run's one real Milvus server (the `milvus_server` fixture, for slow tests only)
pytest_plugins = ["pytester", "tests.milvus_server"]

FAST_TEST_LIMIT_S = 5.0  # a test not marked slow must finish (call + its own fixtures' setup) within this
LIMIT_ENV = "RTDGAN_TEST_LIMIT_S"
COUNTED_SCOPES = frozenset({"function", "class", "module"})

_fixture_seconds = pytest.StashKey[float]()  # per item: setup time of its counted fixtures
_in_setup = pytest.StashKey["pytest.Item | None"]()  # per config: the item whose setup phase is running
_nesting = pytest.StashKey[list]()  # per config: seconds spent in fixtures set up inside the one being timed
_limit_s = pytest.StashKey[float]()  # per config: the limit, read once (a test may change the environment)


def fast_test_limit_s() -> float:
    """FAST_TEST_LIMIT_S, or RTDGAN_TEST_LIMIT_S when set (a positive number of seconds, or inf)."""
    raw = os.environ.get(LIMIT_ENV, "").strip()
    if not raw:
        return FAST_TEST_LIMIT_S
    try:
        limit = float(raw)
    except ValueError:
        limit = math.nan
    if not limit > 0:
        raise pytest.UsageError(f"{LIMIT_ENV}={raw!r}: give a positive number of seconds, or inf")
    return limit


def too_slow(seconds: float, marked_slow: bool, limit_s: float) -> str | None:
    """Why a test that took `seconds` fails the fast-loop guard, or None when it passes."""
    if marked_slow or seconds <= limit_s:
        return None
    return (f"took {seconds:.1f} s, over the {limit_s:g} s allowed a test not marked slow (call plus its function-, "
            f"class- and module-scoped fixtures' setup). Mark it `@pytest.mark.slow` (or the module "
            f"`pytestmark = pytest.mark.slow`) so `make test-fast` skips it, or make it faster (a smaller tiny "
            f"config). On an overloaded machine, {LIMIT_ENV}=<seconds> relaxes the limit.")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_in_setup] = None
    config.stash[_nesting] = []
    config.stash[_limit_s] = fast_test_limit_s()  # a bad RTDGAN_TEST_LIMIT_S stops the run before any test


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    item.stash[_fixture_seconds] = 0.0
    item.config.stash[_in_setup] = item
    try:
        return (yield)
    finally:
        item.config.stash[_in_setup] = None


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef, request: pytest.FixtureRequest) -> Generator:
    """Time each fixture built during a test's setup phase, without the fixtures it sets up inside itself."""
    nesting = request.config.stash[_nesting]
    nesting.append(0.0)
    start = time.perf_counter()
    try:
        return (yield)
    finally:
        elapsed = time.perf_counter() - start
        own = elapsed - nesting.pop()
        if nesting:
            nesting[-1] += elapsed
        item = request.config.stash[_in_setup]
        if item is not None and fixturedef.scope in COUNTED_SCOPES:
            item.stash[_fixture_seconds] = item.stash.get(_fixture_seconds, 0.0) + own


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Generator:
    report = yield
    if report.when == "call" and report.passed:
        seconds = call.duration + item.stash.get(_fixture_seconds, 0.0)
        why = too_slow(seconds, item.get_closest_marker("slow") is not None, item.config.stash[_limit_s])
        if why is not None:
            report.outcome = "failed"
            report.longrepr = f"{item.nodeid} {why}"
    return report


@pytest.fixture
def lookbook(tmp_path: Path) -> Path:
    """A 10-product, 3-photos-each LookBook folder of random pictures at 32 px."""
    return make_lookbook(tmp_path / "lookbook")
