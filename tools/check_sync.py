"""Fail unless the notebooks and the library are in sync and the notebooks are clean.

Runs `nbdev_export` and `nbdev_clean` (and rewrites the docs sidebar `nbs/sidebar.yml` from the notebook list) and
compares every notebook and library file before and after: if anything changed, the committed library was not what
the notebooks say (or a notebook was saved unclean, or a notebook was added without its sidebar entry).
The commands leave the fixed files in place, so after reviewing them a developer only has to commit.
"""
import hashlib, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def snapshot() -> dict:
    files = list((ROOT/'nbs').rglob('*.ipynb')) + list((ROOT/'perceiver_nb').rglob('*.py')) + [ROOT/'nbs'/'sidebar.yml']
    return {str(p.relative_to(ROOT)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files if p.exists() and '.ipynb_checkpoints' not in p.parts and '__pycache__' not in p.parts}


def main():
    before = snapshot()
    for cmd in ('nbdev_export', 'nbdev_clean'):
        subprocess.run([str(BIN/cmd)], cwd=ROOT, check=True)
    subprocess.run([sys.executable, str(ROOT/'tools'/'build_docs.py'), '--sidebar'], cwd=ROOT, check=True)
    after = snapshot()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if changed:
        sys.exit('The notebooks and the library were out of sync (or a notebook was not clean).\n'
                 '`nbdev_export`, `nbdev_clean` and `build_docs.py --sidebar` have just updated:\n  ' + '\n  '.join(changed) +
                 '\nReview the changes (git diff), commit them, and run `make test` again. In your own loop, run\n'
                 '`nbdev_export && nbdev_clean` after editing a notebook (and `python tools/build_docs.py --sidebar` after adding one).')
    untracked = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=all', 'perceiver_nb', 'nbs'],
                               cwd=ROOT, capture_output=True, text=True).stdout
    new = [l[3:] for l in untracked.splitlines() if l.startswith('??') and not l.rstrip().endswith(('.ipynb_checkpoints/',))]
    if new:
        sys.exit('These notebook or library files are not tracked by git, so CI would not see them:\n  ' + '\n  '.join(new) +
                 '\n`git add` them (or delete them) and run `make test` again.')
    print('notebooks and library in sync, notebooks clean')


if __name__ == '__main__': main()
