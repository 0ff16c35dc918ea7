"""tests/conftest.py's rules for the run: a data-backed test that skips while ../shared/data exists fails, every
skip is listed in the summary, and Hypothesis runs derandomized unless MULTIGLANCE_FUZZ=1 asks for the sweep."""
from __future__ import annotations

import importlib
import os
import tomllib
from pathlib import Path

import pytest
from hypothesis import settings

import conftest

pytest_plugins = ["pytester"]

TESTS = Path(__file__).resolve().parent

INNER_TESTS = '''
import pytest

def test_needs_the_data():
    pytest.skip("needs ../shared/data (CIFAR-10)")

@pytest.mark.skipif(True, reason="files not found at SHARED/mnist")
def test_needs_a_file_by_path():
    pass

def test_needs_a_browser():
    pytest.skip("no chromium binary")
'''


MODULE_SKIP = '''
import pytest

pytest.skip("needs ../shared/data/mnist", allow_module_level=True)

def test_x():
    pass
'''


def run_inner(pytester: pytest.Pytester, shared: Path, module_skip: bool = False) -> pytest.RunResult:
    """The three tests above (and a module that skips at import) under the project's hooks, with `shared` standing
    for ../shared/data."""
    pytester.makeconftest(f'''
import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location("project_conftest", {str(TESTS / "conftest.py")!r})
project = importlib.util.module_from_spec(spec)
spec.loader.exec_module(project)
project.SHARED_DATA = Path({str(shared)!r})
pytest_runtest_makereport = project.pytest_runtest_makereport
pytest_make_collect_report = project.pytest_make_collect_report
''')
    pytester.makepyfile(test_inner=INNER_TESTS.replace("SHARED", str(shared)))
    if module_skip:
        pytester.makepyfile(test_module_skip=MODULE_SKIP)
    return pytester.runpytest_inprocess("-ra", "-p", "no:cacheprovider")


def test_data_backed_skips_fail_when_the_data_is_there(pytester: pytest.Pytester, tmp_path: Path) -> None:
    shared = tmp_path / "shared" / "data"
    shared.mkdir(parents=True)
    result = run_inner(pytester, shared)
    result.assert_outcomes(failed=1, errors=1, skipped=1)  # the skipif mark skips in setup: an error
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    out = result.stdout.str()
    assert f"skipped (needs ../shared/data (CIFAR-10)) although {shared} exists" in out
    assert f"skipped (files not found at {shared}/mnist) although {shared} exists" in out
    assert "SKIPPED [1] test_inner.py" in out and "no chromium binary" in out  # the other skip, listed


def test_a_module_skipped_for_data_fails_to_collect_when_the_data_is_there(pytester: pytest.Pytester,
                                                                          tmp_path: Path) -> None:
    shared = tmp_path / "shared" / "data"
    shared.mkdir(parents=True)
    result = run_inner(pytester, shared, module_skip=True)
    result.assert_outcomes(errors=1)
    assert result.ret == pytest.ExitCode.INTERRUPTED  # a module that fails to collect stops the run
    assert f"skipped (needs ../shared/data/mnist) although {shared} exists" in result.stdout.str()


def test_data_backed_skips_are_listed_when_the_data_is_absent(pytester: pytest.Pytester, tmp_path: Path) -> None:
    result = run_inner(pytester, tmp_path / "nowhere", module_skip=True)
    result.assert_outcomes(skipped=4)
    assert result.ret == pytest.ExitCode.OK
    out = result.stdout.str()
    assert "needs ../shared/data (CIFAR-10)" in out and "files not found at" in out  # -ra names each skip


def test_names_shared_data() -> None:
    shared = Path("/x/shared/data")
    assert conftest.names_shared_data("needs ../shared/data/mnist", shared)
    assert conftest.names_shared_data("MNIST files not found at /x/shared/data/mnist", shared)
    assert not conftest.names_shared_data("no shipped weights in docs/weights", shared)


def test_the_summary_lists_skips() -> None:
    options = tomllib.loads((TESTS.parent / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    flags = [a[2:] for a in options["addopts"].split() if a.startswith("-r")]
    assert flags and any(c in f for f in flags for c in "as")  # -ra (all but passes) or -rs lists every skip


def property_tests() -> dict[str, settings]:
    """Every Hypothesis test in tests/, by name, with the settings it runs under."""
    found = {}
    for path in sorted(TESTS.glob("test_*.py")):
        if "hypothesis" in path.read_text():
            module = importlib.import_module(path.stem)
            found |= {f"{path.stem}.{name}": fn._hypothesis_internal_use_settings for name, fn in vars(module).items()
                      if name.startswith("test_") and getattr(fn, "is_hypothesis_test", False)}
    return found


@pytest.mark.skipif(conftest.FUZZ, reason="MULTIGLANCE_FUZZ=1: the random sweep is on")
def test_property_tests_are_derandomized_by_default() -> None:
    assert os.environ.get("MULTIGLANCE_FUZZ", "") in ("", "0")
    active = settings()
    assert active.derandomize and active.database is None and active.deadline is None
    assert conftest.examples(60) == 60
    tests = property_tests()
    assert len(tests) >= 13 and "test_data_archive.test_damaged_zip_raises_only_data_error" in tests
    assert sorted(name for name, s in tests.items() if not s.derandomize or s.database is not None) == []
