"""House-style checks that keep the notebooks readable as documentation (shared/STYLE.md)."""
import json, re

import pytest

from tools.nbrun import ROOT, notebooks

NBS = notebooks()


def cells(nb_path):
    return json.loads(nb_path.read_text(encoding='utf-8'))['cells']


@pytest.mark.parametrize('nb', NBS, ids=lambda p: p.name)
def test_title_cell(nb):
    first = ''.join(cells(nb)[0]['source']).splitlines()
    assert cells(nb)[0]['cell_type'] == 'markdown' and first[0].startswith('# ') and first[1].startswith('> '), \
        f'{nb.name}: the first cell must be "# Title" then "> one-line summary"'


@pytest.mark.parametrize('nb', NBS, ids=lambda p: p.name)
def test_markdown_is_not_commented_code(nb):
    # A markdown cell written jupytext-style ('# text' on every line) renders as a stack of headings.
    bad = [i for i, c in enumerate(cells(nb)) if c['cell_type'] == 'markdown'
           and len(lines := ''.join(c['source']).splitlines()) > 1 and all(l == '#' or l.startswith('# ') for l in lines)]
    assert not bad, f'{nb.name}: markdown cells {bad} have every line commented with "# "'


@pytest.mark.parametrize('nb', [p for p in NBS if p.name != 'index.ipynb'], ids=lambda p: p.name)
def test_exports_one_module_and_ends_with_export(nb):
    code = [''.join(c['source']) for c in cells(nb) if c['cell_type'] == 'code']
    exps = [m for src in code for m in re.findall(r'^#\|\s*default_exp\s+(\S+)', src, re.M)]
    assert len(exps) <= 1, f'{nb.name}: more than one default_exp: {exps}'
    if exps: assert 'nbdev_export()' in code[-1] and code[-1].startswith('#| hide'), f'{nb.name}: last cell must be the hidden nbdev_export()'


def test_one_notebook_per_module():
    mods = {}
    for nb in NBS:
        for c in cells(nb):
            for m in re.findall(r'^#\|\s*default_exp\s+(\S+)', ''.join(c['source']), re.M):
                assert m not in mods, f'{nb.name} and {mods[m]} both export {m}: the later export would replace the earlier'
                mods[m] = nb.name


@pytest.mark.parametrize('nb', NBS, ids=lambda p: p.name)
def test_no_todo_and_no_print_as_last_line(nb):
    for i, c in enumerate(cells(nb)):
        src = ''.join(c['source'])
        assert not re.search(r'\b(TODO|FIXME)\b', src), f'{nb.name} cell {i}: TODO/FIXME belongs in an issue'
        if c['cell_type'] == 'code' and src.strip():
            assert not src.strip().splitlines()[-1].startswith('print('), f'{nb.name} cell {i}: ends with print(); show the value or assert'


@pytest.mark.parametrize('nb', NBS, ids=lambda p: p.name)
def test_exported_code_is_shown(nb):
    # `#| export` hides the code on the website (only its show_doc entry remains); a literate series shows it: `#| exports`.
    hidden = [i for i, c in enumerate(cells(nb)) if c['cell_type'] == 'code'
              and re.search(r'^#\|\s*export\s*$', ''.join(c['source']), re.M)]
    assert not hidden, f'{nb.name}: cells {hidden} use `#| export`; use `#| exports` so the page shows the implementation'


@pytest.mark.parametrize('nb', NBS, ids=lambda p: p.name)
def test_no_exported_cell_over_60_lines(nb):
    # A literate page shows its code in pieces, each introduced and checked: a 100-line cell is a file dump, not a page.
    # Split a long class over cells with `perceiver_nb.core.patch_to`.
    long = [(i, n) for i, c in enumerate(cells(nb)) if c['cell_type'] == 'code'
            and re.search(r'^#\|\s*exports?\s*$', src := ''.join(c['source']), re.M) and (n := len(src.splitlines())) > 60]
    assert not long, f'{nb.name}: exported cells (index, lines) {long} are over 60 lines; split them'


@pytest.mark.parametrize('nb', NBS, ids=lambda p: p.name)
def test_at_most_three_refusals_per_page(nb):
    # A page shows one or two illustrative refusals; the full error contract lives in tests/ (one place to update a message).
    n = sum(''.join(c['source']).count('test_fail(') for c in cells(nb) if c['cell_type'] == 'code')
    assert n <= 3, f'{nb.name}: {n} test_fail checks; keep at most 3 on the page and move the rest to tests/ (test_error_contract.py)'


def test_appendix_names_tests_that_exist():
    # Each row of the differences appendix names the test that proves it; a renamed or deleted test must not leave a
    # dangling reference (a `file::name` test id: the file exists and defines the function).
    import ast
    text = '\n'.join(''.join(c['source']) for c in cells(ROOT/'nbs'/'95_differences.ipynb') if c['cell_type'] == 'markdown')
    ids = set(re.findall(r'`(tests/[\w/]+\.py)::(\w+)`', text))
    assert len(ids) >= 30, f'only {len(ids)} test ids found in the appendix'
    missing = []
    for path, name in sorted(ids):
        f = ROOT/path
        defs = {n.name for n in ast.walk(ast.parse(f.read_text(encoding='utf-8'))) if isinstance(n, ast.FunctionDef)} if f.exists() else set()
        if name not in defs: missing.append(f'{path}::{name}')
    assert not missing, f'the appendix names tests that do not exist: {missing}'
