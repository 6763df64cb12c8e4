"""Build the documentation website offline from the executed notebooks, and keep README.md and the sidebar in step.

The command line of two modules: `tools/docs_render.py` renders the executed notebooks (`_executed/`) with nbdev's
processors, Sphinx, myst-nb and furo into `_docs/`, fully offline (Quarto, which `nbdev_docs` needs, is not required;
read its docstring for the steps); `tools/docs_nav.py` writes the navigation: `nbs/sidebar.yml` (the sidebar Quarto
and the offline site share: the index, the series grouped by the tens digit of the notebook number as in STYLE.md,
and the reference pages in a section of their own) and `README.md` (the processed `nbs/index.ipynb` as markdown).

    python tools/build_docs.py                 # build _docs/, write README.md and nbs/sidebar.yml
    python tools/build_docs.py --run-missing   # first run notebooks whose executed copy is missing or stale
    python tools/build_docs.py --no-repo-files # build _docs/ only (the tests do this, then compare)
    python tools/build_docs.py --check         # fail if README.md or nbs/sidebar.yml is not what a build writes
    python tools/build_docs.py --sidebar       # only rewrite nbs/sidebar.yml (tools/check_sync.py does this)
    python tools/build_docs.py --fetch-assets  # only make sure MathJax is at hand (used by `make setup`)

Run it with `IN_TEST` unset: nbdev's processors skip work when it is set.
"""
from __future__ import annotations

import argparse, os, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))

# The names the tests and other tools use from here, wherever they live now.
from tools.docs_nav import (GROUPS, NBS, OTHER_GROUP, README, README_FILES, REFERENCE, REFERENCE_GROUP,  # noqa: E402,F401
                            SIDEBAR, check, group_of, notebooks, page_name, readme_text, reading_order, series,
                            settings, sidebar_yml, write_readme, write_sidebar)
from tools.docs_render import (DOCS, EXECUTED, HTML, MATHJAX_VERSION, PROC, PROC_NBS, SITE_SRC, Linker,  # noqa: E402,F401
                               _only_imports, build_sphinx, copy_images, ensure_executed, ensure_mathjax, is_fresh, process, to_page,
                               write_site_source)


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
    if args.sidebar: write_sidebar(); return
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
        write_sidebar(paths)
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
