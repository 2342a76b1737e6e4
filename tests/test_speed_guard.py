"""The fast-loop guard in tests/conftest.py: a test not marked slow that runs past the limit fails, with a message
naming the cure; a slow-marked one, or one within the limit, passes; a module-scoped fixture's setup counts."""

from __future__ import annotations

import pytest

from tests.conftest import FAST_TEST_LIMIT_S, LIMIT_ENV, fast_test_limit_s, too_slow

GUARD = "from tests.conftest import pytest_configure, pytest_fixture_setup, pytest_runtest_makereport, " \
        "pytest_runtest_setup\n"


def test_the_decision() -> None:
    assert too_slow(FAST_TEST_LIMIT_S + 0.1, marked_slow=False, limit_s=FAST_TEST_LIMIT_S) is not None
    assert too_slow(FAST_TEST_LIMIT_S - 0.1, marked_slow=False, limit_s=FAST_TEST_LIMIT_S) is None
    assert too_slow(60.0, marked_slow=True, limit_s=FAST_TEST_LIMIT_S) is None
    why = too_slow(7.25, marked_slow=False, limit_s=5.0)
    assert "7.2 s" in why and "5 s" in why and "pytest.mark.slow" in why and LIMIT_ENV in why


def test_the_limit_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LIMIT_ENV, raising=False)
    assert fast_test_limit_s() == FAST_TEST_LIMIT_S
    monkeypatch.setenv(LIMIT_ENV, "12.5")
    assert fast_test_limit_s() == 12.5
    monkeypatch.setenv(LIMIT_ENV, "inf")
    assert too_slow(1e9, marked_slow=False, limit_s=fast_test_limit_s()) is None
    for bad in ("fast", "0", "-1", "nan"):
        monkeypatch.setenv(LIMIT_ENV, bad)
        with pytest.raises(pytest.UsageError, match=LIMIT_ENV):
            fast_test_limit_s()


def test_the_guard_in_a_pytest_run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """0.2 s against a 0.1 s limit: the unmarked test, and the first user of a slow module fixture, fail."""
    monkeypatch.setenv(LIMIT_ENV, "0.1")
    pytester.makeconftest(GUARD)
    pytester.makepyfile(test_timed="""
        import time
        import pytest

        @pytest.fixture(scope="module")
        def expensive():
            time.sleep(0.2)

        def test_quick():
            pass

        def test_sleeps():
            time.sleep(0.2)

        @pytest.mark.slow
        def test_sleeps_marked_slow():
            time.sleep(0.2)

        def test_first_user_of_the_expensive_fixture(expensive):
            pass

        def test_second_user_of_the_expensive_fixture(expensive):
            pass

        def test_fails_on_its_own():
            time.sleep(0.2)
            assert False, "its own failure"
    """)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-W", "ignore::pytest.PytestUnknownMarkWarning")
    result.assert_outcomes(passed=3, failed=3)
    failed = {r.nodeid.split("::")[-1] for r in result.reprec.getreports("pytest_runtest_logreport") if r.failed}
    assert failed == {"test_sleeps", "test_first_user_of_the_expensive_fixture", "test_fails_on_its_own"}
    result.stdout.fnmatch_lines(["*test_sleeps took * s, over the 0.1 s allowed a test not marked slow*"])
    result.stdout.fnmatch_lines(["*its own failure*"])  # a real failure keeps its own message
