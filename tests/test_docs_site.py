"""The documentation website, built offline from this run's executed notebooks and checked in a real browser.

A session fixture builds the site with `tools/build_docs.py` from `_executed/` (the notebook tests wrote it earlier in
this run; any copy that is missing or older than its notebook is run here first, so each notebook runs once per
`pytest tests/`). The site is served on 127.0.0.1 by a local HTTP server and crawled once with Debian's chromium driven
by Playwright at a 1280×900 window: every notebook page, every module source page the `source` links lead to, and a
search. The tests then check what the crawl saw: no request left the machine, no code block or table scrolls
sideways, every link on the built site leads somewhere. Screenshots are kept in `_artifacts/`: `docs_page.png` (a
page with math, figures and show_doc entries), `docs_perceiver.png` and `docs_index.png`.
"""
from __future__ import annotations

import functools, html.parser, http.server, importlib, json, os, re, shutil, subprocess, sys, tempfile, threading
from pathlib import Path
from urllib.parse import unquote, urlparse, urljoin

import pytest

from tools.nbrun import ROOT, notebooks, run_notebook, NotebookError

DOCS, EXECUTED, ARTIFACTS = ROOT/'_docs', ROOT/'_executed', ROOT/'_artifacts'
CHROMIUM = Path(os.environ.get('CHROMIUM', '/usr/bin/chromium'))
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync']
NBS = ROOT/'nbs'
VIEWPORT = {'width': 1280, 'height': 900}
CODE_LINE = 120  # characters: the longest code line the house style allows must fit the content column unwrapped
SCREENSHOTS = {'perceiver': 'docs_perceiver.png', 'index': 'docs_index.png'}


def _build_docs_module():
    sys.path.insert(0, str(ROOT))
    from tools import build_docs
    return build_docs


bd = _build_docs_module()


def nb_title(path: Path) -> str | None:
    "The H1 title of a notebook's first markdown cell (what nbdev turns into the page title)."
    nb = json.loads(path.read_text(encoding='utf-8'))
    for c in nb['cells']:
        if c['cell_type'] == 'markdown':
            m = re.search(r'^#\s+(\S.*?)\s*$', ''.join(c['source']), flags=re.MULTILINE)
            return m.group(1) if m else None


def public_classes() -> list[tuple[str, str, str, str]]:
    "(module, class name, page, anchor) of every public class of the package, from its module index."
    lib = bd.settings()['lib_name']
    ns = {}; exec((ROOT/lib/'_modidx.py').read_text(encoding='utf-8'), ns)
    out = []
    for mod, syms in sorted(ns['d']['syms'].items()):
        m = importlib.import_module(mod)
        for name in getattr(m, '__all__', []):
            obj = getattr(m, name, None)
            if not isinstance(obj, type) or getattr(obj, '__module__', None) != mod: continue
            doc = syms.get(f'{mod}.{name}')
            assert doc, f'{mod}.{name} is public but missing from _modidx.py: run nbdev_export'
            page, anchor = doc[0].split('#')
            out.append((mod, name, page, anchor))
    return out


# ------------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope='session')
def site() -> Path:
    "Build `_docs/` from the executed notebooks (running only those whose executed copy is missing or stale)."
    for nb in notebooks():
        if bd.is_fresh(nb): continue  # the notebook tests ran it earlier in this session
        try: run_notebook(nb, dest=EXECUTED/nb.relative_to(NBS))
        except NotebookError as e: pytest.fail(f'cannot build the docs, a notebook fails:\n{e}', pytrace=False)
    env = {k: v for k, v in os.environ.items() if k != 'IN_TEST'}  # run_notebook set it; nbdev's processors need it unset
    r = subprocess.run([sys.executable, str(ROOT/'tools'/'build_docs.py'), '--no-repo-files'], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, f'docs build failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}'
    assert r.stdout.strip().splitlines()[-1] == str(DOCS/'index.html'), 'the build must end by printing the index path'
    return DOCS


@pytest.fixture(scope='session')
def server(site):
    "Serve `_docs/` on 127.0.0.1 (an ephemeral port) for the session."
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a): pass
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Quiet, directory=str(site)))
    t = threading.Thread(target=httpd.serve_forever, daemon=True); t.start()
    yield f'http://127.0.0.1:{httpd.server_address[1]}/'
    httpd.shutdown(); httpd.server_close()


_PAGE_JS = """() => {
  const main = document.querySelector('article') || document.body;
  const h1 = main.querySelector('h1');
  const anchors = {};  // nbdev anchor of each show_doc entry -> [its id exists on the page, its source link]
  for (const s of main.querySelectorAll('.nbdev-source-links[data-sym]')) {
    const link = s.querySelector('a.nbdev-source');
    anchors[s.dataset.sym] = [document.getElementById(s.dataset.sym) !== null, link ? link.href : null];
  }
  return {
    title: h1 ? h1.textContent.replace(/[#¶]/g, '').trim() : null,
    h1s: [...main.querySelectorAll('h1')].map(h => h.textContent.replace(/[#¶]/g, '').trim()),
    images: [...main.querySelectorAll('img')].map(i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0})),
    math: document.querySelectorAll('mjx-container').length,
    math_errors: document.querySelectorAll('mjx-merror, [data-mjx-error]').length,
    raw_display_math: (main.innerText.match(/\\$\\$/g) || []).length,
    sidebar: [...document.querySelectorAll('.sidebar-tree a.reference')].map(a => a.href),
    sidebar_captions: [...document.querySelectorAll('.sidebar-tree p.caption')].map(p => p.textContent.trim()),
    anchors: anchors,
  };
}"""


# What scrolls sideways: any element of the page whose content is wider than its box where the overflow can scroll
# (furo's code blocks and table wrappers scroll), every `pre` and table whatever its overflow, and the page itself. The
# probe measures a 120-character line in the first code cell's font inside that cell's content box.
_WIDTH_JS = """(n) => {
  const main = document.querySelector('article') || document.body;
  const scrolls = [];
  for (const e of main.querySelectorAll('*')) {
    const ox = getComputedStyle(e).overflowX;
    const can = ox === 'auto' || ox === 'scroll' || e.tagName === 'PRE' || e.tagName === 'TABLE';
    if (can && e.scrollWidth > e.clientWidth + 1)
      scrolls.push([e.tagName.toLowerCase() + (e.className ? '.' + String(e.className).split(' ')[0] : ''),
                    e.scrollWidth - e.clientWidth, (e.textContent || '').trim().slice(0, 60)]);
  }
  const pre = main.querySelector('div.cell_input pre, div.highlight pre');
  let probe = null;
  if (pre) {
    const s = document.createElement('span'); s.textContent = 'm'.repeat(n); s.style.whiteSpace = 'pre';
    pre.appendChild(s);
    const cs = getComputedStyle(pre);
    probe = {line: s.getBoundingClientRect().width,
             box: pre.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight)};
    s.remove();
  }
  return {scrolls: scrolls, pres: main.querySelectorAll('pre').length, tables: main.querySelectorAll('table').length,
          page_scrolls: document.documentElement.scrollWidth > document.documentElement.clientWidth, probe: probe};
}"""

_LINKS_JS = """() => [...document.querySelectorAll('a[href]')].map(a => [a.getAttribute('href'), a.href, a.textContent.trim()])"""


def _wait_for_math(page):
    page.wait_for_function('() => !window.MathJax || (window.MathJax.startup && window.MathJax.startup.promise)', timeout=20000)
    page.evaluate('() => window.MathJax && window.MathJax.startup ? window.MathJax.startup.promise.then(() => true) : true')


@pytest.fixture(scope='session')
def crawl(server, tmp_path_factory):
    "Visit every page, the source pages its `source` links lead to and a search; record every request on the way."
    playwright = pytest.importorskip('playwright.sync_api')
    if not CHROMIUM.exists(): pytest.fail(f'{CHROMIUM} is missing: `apt-get install -y chromium` (make setup does it as root)')
    home = tmp_path_factory.mktemp('browser-home')
    env = {**os.environ, 'HOME': str(home), 'XDG_CONFIG_HOME': str(home/'.config'), 'XDG_CACHE_HOME': str(home/'.cache')}
    out = {'requests': [], 'failed': [], 'bad_status': [], 'pages': {}, 'sources': {}, 'search': {}}
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, env=env)
        ctx = browser.new_context(viewport=VIEWPORT)
        ctx.on('request', lambda r: out['requests'].append(r.url))
        ctx.on('requestfailed', lambda r: out['failed'].append((r.url, r.failure)))
        ctx.on('response', lambda r: r.status >= 400 and out['bad_status'].append((r.url, r.status)))
        page = ctx.new_page()
        for nb in notebooks():
            name = bd.page_name(nb.relative_to(NBS))
            resp = page.goto(urljoin(server, f'{name}.html'), wait_until='load')
            _wait_for_math(page)
            info = page.evaluate(_PAGE_JS)
            info['status'] = resp.status if resp else None
            info['width'] = page.evaluate(_WIDTH_JS, CODE_LINE)
            info['links'] = page.evaluate(_LINKS_JS)
            out['pages'][name] = info
            if name in SCREENSHOTS:
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS/SCREENSHOTS[name]))
        shot = next((n for n, i in out['pages'].items() if i['anchors'] and i['math'] and i['images']),
                    next((n for n, i in out['pages'].items() if i['anchors']), 'index'))
        page.goto(urljoin(server, f'{shot}.html'), wait_until='load'); _wait_for_math(page)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS/'docs_page.png'))
        out['screenshot'] = shot
        links = sorted({u for i in out['pages'].values() for _, u in i['anchors'].values() if u})
        for doc in sorted({u.split('#')[0] for u in links}):  # each source page once, then each line it is linked at
            resp = page.goto(doc, wait_until='load')
            for url in (u for u in links if u.split('#')[0] == doc):
                frag = urlparse(url).fragment
                line = page.evaluate('(id) => { const e = document.getElementById(id); return e ? e.textContent : null }', frag)
                out['sources'][url] = {'status': resp.status if resp else None, 'line': line}
        for _, name, doc_page, _ in public_classes()[:3]:
            page.goto(urljoin(server, f'search.html?q={name}'), wait_until='load')
            try: page.wait_for_selector('#search-results ul.search li a', timeout=15000)
            except Exception: pass
            out['search'][name] = (doc_page, page.eval_on_selector_all('#search-results ul.search li a', 'as => as.map(a => a.href)'))
        browser.close()
    return out


# ------------------------------------------------------------------------------------------------------- the tests
def test_markdown_cells_are_not_commented():
    "A notebook whose markdown cells are all commented line by line renders every line as a heading."
    from tools.nbpy import all_markdown_commented
    bad = [p.name for p in notebooks() if all_markdown_commented(json.loads(p.read_text(encoding='utf-8'))['cells'])]
    assert not bad, f'markdown cells commented line by line (# ...) in {bad}: fix with `python tools/nbpy.py uncomment NB`'


def test_readme_and_sidebar_are_up_to_date(site):
    "README.md is what the build makes of nbs/index.ipynb, and nbs/sidebar.yml lists the series as the site does."
    env = {k: v for k, v in os.environ.items() if k != 'IN_TEST'}
    r = subprocess.run([sys.executable, str(ROOT/'tools'/'build_docs.py'), '--check'], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, (r.stderr or r.stdout)[-3000:]


def test_quarto_config_matches_the_site():
    "Where Quarto is installed, nbdev_docs renders with the same title, repository link, grouped sidebar and width."
    cfg = bd.settings()
    assert cfg.get('custom_sidebar', '').lower() == 'true', 'settings.ini: custom_sidebar = True keeps nbs/sidebar.yml'
    nbdev_yml = (NBS/'nbdev.yml').read_text()
    assert f'title: "{cfg["title"]}"' in nbdev_yml and f'repo-url: "{cfg["git_url"]}"' in nbdev_yml
    import yaml
    quarto = yaml.safe_load((NBS/'_quarto.yml').read_text())
    assert 'sidebar.yml' in quarto['metadata-files']
    assert any(item.get('href') == cfg['git_url'] for item in quarto['website']['navbar'].get('right', [])), \
        'nbs/_quarto.yml: the navbar should link the repository (git_url)'
    listed = re.findall(r'^\s*- (\S+\.ipynb)\s*$', (NBS/'sidebar.yml').read_text(), flags=re.MULTILINE)
    assert listed == [r.as_posix() for _, members in bd.series() for r in members]
    # the content column holds a 120-character code line and longer lines wrap, as on the offline site (furo's CSS)
    html_fmt = quarto['format']['html']
    body = str(html_fmt.get('grid', {}).get('body-width', ''))
    assert re.fullmatch(r'\d+px', body) and int(body[:-2]) >= 1000, \
        f'nbs/_quarto.yml: format.html.grid.body-width should hold a {CODE_LINE}-character code line (>= 1000px), got {body!r}'
    assert html_fmt.get('code-overflow') == 'wrap', 'nbs/_quarto.yml: format.html.code-overflow should be wrap'
    css = (NBS/'styles.css').read_text()
    assert re.search(r'pre[^{]*\{[^}]*white-space:\s*pre-wrap', css), 'nbs/styles.css: long output lines should wrap'
    assert (ROOT/'_quarto.yml').resolve() == (NBS/'_quarto.yml').resolve(), '_quarto.yml must stay a link to nbs/_quarto.yml'


def test_every_notebook_has_a_page(crawl):
    for nb in notebooks():
        name = bd.page_name(nb.relative_to(NBS))
        info = crawl['pages'][name]
        assert info['status'] == 200, f'{name}.html: HTTP {info["status"]}'
        want = nb_title(nb)
        assert info['title'] and not info['title'].startswith('#'), f'{name}.html has no proper title: {info["title"]!r}'
        if want: assert info['title'] == want, f'{name}.html is titled {info["title"]!r}, the notebook {want!r}'
        assert len(info['h1s']) == 1, f'{nb.name}: only the title may be an H1 (`# `), the page has {info["h1s"]}'


def test_sidebar_leads_to_every_page(crawl, server):
    side = crawl['pages']['index']['sidebar']
    paths = {urlparse(u).path for u in side}
    for nb in notebooks():
        name = bd.page_name(nb.relative_to(NBS))
        if name == 'index': continue
        assert f'/{name}.html' in paths, f'the sidebar has no link to {name}.html'
    want = [g for g, _ in bd.series() if g]
    assert crawl['pages']['index']['sidebar_captions'] == [g.upper() for g in want] or \
           [c.lower() for c in crawl['pages']['index']['sidebar_captions']] == [g.lower() for g in want]
    order = [urlparse(u).path.strip('/').removesuffix('.html') for u in side if not urlparse(u).fragment]
    expected = [bd.page_name(r) for g, members in bd.series() if g for r in members]
    assert order == expected, 'the sidebar is not in series order'


def test_every_public_class_has_a_show_doc_entry_with_a_working_source_link(crawl):
    classes = public_classes()
    for mod, name, page, anchor in classes:
        info = crawl['pages'].get(page.removesuffix('.html'))
        assert info, f'{mod}.{name}: its page {page} was not built'
        assert anchor in info['anchors'], f'{mod}.{name}: no show_doc entry for it on {page}'
        has_id, src = info['anchors'][anchor]
        assert has_id, f'{mod}.{name}: {page}#{anchor} (the link nbdev makes) leads nowhere'
        assert src, f'{mod}.{name}: its show_doc entry on {page} has no source link'
        got = crawl['sources'][src]
        assert got['status'] == 200, f'{mod}.{name}: source link {src} gives HTTP {got["status"]}'
        assert got['line'] and re.match(rf'\s*\d*\s*class\s+{name}\b', got['line']), \
            f'{mod}.{name}: source link {src} points at {got["line"]!r}'


def test_math_renders(crawl):
    with_math = 0
    for nb in notebooks():
        name = bd.page_name(nb.relative_to(NBS))
        info = crawl['pages'][name]
        src = ''.join(''.join(c['source']) for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'markdown')
        assert info['math_errors'] == 0, f'{name}.html: MathJax reports {info["math_errors"]} errors'
        assert info['raw_display_math'] == 0, f'{name}.html shows untypeset $$'
        if re.search(r'\$[^$\s][^$]*\$', src):
            assert info['math'] > 0, f'{name}.html: the notebook has math but the page shows none typeset'
            with_math += 1
    assert with_math, 'no page has math: the check would pass vacuously'


def test_every_image_loads(crawl):
    pngs = 0
    for nb in notebooks():  # figures of the processed notebooks (hidden cells are not on the pages)
        cells = json.loads((bd.PROC_NBS/nb.relative_to(NBS)).read_text())['cells']
        pngs += sum('image/png' in o.get('data', {}) for c in cells for o in c.get('outputs', []))
    shown = 0
    for name, info in crawl['pages'].items():
        for img in info['images']:
            assert img['ok'], f'{name}.html: image {img["src"]} did not load'
            shown += 1
    assert shown >= pngs, f'the notebooks drew {pngs} figures, the pages show {shown} images'


def test_search_finds_a_class_by_name(crawl):
    assert crawl['search'], 'no class to search for'
    for name, (page, hits) in crawl['search'].items():
        assert any(urlparse(h).path.endswith('/' + page) for h in hits), f'searching {name!r} does not find {page}: {hits}'


def test_no_request_leaves_the_machine(crawl):
    reqs = crawl['requests']
    assert reqs, 'no requests were recorded'
    outside = [u for u in reqs if urlparse(u).scheme not in ('data', 'blob', 'about') and urlparse(u).hostname != '127.0.0.1']
    assert not outside, f'requests left the machine: {outside[:10]}'
    assert not crawl['failed'], f'requests failed: {crawl["failed"][:10]}'
    assert not crawl['bad_status'], f'requests got an error status: {crawl["bad_status"][:10]}'


def test_screenshot_is_kept(crawl):
    shot = ARTIFACTS/'docs_page.png'
    assert shot.exists() and shot.stat().st_size > 20_000, 'the page screenshot is missing or blank'
    for name, file in SCREENSHOTS.items():
        shot = ARTIFACTS/file
        assert shot.exists() and shot.stat().st_size > 20_000, f'the screenshot of {name}.html is missing or blank'


# ------------------------------------------------------------------------------------------------------- width
def test_code_fits_the_content_column(crawl):
    "At a 1280-pixel window a 120-character code line fits the content column, and nothing on any page scrolls sideways."
    probes = {n: i['width']['probe'] for n, i in crawl['pages'].items() if i['width']['probe']}
    assert len(probes) > len(crawl['pages']) // 2, 'too few pages with a code cell: the width check would be vacuous'
    narrow = {n: p for n, p in probes.items() if p['line'] > p['box']}
    assert not narrow, f'a {CODE_LINE}-character line is wider than the code column on {sorted(narrow)[:5]}: {narrow}'
    assert sum(i['width']['pres'] for i in crawl['pages'].values()) > 100, 'no code blocks found: vacuous'
    scrolling = {n: i['width']['scrolls'] for n, i in crawl['pages'].items() if i['width']['scrolls']}
    worst = max(scrolling, key=lambda n: len(scrolling[n]), default=None)
    assert not scrolling, (f'{sum(map(len, scrolling.values()))} blocks scroll sideways on {len(scrolling)} pages at '
                           f'{VIEWPORT["width"]} px; worst {worst}.html: {scrolling[worst][:5]}')
    wide = [n for n, i in crawl['pages'].items() if i['width']['page_scrolls']]
    assert not wide, f'these pages scroll sideways as a whole at {VIEWPORT["width"]} px: {wide}'


# ------------------------------------------------------------------------------------------------------- links
class _Html(html.parser.HTMLParser):
    "The ids (and names) an HTML file defines and the `<a href>` it holds."
    def __init__(self):
        super().__init__(); self.ids, self.hrefs = set(), []
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for k in ('id', 'name'):
            if a.get(k): self.ids.add(a[k])
        if tag == 'a' and a.get('href') is not None: self.hrefs.append(a['href'])


@functools.lru_cache(maxsize=None)
def _parsed(path: Path) -> _Html:
    p = _Html(); p.feed(path.read_text(encoding='utf-8')); return p


def _link_problem(site: Path, page: str, href: str) -> str | None:
    "What is wrong with link `href` on `page` (a path relative to the site), or None."
    u = urlparse(href)
    if u.scheme in ('http', 'https'):  # checked for form only: the tests never touch the network
        ok = bool(re.fullmatch(r'[A-Za-z0-9.-]+\.[A-Za-z]{2,}(:\d+)?', u.netloc)) and not re.search(r'\s', href)
        return None if ok else 'malformed external link'
    if u.scheme == 'mailto': return None if '@' in href else 'malformed mailto link'
    if u.scheme or u.netloc: return f'unexpected link scheme {u.scheme!r}'
    target = urlparse(urljoin('http://site/' + page, href))
    path = unquote(target.path).lstrip('/') or 'index.html'
    if path.endswith('/'): path += 'index.html'
    if not (site/path).is_file(): return f'no such page {path}'
    if target.fragment and path.endswith('.html') and unquote(target.fragment) not in _parsed(site/path).ids:
        return f'{path} has no anchor #{target.fragment}'
    return None


def test_every_link_leads_somewhere(site, crawl, server):
    "Every `<a href>` of every built page: a page that exists and, for `#anchor`, an element with that id on it."
    bad, n = [], 0
    for f in sorted(site.rglob('*.html')):  # every page of the site, the generated ones (source, index, search) too
        page = f.relative_to(site).as_posix()
        for href in _parsed(f).hrefs:
            n += 1
            why = _link_problem(site, page, href)
            if why: bad.append(f'{page}: {href} ({why})')
    for name, info in crawl['pages'].items():  # and what the browser found on the notebook pages, scripts included
        for raw, resolved, _ in info['links']:
            u = urlparse(resolved)
            if u.hostname == '127.0.0.1':
                why = _link_problem(site, f'{name}.html', u.path.removeprefix(urlparse(server).path) + (f'#{u.fragment}' if u.fragment else ''))
                if why: bad.append(f'{name}.html: {raw} ({why})')
    assert n > 1000, f'only {n} links found: the check would be vacuous'
    assert not bad, f'{len(set(bad))} broken links:\n' + '\n'.join(sorted(set(bad))[:30])


def test_next_links_lead_to_the_next_page(crawl):
    "A link that says 'next' leads to the page after this one in the sidebar (and in furo's next-page link)."
    order = bd.reading_order()
    wrong = []
    for name, info in crawl['pages'].items():
        if name not in order or order.index(name) + 1 >= len(order): continue
        following = order[order.index(name) + 1]
        for raw, resolved, text in info['links']:
            if re.search(r'\bnext\b', text, re.I) and urlparse(resolved).path.endswith('.html') and \
               not urlparse(resolved).path.endswith(f'/{following}.html'):
                wrong.append(f'{name}.html: {text!r} -> {raw}, but the next page is {following}.html')
    assert not wrong, '\n'.join(wrong)


def test_readme_links_exist():
    "Every relative link of README.md (as GitHub shows it) points at a file of the repository."
    text = (ROOT/'README.md').read_text(encoding='utf-8')
    missing = [t for t in re.findall(r'\]\(([^)\s]+)\)', text)
               if not urlparse(t).scheme and not t.startswith('#') and not (ROOT/unquote(t.split('#')[0])).exists()]
    assert not missing, f'README.md links to missing files: {missing}'
