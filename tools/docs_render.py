"""The offline renderer of the documentation website: executed notebooks -> nbdev processing -> Sphinx -> `_docs/`.

Where Quarto is installed, `nbdev_docs` renders the site from `nbs/` (`nbs/_quarto.yml`, `nbs/nbdev.yml` and the
committed `nbs/sidebar.yml`). Without Quarto, this module renders the same nbdev-processed notebooks with Sphinx,
myst-nb and the furo theme, fully offline:

1. take the executed copies in `_executed/` (written by `tools/nbrun.py --dest _executed` or by the notebook tests;
   `--run-missing` runs any notebook whose copy is missing or older than its source), so no page shows stale output;
2. process them with nbdev's documentation processors (`FilterDefaults`: frontmatter, `show_doc` for every exported
   symbol, hidden cells removed, doc links) into `_sphinx/nbs/`, as `nbdev_docs` does into `_proc/` before Quarto renders;
3. turn them into Sphinx pages in `_sphinx/site/`: the frontmatter becomes the title, `show_doc` output becomes part of
   the page with an anchor per symbol (`core.html#set_seed`, as nbdev names them) and a source link to a generated
   page of the module's code with line anchors (plus the GitHub link), `#|` directives become myst-nb tags;
4. build the site into `_docs/` with MathJax served from the site (npm `mathjax@3.2.2`, fetched once), so no page
   loads anything from elsewhere, and a content column wide enough for a 120-character code line at a 1280-pixel
   window (longer lines wrap instead of scrolling sideways).

The sidebar order and sections come from `tools/docs_nav.py`; `tools/build_docs.py` is the command line.
"""
from __future__ import annotations

import html, json, os, re, shutil, subprocess, sys, tarfile, tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))

from tools.nbrun import run_notebook  # noqa: E402
from tools.docs_nav import NBS, page_name, series, settings, write_if_changed  # noqa: E402

# Scratch lives in _sphinx/, not in nbdev's _proc/: Quarto (nbdev_docs) renders everything under _proc/.
EXECUTED, PROC, DOCS = ROOT/'_executed', ROOT/'_sphinx', ROOT/'_docs'
PROC_NBS, SITE_SRC, DOCTREES, HTML = PROC/'nbs', PROC/'site', PROC/'doctrees', PROC/'html'
MATHJAX_VERSION = '3.2.2'
BUILD_CODE = [ROOT/'tools'/'build_docs.py', ROOT/'tools'/'docs_nav.py', ROOT/'tools'/'docs_render.py']

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
    deps = [ROOT/'settings.ini', ROOT/lib/'_modidx.py', *BUILD_CODE] + sorted((ROOT/lib).rglob('*.py'))
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
        from tools import docs_render as this  # workers import the worker function by its module name
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
    def __init__(self, cfg: dict, pages: dict[str, str], depth: int = 0, readme: bool = False,
                 anchors: dict[str, set[str]] | None = None):
        self.doc_base = (cfg['doc_host'].rstrip('/') + '/' + cfg.get('doc_baseurl', '').strip('/')).rstrip('/') + '/'
        self.gh_blob = f"{cfg['git_url'].rstrip('/')}/blob/{cfg.get('branch', 'main')}/"
        self.pages, self.up, self.readme = pages, '../'*depth, readme  # pages: notebook rel path -> page name
        self.anchors = anchors  # page file -> the show_doc anchors on it (None: not known, link everything)

    def source_page(self, py: str, line: str | None) -> str:
        mod = Path(py).with_suffix('').as_posix().replace('/', '.')
        return f'{self.up}source/{mod}.html' + (f'#L-{line}' if line else '')

    def _doc_link(self, m):
        text, target = m.group(1), m.group(2)
        if self.readme: return m.group(0)
        page, _, anchor = target.partition('#')
        inner = re.sub(r'`([^`]+)`', lambda c: f'<code class="docutils literal notranslate"><span class="pre">{html.escape(c.group(1))}</span></code>', text)
        # nbdev links every backticked name of its module index, private helpers too, but only public symbols get a
        # show_doc entry: a link to an entry that is not on the page would lead nowhere, so the name stays plain code
        if anchor and self.anchors is not None and page in self.anchors and anchor not in self.anchors[page]:
            return inner
        return f'<a class="reference internal" href="{self.up}{target}">{inner}</a>'

    def _nb_link(self, m):
        text, target, anchor = m.group(1), m.group(2), m.group(3) or ''
        if target not in self.pages: return m.group(0)
        if self.readme: return f'[{text}](nbs/{target}{anchor})'
        return f'[{text}]({self.up}{self.pages[target]}.ipynb{anchor})'

    def markdown(self, s: str) -> str:
        # Our diagrams lie in nbs/images/: the pages find them beside them (write_site_source copies the folder),
        # README.md, one folder up, under nbs/.
        if self.readme: s = re.sub(r'(!\[[^\]]*\]\()(images/)', r'\1nbs/\2', s)
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


def _only_imports(code: str) -> bool:
    "True for a cell of plain imports."
    lines = [l for l in code.splitlines() if l.strip() and not l.lstrip().startswith('#')]
    return bool(lines) and all(re.match(r'^(from \S+ import |import )', l) for l in lines)


def to_page(nb: dict, rel: Path, cfg: dict, pages: dict[str, str], readme: bool = False,
            anchors: dict[str, set[str]] | None = None) -> dict:
    "A processed notebook as a myst-nb page (or, with `readme`, as the notebook README.md is converted from)."
    link = Linker(cfg, pages, depth=len(rel.parts) - 1, readme=readme, anchors=anchors)
    cells = []
    def md(src): cells.append({'cell_type': 'markdown', 'metadata': {}, 'source': src})
    n_markdown = 0  # the opening import cells come after the title, the diagram and the introduction
    fold = not any(re.search(r'^#\|\s*default_exp\s+__init__\s*$', _text(c.get('source')), re.M) for c in nb['cells'])  # the API page's imports are its content
    for c in nb['cells']:
        src = _text(c.get('source'))
        n_markdown += c['cell_type'] == 'markdown'
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
            if (d.get('code-fold') == 'true' or fold and n_markdown <= 3 and _only_imports(code)) and not readme:
                tags.append('hide-input')  # folded behind a 'show code' toggle: the page's opening imports
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


def show_doc_anchors(nb: dict) -> set[str]:
    "The anchors of the show_doc entries of a processed notebook, as `Linker.show_doc` names them."
    out = set()
    for c in nb['cells']:
        if c['cell_type'] != 'code' or split_directives(_text(c.get('source')))[0].get('output') != 'asis': continue
        for o in c.get('outputs', []):
            m = re.search(r'^#+\s+(\S+)\s*$', _text(o.get('data', {}).get('text/markdown')), flags=re.MULTILINE)
            if m: out.add(m.group(1).lower())
    return out


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
/* The content column holds a 120-character code line at a 1280-pixel window: 64em with its padding (furo: 46em + 6em),
   beside the 15em sidebar; the table of contents becomes a drawer until there is room for it too (furo: 82em).
   nbs/styles.css and nbs/_quarto.yml (grid: body-width) do the same for Quarto. */
:root { --nbdev-content-width: 64em; }
.main { min-width: 0; }
.content { width: var(--nbdev-content-width); max-width: 100%; min-width: 0; box-sizing: border-box; padding: 0 1.5em; }
.sidebar-drawer { width: calc(50% - var(--nbdev-content-width) / 2); }
@media (max-width: 104em) {
  .toc-content-icon { display: flex; }
  .toc-drawer { border-left: 1px solid var(--color-background-muted); height: 100vh; position: fixed; right: -15em; top: 0; }
  .toc-tree { border-left: none; font-size: var(--toc-font-size--mobile); }
}
@media (max-width: 67em) { .content { padding: 0 1em; } }
@media (max-width: 63em) { .sidebar-drawer { width: 15em; } }
/* A longer line (and a long output or table cell) wraps instead of scrolling sideways. */
article pre { white-space: pre-wrap; overflow-wrap: anywhere; }
article td code, article th code { overflow-wrap: anywhere; }  /* long identifiers; words of prose stay whole */
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


def copy_images(site: Path):
    "Copy our own diagrams (`nbs/images/`) to `site/images/`, where the pages' `![...](images/x.svg)` look for them."
    src, dst = NBS/'images', site/'images'
    want = {p.relative_to(src): p.read_bytes() for p in src.rglob('*') if p.is_file()} if src.exists() else {}
    for rel, data in want.items():
        if not (dst/rel).exists() or (dst/rel).read_bytes() != data:
            (dst/rel).parent.mkdir(parents=True, exist_ok=True); (dst/rel).write_bytes(data)
    for old in (list(dst.rglob('*')) if dst.exists() else []):
        if old.is_file() and old.relative_to(dst) not in want: old.unlink()


def write_site_source(paths: list[Path], procd: dict[Path, Path], cfg: dict):
    "Fill `_sphinx/site/` with conf.py, static files, one page per notebook and one per module source."
    pages = {r.as_posix(): page_name(r) for r in procd}
    anchors = {page_name(r) + '.html': show_doc_anchors(json.loads(p.read_text(encoding='utf-8'))) for r, p in procd.items()}
    wanted = set()
    for rel, proc in procd.items():
        page = to_page(json.loads(proc.read_text(encoding='utf-8')), rel, cfg, pages, anchors=anchors)
        if page_name(rel) == 'index': page['cells'] += toctree_cells(paths)
        dst = SITE_SRC/(page_name(rel) + '.ipynb')
        write_if_changed(dst, json.dumps(page, indent=1, ensure_ascii=False) + '\n')
        wanted.add(dst)
    for mod, text in source_pages(cfg).items():
        dst = SITE_SRC/'source'/f'{mod}.md'
        write_if_changed(dst, text); wanted.add(dst)
    for old in list(SITE_SRC.rglob('*.ipynb')) + list(SITE_SRC.rglob('*.md')):  # pages of removed notebooks
        if old not in wanted and '_static' not in old.parts: old.unlink()
    write_if_changed(SITE_SRC/'conf.py', CONF.format(title=cfg.get('title', cfg['lib_name']), author=cfg['author'],
                                                       copyright=cfg['copyright'], git_url=cfg['git_url']))
    write_if_changed(SITE_SRC/'_static'/'nbdev.css', CSS.lstrip())
    copy_images(SITE_SRC)
    mj, dst = ensure_mathjax(), SITE_SRC/'_static'/'mathjax'
    if not (dst/'tex-mml-chtml.js').exists():
        shutil.rmtree(dst, ignore_errors=True); shutil.copytree(mj, dst)


def build_sphinx() -> Path:
    from sphinx.cmd.build import build_main
    # Sphinx builds incrementally into _sphinx/html (myst-nb keeps output images beside it, in _sphinx/jupyter_execute);
    # _docs/ is then a fresh copy, so a page of a removed notebook does not linger there.
    args = ['-b', 'html', '-q', '-d', str(DOCTREES), str(SITE_SRC), str(HTML)]
    # An unchanged page is not rewritten, so its previous/next links and sidebar would keep an old page order: when the
    # order (the toctrees of the index page) changed, every page is written again.
    stamp, order = PROC/'page-order.json', json.dumps([[g, [r.as_posix() for r in m]] for g, m in series()])
    if not stamp.exists() or stamp.read_text(encoding='utf-8') != order: args.insert(0, '-a')
    if build_main(args) != 0: sys.exit('sphinx-build failed')
    write_if_changed(stamp, order)
    shutil.rmtree(DOCS, ignore_errors=True)
    shutil.copytree(HTML, DOCS, ignore=shutil.ignore_patterns('.buildinfo', '.doctrees'))
    (DOCS/'.nojekyll').touch()
    return DOCS/'index.html'
