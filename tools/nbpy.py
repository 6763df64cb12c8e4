"""Author notebooks as plain text: convert between `.ipynb` and a percent-format text file.

Cells are separated by lines `# %%` (code) and `# %% [markdown]` (markdown, written plainly or commented
jupytext-style with every line starting `# `). Handy for writing or reviewing a notebook in an editor; the `.ipynb` stays the source of truth, so
convert back, run (`tools/nbrun.py`) and `nbdev_clean` before committing.

    python tools/nbpy.py to-nb draft.py nbs/02_attention.ipynb
    python tools/nbpy.py to-py nbs/02_attention.ipynb draft.py
    python tools/nbpy.py uncomment nbs/02_attention.ipynb   # fix a notebook whose markdown was saved commented
"""
import json, sys
from pathlib import Path


def _commented(src: str) -> bool:
    return all(l == '#' or l.startswith('# ') for l in src.splitlines())


def all_markdown_commented(cells: list) -> bool:
    "True when every markdown cell is commented line by line (`# ...`): a notebook made from a jupytext-style draft."
    md = [''.join(c['source']) for c in cells if c['cell_type'] == 'markdown']
    return bool(md) and all(_commented(s) for s in md)


def uncomment_markdown(cells: list) -> list:
    "Strip the `# ` prefix from the lines of every markdown cell (only if all of them carry it)."
    if not all_markdown_commented(cells): return cells
    for c in cells:
        if c['cell_type'] != 'markdown': continue
        c['source'] = '\n'.join(l[2:] for l in ''.join(c['source']).splitlines()).splitlines(True)
    return cells


def py2nb(text: str) -> dict:
    cells, kind, buf = [], None, []
    def flush():
        if kind is None: return
        lines = buf
        # Markdown may also be written commented, jupytext-style ('# text'): strip the comment marks then.
        if kind == 'markdown' and any(l.strip() for l in lines) and all(l == '#' or l.startswith('# ') or not l.strip() for l in lines):
            lines = [l[2:] if l.startswith('# ') else '' for l in lines]
        src = '\n'.join(lines).strip('\n')
        cell = {'cell_type': kind, 'metadata': {}, 'source': src.splitlines(True)}
        if kind == 'code': cell.update(execution_count=None, outputs=[])
        cells.append(cell)
    for line in text.splitlines():
        s = line.strip()
        if s in ('# %%', '# %% [markdown]', '# %% [md]'):
            flush(); kind, buf = ('code' if s == '# %%' else 'markdown'), []
        else: buf.append(line)
    flush()
    return {'cells': cells, 'metadata': {'kernelspec': {'display_name': 'python3', 'language': 'python', 'name': 'python3'}},
            'nbformat': 4, 'nbformat_minor': 5}


def nb2py(nb: dict) -> str:
    parts = []
    for c in nb['cells']:
        src = ''.join(c['source'])
        parts.append(('# %%' if c['cell_type'] == 'code' else '# %% [markdown]') + '\n' + src + '\n')
    return '\n'.join(parts)


if __name__ == '__main__':
    cmd, src, dst = (sys.argv[1:4] + [None])[:3]
    if cmd == 'uncomment':
        nb = json.loads(Path(src).read_text())
        uncomment_markdown(nb['cells'])
        Path(src).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')
    elif cmd == 'to-nb': Path(dst).write_text(json.dumps(py2nb(Path(src).read_text()), indent=1, ensure_ascii=False) + '\n')
    elif cmd == 'to-py': Path(dst).write_text(nb2py(json.loads(Path(src).read_text())))
    else: sys.exit(__doc__)
