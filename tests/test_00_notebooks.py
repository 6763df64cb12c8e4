"""Every notebook of the series runs top to bottom (test flags in settings.ini skipped), counted as one test each.

The executed notebooks, outputs included, are written to `_executed/` so the documentation site is built from this
very run (no second execution, no stale output). Named `test_00_…` so pytest runs it before the docs tests.
"""
import pytest

from tools.nbrun import ROOT, notebooks, run_notebook, NotebookError

EXECUTED = ROOT/'_executed'


@pytest.mark.parametrize('nb', notebooks(), ids=lambda p: p.name)
def test_notebook_runs(nb):
    try: run_notebook(nb, dest=EXECUTED/nb.relative_to(ROOT/'nbs'))
    except NotebookError as e: pytest.fail(str(e), pytrace=False)
