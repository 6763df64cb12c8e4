"""Run notebooks the way `nbdev_test` does, and keep what they printed and drew.

`run_notebook` executes every code cell of a notebook top to bottom in a fresh IPython shell (execnb), skipping
cells that carry a test flag listed in `settings.ini`'s `tst_flags` (unless forced with `flags`), stopping at the
first error. The executed notebook, outputs included, can be written back in place (to refresh the outputs that
the documentation shows) or to another folder (the docs build renders from there, so no page shows stale output).

    python tools/nbrun.py                     # run every notebook, write outputs back in place, then nbdev_clean
    python tools/nbrun.py nbs/02_attention.ipynb --flags "cuda slow"
    python tools/nbrun.py --dest _executed    # leave nbs/ untouched, write executed copies to _executed/
"""
from __future__ import annotations

import argparse, atexit, os, sys, time, traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Notebooks import the package of the tree they belong to, installed or not.
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))


def notebooks(root: Path = ROOT) -> list[Path]:
    "The notebooks of the series: every `nbs/**/*.ipynb` not under or named with a leading `_` or `.`."
    nbs = root/'nbs'
    out = []
    for p in sorted(nbs.rglob('*.ipynb')):
        rel = p.relative_to(nbs)
        if any(part.startswith(('_', '.')) for part in rel.parts): continue
        out.append(p)
    return out


def skip_flags(root: Path = ROOT) -> set[str]:
    "The test flags `settings.ini` skips by default (`tst_flags`)."
    from configparser import ConfigParser
    cfg = ConfigParser(delimiters=['=']); cfg.read(root/'settings.ini')
    return set(cfg['DEFAULT'].get('tst_flags', '').split())


class NotebookError(Exception): pass


def torch_state() -> dict:
    "The process-wide torch switches a notebook could flip and leave flipped for the next one in the same process."
    if 'torch' not in sys.modules: return {}
    import torch
    return {'grad mode': torch.is_grad_enabled(), 'default dtype': torch.get_default_dtype(),
            'threads': torch.get_num_threads(), 'deterministic algorithms': torch.are_deterministic_algorithms_enabled(),
            'anomaly detection': torch.is_anomaly_enabled(), 'inference mode': torch.is_inference_mode_enabled()}


def restore_torch_state(state: dict) -> None:
    import torch
    torch.set_grad_enabled(state['grad mode']); torch.set_default_dtype(state['default dtype'])
    torch.set_num_threads(state['threads']); torch.use_deterministic_algorithms(state['deterministic algorithms'])
    torch.autograd.set_detect_anomaly(state['anomaly detection'])


def run_notebook(path: Path, flags: str | set = '', dest: Path | None = None, timeout: int | None = None):
    "Execute `path` skipping flagged cells except `flags`; write the executed notebook to `dest` if given."
    from execnb.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    from nbdev.process import extract_directives
    path = Path(path).resolve()
    forced = set(flags.split()) if isinstance(flags, str) else set(flags)
    skip = skip_flags() - forced
    nb = read_nb(path)
    os.environ['IN_TEST'] = '1'

    def _no_eval(cell):
        if cell.cell_type != 'code': return True
        if 'nbdev_export(' in cell.source: return True
        direc = extract_directives(cell.copy(), remove=False)
        if direc.get('eval:', [''])[0].lower() == 'false': return True
        if skip & direc.keys():
            cell.outputs, cell.execution_count = [], None  # a skipped cell must not keep outputs of an old run
            return True
        return False

    import torch  # every page imports it; importing it first lets us compare its global state before and after
    before = torch_state()
    shell = CaptureShell(path, mpl_format='png')
    start, cwd = time.time(), os.getcwd()
    try:
        os.chdir(path.parent)
        shell.run_all(nb, exc_stop=True, preproc=_no_eval)
    except BaseException as e:
        restore_torch_state(before)
        raise NotebookError(f'{path.name} failed:\n{shell.prettytb(fname=path)}') from None
    finally:
        os.chdir(cwd)
        atexit.unregister(shell.atexit_operations)  # its exit hook costs a full gc (~1 s) per notebook run
    # `nbdev_test` runs several pages in one process: a page must leave torch's global switches as it found them
    # (use `with torch.no_grad():` and the like). Fail the page if it did not, and undo it for the next page.
    after = torch_state()
    if changed := {k: (before[k], after[k]) for k in before if before[k] != after[k]}:
        restore_torch_state(before)
        raise NotebookError(f'{path.name} left torch\'s global state changed: ' +
                            ', '.join(f'{k} {a} -> {b}' for k, (a, b) in changed.items()) +
                            '; use a context manager (e.g. `with torch.no_grad():`) instead of a global switch')
    if dest is not None:
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        write_nb(nb, dest)
    return time.time() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('paths', nargs='*', help='notebooks to run (default: the whole series)')
    ap.add_argument('--flags', default='', help='space-separated test flags to run although tst_flags skips them')
    ap.add_argument('--dest', default=None, help='folder for executed copies (default: write back in place)')
    args = ap.parse_args()
    paths = [Path(p).resolve() for p in args.paths] or notebooks()
    failed = []
    for p in paths:
        target = (Path(args.dest)/p.relative_to(ROOT/'nbs')) if args.dest else p
        try:
            secs = run_notebook(p, args.flags, dest=target)
            print(f'{p.name}: ok in {secs:.1f}s', flush=True)
        except NotebookError as e:
            print(e, file=sys.stderr, flush=True); failed.append(p.name)
    if not args.dest:
        import subprocess
        subprocess.run([str(Path(sys.executable).parent/'nbdev_clean')], cwd=ROOT, check=True)
    if failed: sys.exit(f'failed: {", ".join(failed)}')


if __name__ == '__main__': main()
