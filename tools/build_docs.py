"""Build the documentation website offline from the executed notebooks, and keep README.md and the sidebar in step.

Where Quarto is installed, `nbdev_docs` renders the site from `nbs/` (`nbs/_quarto.yml`, `nbs/nbdev.yml` and the
committed `nbs/sidebar.yml`). Without Quarto, this script renders the same nbdev-processed notebooks with Sphinx,
myst-nb and the furo theme, fully offline:

1. take the executed copies in `_executed/` (written by `tools/nbrun.py --dest _executed` or by the notebook tests;
   `--run-missing` runs any notebook whose copy is missing or older than its source), so no page shows stale output;
2. process them with nbdev's documentation processors (`FilterDefaults`: frontmatter, `show_doc` for every exported
   symbol, hidden cells removed, doc links) into `_sphinx/nbs/`, as `nbdev_docs` does into `_proc/` before Quarto renders;
3. turn them into Sphinx pages in `_sphinx/site/`: the frontmatter becomes the title, `show_doc` output becomes part of
   the page with an anchor per symbol (`core.html#set_seed`, as nbdev names them) and a source link to a generated
   page of the module's code with line anchors (plus the GitHub link), `#|` directives become myst-nb tags;
4. build the site into `_docs/` with MathJax served from the site (npm `mathjax@3.2.2`, fetched once), so no page
   loads anything from elsewhere; print the path of `_docs/index.html`;
5. regenerate `README.md` from the processed `nbs/index.ipynb` and `nbs/sidebar.yml` from the notebook list
   (grouped by the tens digit of the notebook number, STYLE.md).

    python tools/build_docs.py                 # build _docs/, write README.md and nbs/sidebar.yml
    python tools/build_docs.py --run-missing   # first run notebooks whose executed copy is missing or stale
    python tools/build_docs.py --no-repo-files # build _docs/ only (the tests do this, then compare)
    python tools/build_docs.py --check         # fail if README.md or nbs/sidebar.yml is not what a build writes
    python tools/build_docs.py --sidebar       # only rewrite nbs/sidebar.yml (tools/check_sync.py does this)
    python tools/build_docs.py --fetch-assets  # only make sure MathJax is at hand (used by `make setup`)

Run it with `IN_TEST` unset: nbdev's processors skip work when it is set.
"""
from __future__ import annotations

import argparse, html, json, os, re, shutil, subprocess, sys, tarfile, tempfile, time
from configparser import ConfigParser
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))

from tools.nbrun import notebooks, run_notebook  # noqa: E402

# Scratch lives in _sphinx/, not in nbdev's _proc/: Quarto (nbdev_docs) renders everything under _proc/.
NBS, EXECUTED, PROC, DOCS = ROOT/'nbs', ROOT/'_executed', ROOT/'_sphinx', ROOT/'_docs'
PROC_NBS, SITE_SRC, DOCTREES, HTML = PROC/'nbs', PROC/'site', PROC/'doctrees', PROC/'html'
README, SIDEBAR = ROOT/'README.md', NBS/'sidebar.yml'
README_FILES = ROOT/'README_files'  # images of README.md, if the index page ever shows one
MATHJAX_VERSION = '3.2.2'
# The sidebar groups the series by the tens digit of the notebook number (STYLE.md).
GROUPS = [(0, 9, 'Foundations'), (10, 19, 'Preprocessors'), (20, 29, 'Decoders and postprocessors'),
          (30, 39, 'Models'), (40, 49, 'End to end'), (50, 59, 'Performance'), (90, 94, 'API'), (95, 99, 'Appendix')]
OTHER_GROUP = 'More'


def settings() -> dict:
    cfg = ConfigParser(delimiters=['=']); cfg.read(ROOT/'settings.ini', encoding='utf-8')
    return dict(cfg['DEFAULT'])


# ---------------------------------------------------------------------------------------------------- the series
def page_name(rel: Path) -> str:
    "The page a notebook becomes, as nbdev names it: `00_core.ipynb` -> `core` (the numeric prefix dropped)."
    return rel.with_name(re.sub(r'^\d+[a-zA-Z0-9]*_', '', rel.name.lower())).with_suffix('').as_posix()


def group_of(rel: Path) -> str | None:
    "The sidebar section of a notebook: its number's tens group; None for the index page."
    if page_name(rel) == 'index': return None
    m = re.match(r'^(\d+)', rel.name)
    if not m: return OTHER_GROUP
    n = int(m.group(1))
    return next((name for lo, hi, name in GROUPS if lo <= n <= hi), OTHER_GROUP)


def series(paths: list[Path] | None = None) -> list[tuple[str | None, list[Path]]]:
    "The notebooks (paths relative to `nbs/`) in sidebar order: the index first, then each group in series order."
    rels = [p.relative_to(NBS) for p in (paths if paths is not None else notebooks())]
    order = [None] + [g for *_, g in GROUPS] + [OTHER_GROUP]
    out = []
    for g in order:
        members = sorted((r for r in rels if group_of(r) == g), key=lambda r: r.as_posix())
        if members: out.append((g, members))
    return out


def sidebar_yml(paths: list[Path] | None = None) -> str:
    "`nbs/sidebar.yml` for Quarto (`nbdev_docs`): the same grouping as the offline site."
    lines = ['# Generated by tools/build_docs.py from the notebook list (`make docs` rewrites it). Do not edit.',
             'website:', '  sidebar:', '    contents:']
    for g, members in series(paths):
        if g is None: lines += [f'      - {r.as_posix()}' for r in members]
        else:
            lines += [f'      - section: "{g}"', '        contents:']
            lines += [f'          - {r.as_posix()}' for r in members]
    return '\n'.join(lines) + '\n'


# ---------------------------------------------------------------------------------------------------- executed copies
def is_fresh(path: Path) -> bool:
    "Whether the executed copy of notebook `path` is from its current text: as new as it, or with the same cells."
    dest = EXECUTED/path.relative_to(NBS)
    if not dest.exists(): return False
    if dest.stat().st_mtime >= path.stat().st_mtime: return True
    # execnb writes a copy only when it changed, so a notebook touched but not edited leaves an older, valid copy
    def cells(p): return [(c['cell_type'], ''.join(c['source'])) for c in json.loads(p.read_text(encoding='utf-8'))['cells']]
    return cells(dest) == cells(path)


def ensure_executed(paths: list[Path], run_missing: bool):
    "Make sure every notebook has an executed copy in `_executed/` that is from its current text."
    for p in paths:
        if is_fresh(p): continue
        dest = EXECUTED/p.relative_to(NBS)
        if not run_missing:
            sys.exit(f'{dest.relative_to(ROOT)} is missing or older than {p.relative_to(ROOT)}: run the notebooks first '
                     '(`python tools/nbrun.py --dest _executed`, or `make docs`), or pass --run-missing.')
        secs = run_notebook(p, dest=dest)
        print(f'ran {p.name} in {secs:.1f}s', flush=True)


# ---------------------------------------------------------------------------------------------------- nbdev processing
def _use_this_checkout_for_lookups():
    "Let nbdev's symbol lookup (doc and source links) read this checkout's `_modidx.py`, installed or not."
    import nbdev.doclinks as dl
    lib = settings()['lib_name']
    real = dl.entry_points

    class _Dist: name = lib
    class _EntryPoint:
        name, dist = lib, _Dist()
        def load(self):
            ns = {}; exec((ROOT/lib/'_modidx.py').read_text(encoding='utf-8'), ns); return ns['d']

    def entry_points(**kw):
        eps = [e for e in real(**kw) if e.name != lib]
        return eps + ([_EntryPoint()] if kw.get('group') == 'nbdev' else [])
    if getattr(dl.entry_points, 'this_checkout', False): return
    entry_points.this_checkout = True
    dl.entry_points = entry_points
    dl._build_lookup_table.cache_clear()


def _process_one(src: str, dst: str) -> str:
    "Run nbdev's documentation processors on one executed notebook (here, or in a worker process)."
    os.chdir(ROOT)
    os.environ.pop('IN_TEST', None)
    _use_this_checkout_for_lookups()
    from execnb.nbio import read_nb, write_nb
    from nbdev.processors import FilterDefaults
    import warnings
    nb = read_nb(src)
    nb.path_ = str(NBS/Path(src).relative_to(EXECUTED))  # nbdev names the page after the notebook in nbs/
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # nbdev's style warnings are the notebook tests' business, not the build's
        FilterDefaults()(nb)
    nb.metadata.pop('widgets', None)
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    write_nb(nb, dst)
    return dst


def process(paths: list[Path], workers: int = 1) -> dict[Path, Path]:
    "Process the executed copies into `_sphinx/nbs/`; a copy newer than its input and the build inputs is reused."
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing as mp
    lib = settings()['lib_name']
    deps = [ROOT/'settings.ini', ROOT/lib/'_modidx.py', Path(__file__)] + sorted((ROOT/lib).rglob('*.py'))
    newest_dep = max(p.stat().st_mtime for p in deps if p.exists())
    out, todo = {}, []
    for p in paths:
        rel = p.relative_to(NBS)
        src, dst = EXECUTED/rel, PROC_NBS/rel
        out[rel] = dst
        if dst.exists() and dst.stat().st_mtime >= max(src.stat().st_mtime, newest_dep): continue
        todo.append((str(src), str(dst)))
    if workers <= 1:  # the default: the imports the notebooks need (torch, ...) are paid once, not once per worker
        for src, dst in todo: _process_one(src, dst)
    elif todo:
        from tools import build_docs as this  # workers import the worker function by its module name
        with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=mp.get_context('spawn')) as ex:
            list(ex.map(this._process_one, *zip(*todo)))
    return out


# ---------------------------------------------------------------------------------------------------- to Sphinx pages
_re_directive = re.compile(r'^\s*#\|\s*([\w-]+)\s*:?\s*(.*?)\s*$')


def split_directives(source: str) -> tuple[dict, str]:
    "Leading `#| key: value` lines as a dict, and the code without them."
    lines, d = source.splitlines(), {}
    while lines and _re_directive.match(lines[0]):
        k, v = _re_directive.match(lines.pop(0)).groups()
        d[k] = v.strip('"\'')
    return d, '\n'.join(lines)


def _text(x) -> str: return ''.join(x) if isinstance(x, list) else (x or '')


class Linker:
    "Rewrites the links nbdev writes (published doc URLs, GitHub source URLs, notebook names) for one target."
    def __init__(self, cfg: dict, pages: dict[str, str], depth: int = 0, readme: bool = False):
        self.doc_base = (cfg['doc_host'].rstrip('/') + '/' + cfg.get('doc_baseurl', '').strip('/')).rstrip('/') + '/'
        self.gh_blob = f"{cfg['git_url'].rstrip('/')}/blob/{cfg.get('branch', 'main')}/"
        self.pages, self.up, self.readme = pages, '../'*depth, readme  # pages: notebook rel path -> page name

    def source_page(self, py: str, line: str | None) -> str:
        mod = Path(py).with_suffix('').as_posix().replace('/', '.')
        return f'{self.up}source/{mod}.html' + (f'#L-{line}' if line else '')

    def _doc_link(self, m):
        text, target = m.group(1), m.group(2)
        if self.readme: return m.group(0)
        inner = re.sub(r'`([^`]+)`', lambda c: f'<code class="docutils literal notranslate"><span class="pre">{html.escape(c.group(1))}</span></code>', text)
        return f'<a class="reference internal" href="{self.up}{target}">{inner}</a>'

    def _nb_link(self, m):
        text, target, anchor = m.group(1), m.group(2), m.group(3) or ''
        if target not in self.pages: return m.group(0)
        if self.readme: return f'[{text}](nbs/{target}{anchor})'
        return f'[{text}]({self.up}{self.pages[target]}.ipynb{anchor})'

    def markdown(self, s: str) -> str:
        # A link's text holds no brackets: otherwise the '[' of an interval such as $[-1, 1)$ would open a link that
        # runs on to the next real one.
        s = re.sub(r'\[([^\[\]]*)\]\(' + re.escape(self.doc_base) + r'([^)\s]+)\)', self._doc_link, s)
        s = re.sub(r'\[([^\[\]]*)\]\((?!\w+:)([^)\s#]+\.ipynb)(#[^)\s]*)?\)', self._nb_link, s)
        return s

    def show_doc(self, md: str) -> str:
        "A `show_doc` output as page markdown: an nbdev-style anchor, the heading, source links beside it."
        link = re.search(r'\[source\]\((\S+?)\)(\{[^}]*\})?\s*', md)
        src_html = ''
        if link:
            md = md.replace(link.group(0), '')
            url = link.group(1)
            m = re.match(re.escape(self.gh_blob) + r'(\S+?\.py)(?:#L(\d+))?$', url)
            local = self.source_page(m.group(1), m.group(2)) if m else None
            parts = ([f'<a class="nbdev-source" href="{local}">source</a>'] if local else []) + \
                    [f'<a class="nbdev-github" href="{html.escape(url)}" target="_blank" rel="noopener">GitHub</a>']
            src_html = ' · '.join(parts)

        def heading(h):
            level, name = h.group(1), h.group(2)
            anchor = name.lower()  # nbdev's doc links point at `page.html#name` (lower case)
            # Sphinx gives the heading the id docutils makes of it (`set_seed` -> `set-seed`); where that differs,
            # an empty element before the heading carries nbdev's id, so nbdev's links (and Quarto's URLs) work here
            same = re.sub(r'[^a-z0-9]+', '-', anchor).strip('-') == anchor
            pre = '' if same else f'<span id="{html.escape(anchor)}" class="nbdev-anchor"></span>\n\n'
            links = f'<span class="nbdev-source-links" data-sym="{html.escape(anchor)}">{src_html}</span>'
            return f'{pre}{level} {name}\n\n{links}\n'
        md = re.sub(r'^(#+)\s+(\S+)\s*$', heading, md, count=1, flags=re.MULTILINE)
        md = re.sub(r'^---\s*\n', '', md, count=1)  # nbdev's rule above each entry: the heading separates them here
        md = re.sub(r'```(\w*)\n(.*?)```', lambda f: f'```{f.group(1)}\n' + f.group(2).strip('\n') + '\n```', md,
                    flags=re.DOTALL)  # without the blank lines nbdev leaves around the signature
        return self.markdown(md)


def to_page(nb: dict, rel: Path, cfg: dict, pages: dict[str, str], readme: bool = False) -> dict:
    "A processed notebook as a myst-nb page (or, with `readme`, as the notebook README.md is converted from)."
    link = Linker(cfg, pages, depth=len(rel.parts) - 1, readme=readme)
    cells = []
    def md(src): cells.append({'cell_type': 'markdown', 'metadata': {}, 'source': src})
    for c in nb['cells']:
        src = _text(c.get('source'))
        if c['cell_type'] == 'raw':
            m = re.match(r'^\s*---\s*\n(.*?)\n---\s*$', src, flags=re.DOTALL)
            if not m: continue
            fm = yaml.safe_load(m.group(1)) or {}
            title = str(fm.get('title', page_name(rel)))
            desc = fm.get('description')
            md(f'# {title}' + (f'\n\n{{.nbdev-description}}\n{link.markdown(str(desc))}' if desc and not readme else
                                f'\n\n> {desc}' if desc else ''))
        elif c['cell_type'] == 'markdown':
            if 'WARNING: THIS FILE WAS AUTOGENERATED' in src: continue
            md(link.markdown(src))
        elif c['cell_type'] == 'code':
            d, code = split_directives(src)
            outputs = c.get('outputs', [])
            if d.get('output') == 'asis':  # show_doc and friends: their markdown output is part of the page
                if d.get('echo', 'true') != 'false' and code.strip():
                    cells.append({'cell_type': 'code', 'metadata': {}, 'source': code, 'outputs': [], 'execution_count': None})
                for o in outputs:
                    text = _text(o.get('data', {}).get('text/markdown'))
                    if text: md(text if readme else link.show_doc(text) if re.search(r'^#+\s', text, re.M) else link.markdown(text))
                continue
            tags = []
            if d.get('echo') == 'false': tags.append('remove-input')
            if d.get('output') == 'false': tags.append('remove-output')
            if d.get('include') == 'false': continue
            new = []
            for o in outputs:
                o = json.loads(json.dumps(o))
                data = o.get('data', {})
                if 'text/markdown' in data:
                    data['text/markdown'] = link.markdown(_text(data['text/markdown']))
                new.append(o)
            meta = {'tags': tags} if tags else {}
            if not code.strip() and not new: continue
            cells.append({'cell_type': 'code', 'metadata': meta, 'source': code, 'outputs': new,
                          'execution_count': c.get('execution_count')})
    meta = {k: v for k, v in nb.get('metadata', {}).items() if k in ('kernelspec', 'language_info')}
    meta.setdefault('kernelspec', {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'})
    meta.setdefault('language_info', {'name': 'python'})
    for i, c in enumerate(cells): c['id'] = f'{page_name(rel).replace("/", "-")}-{i}'
    return {'cells': cells, 'metadata': meta, 'nbformat': 4, 'nbformat_minor': 5}


def toctree_cells(paths: list[Path]) -> list[dict]:
    "Hidden toctrees on the index page, one per sidebar section: furo draws the sidebar from them."
    out = []
    for g, members in series(paths):
        if g is None: continue
        entries = '\n'.join(page_name(r) for r in members)
        out.append({'cell_type': 'markdown', 'metadata': {},
                    'source': f'```{{toctree}}\n:hidden:\n:titlesonly:\n:caption: {g}\n\n{entries}\n```'})
    return out


def source_pages(cfg: dict) -> dict[str, str]:
    "A page per library module: its code with an anchor per line (`#L-42`), the target of the `source` links."
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer
    lib = cfg['lib_name']
    pages = {}
    for py in sorted((ROOT/lib).rglob('*.py')):
        rel = py.relative_to(ROOT)
        if '__pycache__' in rel.parts or py.name == '_modidx.py': continue
        mod = rel.with_suffix('').as_posix().replace('/', '.')
        fmt = HtmlFormatter(linenos='inline', lineanchors='L', linespans='L', anchorlinenos=True, wrapcode=True,
                            cssclass='highlight nbdev-source-code')
        code = highlight(py.read_text(encoding='utf-8'), PythonLexer(), fmt)
        gh = f"{cfg['git_url'].rstrip('/')}/blob/{cfg.get('branch', 'main')}/{rel.as_posix()}"
        pages[mod] = ('---\norphan: true\n---\n\n'
                      f'# Source of `{mod}`\n\n'
                      f'Generated from the notebooks by nbdev; [this file on GitHub]({gh}).\n\n'
                      f'```{{raw}} html\n{code}\n```\n')
    return pages


# ---------------------------------------------------------------------------------------------------- MathJax
def mathjax_dir() -> Path:
    "Where MathJax's es5 bundle lies: `$MATHJAX_DIR`, else beside the Python environment that runs the build."
    env = os.environ.get('MATHJAX_DIR')
    return Path(env) if env else Path(sys.prefix)/'share'/'perceiver_nb_docs'/f'mathjax-{MATHJAX_VERSION}'


def ensure_mathjax() -> Path:
    "Fetch npm `mathjax@3.2.2` once (with npm) and keep the parts the site serves: its es5 bundle, no speech maps."
    d = mathjax_dir()
    if (d/'tex-mml-chtml.js').exists(): return d
    npm = shutil.which('npm')
    if not npm: sys.exit('The docs need MathJax served from the site: install npm (Debian: apt-get install -y npm) or '
                         f'unpack npm mathjax@{MATHJAX_VERSION} and point MATHJAX_DIR at its es5/ folder.')
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([npm, 'pack', f'mathjax@{MATHJAX_VERSION}', '--silent'], cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL)
        tgz = next(Path(tmp).glob('mathjax-*.tgz'))
        with tarfile.open(tgz) as tf: tf.extractall(tmp, filter='data')
        es5 = Path(tmp)/'package'/'es5'
        keep = Path(tmp)/'keep'; keep.mkdir()
        shutil.copy2(es5/'tex-mml-chtml.js', keep)
        for sub in ('input', 'output', 'a11y', 'ui', 'adaptors'): shutil.copytree(es5/sub, keep/sub)
        shutil.copy2(Path(tmp)/'package'/'LICENSE', keep/'LICENSE')
        d.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(d, ignore_errors=True)
        shutil.move(str(keep), d)
    return d


# ---------------------------------------------------------------------------------------------------- Sphinx
CSS = """
.nbdev-description { font-size: 1.15em; color: var(--color-foreground-secondary); }
.nbdev-source-links { display: block; text-align: right; font-size: smaller; margin-top: -1em; }
.nbdev-source-code span[id^="L-"]:target { background: var(--color-highlight-on-target); }
.nbdev-source-code .linenos { user-select: none; color: var(--color-foreground-muted); margin-right: .8em; }
.cell_output img { max-width: 100%; height: auto; }
"""

CONF = """# Generated by tools/build_docs.py: the offline (Quarto-free) build of the nbdev docs.
project = {title!r}
author = {author!r}
copyright = {copyright!r}
html_title = {title!r}
extensions = ['myst_nb']
source_suffix = {{'.ipynb': 'myst-nb', '.md': 'myst-nb'}}
exclude_patterns = ['_build', '**.ipynb_checkpoints']
nb_execution_mode = 'off'           # the pages show the outputs of the run in _executed/
nb_render_markdown_format = 'myst'  # markdown outputs (tables with math) render like markdown cells
nb_ipywidgets_js = {{}}             # no widget scripts from a CDN
nb_merge_streams = True
myst_enable_extensions = ['dollarmath', 'amsmath', 'attrs_block', 'attrs_inline', 'colon_fence']
myst_heading_anchors = 3
suppress_warnings = ['myst.header', 'misc.highlighting_failure']
html_theme = 'furo'
html_static_path = ['_static']
html_css_files = ['nbdev.css']
mathjax_path = 'mathjax/tex-mml-chtml.js'  # served from the site, not a CDN
html_show_sourcelink = False
html_copy_source = False
html_last_updated_fmt = None
html_theme_options = {{
    'footer_icons': [{{'name': 'GitHub', 'url': {git_url!r}, 'class': '',
        'html': '<svg stroke="currentColor" fill="currentColor" stroke-width="0" viewBox="0 0 16 16"><path fill-rule="evenodd" d="M8 0C3.58 0 0 3.58 0 8c0 3.54 2.29 6.53 5.47 7.59.4.07.55-.17.55-.38 0-.19-.01-.82-.01-1.49-2.01.37-2.53-.49-2.69-.94-.09-.23-.48-.94-.82-1.13-.28-.15-.68-.52-.01-.53.63-.01 1.08.58 1.23.82.72 1.21 1.87.87 2.33.66.07-.52.28-.87.51-1.07-1.78-.2-3.64-.89-3.64-3.95 0-.87.31-1.59.82-2.15-.08-.2-.36-1.02.08-2.12 0 0 .67-.21 2.2.82.64-.18 1.32-.27 2-.27.68 0 1.36.09 2 .27 1.53-1.04 2.2-.82 2.2-.82.44 1.1.16 1.92.08 2.12.51.56.82 1.27.82 2.15 0 3.07-1.87 3.75-3.65 3.95.29.25.54.73.54 1.48 0 1.07-.01 1.93-.01 2.2 0 .21.15.46.55.38A8.013 8.013 0 0 0 16 8c0-4.42-3.58-8-8-8z"></path></svg>'}}],
}}
"""


def _write_if_changed(path: Path, text: str):
    "Write only on change, so Sphinx's incremental build rebuilds only what changed."
    if path.exists() and path.read_text(encoding='utf-8') == text: return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding='utf-8')


def write_site_source(paths: list[Path], procd: dict[Path, Path], cfg: dict):
    "Fill `_sphinx/site/` with conf.py, static files, one page per notebook and one per module source."
    pages = {r.as_posix(): page_name(r) for r in procd}
    wanted = set()
    for rel, proc in procd.items():
        page = to_page(json.loads(proc.read_text(encoding='utf-8')), rel, cfg, pages)
        if page_name(rel) == 'index': page['cells'] += toctree_cells(paths)
        dst = SITE_SRC/(page_name(rel) + '.ipynb')
        _write_if_changed(dst, json.dumps(page, indent=1, ensure_ascii=False) + '\n')
        wanted.add(dst)
    for mod, text in source_pages(cfg).items():
        dst = SITE_SRC/'source'/f'{mod}.md'
        _write_if_changed(dst, text); wanted.add(dst)
    for old in list(SITE_SRC.rglob('*.ipynb')) + list(SITE_SRC.rglob('*.md')):  # pages of removed notebooks
        if old not in wanted and '_static' not in old.parts: old.unlink()
    _write_if_changed(SITE_SRC/'conf.py', CONF.format(title=cfg.get('title', cfg['lib_name']), author=cfg['author'],
                                                       copyright=cfg['copyright'], git_url=cfg['git_url']))
    _write_if_changed(SITE_SRC/'_static'/'nbdev.css', CSS.lstrip())
    mj, dst = ensure_mathjax(), SITE_SRC/'_static'/'mathjax'
    if not (dst/'tex-mml-chtml.js').exists():
        shutil.rmtree(dst, ignore_errors=True); shutil.copytree(mj, dst)


def build_sphinx() -> Path:
    from sphinx.cmd.build import build_main
    # Sphinx builds incrementally into _sphinx/html (myst-nb keeps output images beside it, in _sphinx/jupyter_execute);
    # _docs/ is then a fresh copy, so a page of a removed notebook does not linger there.
    args = ['-b', 'html', '-q', '-d', str(DOCTREES), str(SITE_SRC), str(HTML)]
    if build_main(args) != 0: sys.exit('sphinx-build failed')
    shutil.rmtree(DOCS, ignore_errors=True)
    shutil.copytree(HTML, DOCS, ignore=shutil.ignore_patterns('.buildinfo', '.doctrees'))
    (DOCS/'.nojekyll').touch()
    return DOCS/'index.html'


# ---------------------------------------------------------------------------------------------------- README
def readme_text(procd: dict[Path, Path], cfg: dict) -> tuple[str, dict[str, bytes]]:
    "README.md from the processed index notebook (nbconvert to markdown), with links that work on GitHub."
    from nbconvert import MarkdownExporter
    import nbformat
    idx = next(r for r in procd if page_name(r) == 'index')
    pages = {r.as_posix(): page_name(r) for r in procd}
    page = to_page(json.loads(procd[idx].read_text(encoding='utf-8')), idx, cfg, pages, readme=True)
    for c in page['cells']:
        if c['cell_type'] == 'code': c['outputs'] = [o for o in c['outputs'] if o.get('output_type') != 'stream' or o.get('name') != 'stderr']
    exp = MarkdownExporter()
    body, res = exp.from_notebook_node(nbformat.reads(json.dumps(page), as_version=4), resources={'output_files_dir': README_FILES.name, 'unique_key': 'README'})
    head = f'<!-- Generated from nbs/{idx.as_posix()} by tools/build_docs.py (`make docs`). Edit the notebook, not this file. -->\n\n'
    body = re.sub(r'\n{3,}', '\n\n', body).strip() + '\n'
    return head + body, dict(res.get('outputs', {}))


def write_readme(text: str, files: dict[str, bytes]):
    README.write_text(text, encoding='utf-8')
    shutil.rmtree(README_FILES, ignore_errors=True)
    for name, data in files.items():
        (ROOT/name).parent.mkdir(parents=True, exist_ok=True); (ROOT/name).write_bytes(data)


def check(procd: dict[Path, Path], paths: list[Path], cfg: dict) -> list[str]:
    "What is stale among the generated files that are committed: README.md (and its images) and nbs/sidebar.yml."
    stale = []
    text, files = readme_text(procd, cfg)
    if not README.exists() or README.read_text(encoding='utf-8') != text: stale.append('README.md')
    have = {p.relative_to(ROOT).as_posix(): p.read_bytes() for p in README_FILES.rglob('*') if p.is_file()} if README_FILES.exists() else {}
    if have != files: stale.append(f'{README_FILES.name}/')
    if not SIDEBAR.exists() or SIDEBAR.read_text(encoding='utf-8') != sidebar_yml(paths): stale.append('nbs/sidebar.yml')
    return stale


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--run-missing', action='store_true', help='run notebooks whose executed copy is missing or stale')
    ap.add_argument('--no-repo-files', action='store_true', help='do not write README.md and nbs/sidebar.yml')
    ap.add_argument('--check', action='store_true', help='only check README.md and nbs/sidebar.yml are up to date')
    ap.add_argument('--fetch-assets', action='store_true', help='only make sure MathJax is at hand')
    ap.add_argument('--sidebar', action='store_true', help='only rewrite nbs/sidebar.yml from the notebook list')
    ap.add_argument('--workers', type=int, default=1, help='processes for the nbdev processing step (1: in this one)')
    args = ap.parse_args()
    if args.fetch_assets: print(ensure_mathjax()); return
    if args.sidebar: _write_if_changed(SIDEBAR, sidebar_yml()); return
    os.environ.pop('IN_TEST', None)
    start, cfg, paths = time.time(), settings(), notebooks()
    ensure_executed(paths, args.run_missing)
    procd = process(paths, args.workers)
    if args.check:
        stale = check(procd, paths, cfg)
        if stale: sys.exit(f'Out of date: {", ".join(stale)}. Run `make docs` (or `python tools/build_docs.py`) '
                           'and commit the result.')
        print('README.md and nbs/sidebar.yml are up to date'); return
    if not args.no_repo_files:
        _write_if_changed(SIDEBAR, sidebar_yml(paths))
        write_readme(*readme_text(procd, cfg))
    write_site_source(paths, procd, cfg)
    index = build_sphinx()
    print(f'docs built in {time.time() - start:.0f}s; open {index}', file=sys.stderr, flush=True)
    print(index, flush=True)


if __name__ == '__main__':
    main()
    # Every notebook processed left an IPython shell whose exit hook runs a full garbage collection (about a second
    # each); the build is done and written, so leave without them.
    sys.stdout.flush(); sys.stderr.flush()
    os._exit(0)
