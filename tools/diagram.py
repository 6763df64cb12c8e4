"""Write the series' architecture diagram: `nbs/images/perceiver.svg` and one variant per part, its part highlighted.

One layout, drawn by plain string templating (no dependency): raw data → preprocess → inputs (M×C) → cross-attend
from the learned latent array → latents (N×D) → L self-attends applied R times with shared weights → output queries
(O×E) cross-attend → outputs → postprocess. Each arrow carries its cost. Text is real SVG text in the generic
`sans-serif` family, so it is searchable and needs no font file. Every component page embeds the variant of its part
(`tests/test_diagram.py` lists them and checks the committed files equal what this script writes).

    python tools/diagram.py           # (re)write nbs/images/perceiver*.svg
    python tools/diagram.py --check   # fail if a committed file differs from what this script writes
"""
from __future__ import annotations

import argparse, sys
from html import escape
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT/'nbs'/'images'

W, H = 880, 440
NEUTRAL = dict(fill='#f3f4f6', stroke='#6b7280')
ARRAY = dict(fill='#e8eef9', stroke='#4b5e8a')
HIGHLIGHT = dict(fill='#ffd866', stroke='#b45309')
TEXT, MUTED, COST = '#111827', '#4b5563', '#9a3412'

# Parts a page can highlight: part name -> (what it is, the element ids it colours).
PARTS = {
    'inputs': ('the raw data', {'raw'}),
    'preprocess': ('the input preprocessor', {'preprocess', 'x'}),
    'position': ('the position encodings', {'pos', 'pos-pre', 'pos-query'}),
    'attention': ('the attention layers', {'cross', 'self', 'decode'}),
    'encoder': ('the encoder (latent array, cross-attend, self-attend blocks)', {'latent-array', 'cross', 'z0', 'self', 'z'}),
    'decode': ('the decoder (output queries cross-attend to the latents)', {'queries', 'decode', 'y'}),
    'postprocess': ('the postprocessor', {'postprocess', 'out'}),
}


def _style(eid: str, hi: set, base: dict) -> str:
    s = HIGHLIGHT if eid in hi else base
    width = 2.5 if eid in hi else 1.2
    return f'fill="{s["fill"]}" stroke="{s["stroke"]}" stroke-width="{width}"'


def _text(x, y, s, size=14, weight='normal', color=TEXT, anchor='middle', style='') -> str:
    st = f' font-style="{style}"' if style else ''
    return (f'<text x="{x}" y="{y}" font-size="{size}" font-weight="{weight}" fill="{color}" '
            f'text-anchor="{anchor}"{st}>{escape(s)}</text>')


def _box(eid, x, y, w, h, lines, hi, base=NEUTRAL, rx=6) -> str:
    "A rectangle with one bold line and optional smaller lines of text, centred."
    out = [f'<g id="{eid}"><rect x="{x}" y="{y}" width="{w}" height="{h}" rx="{rx}" {_style(eid, hi, base)}/>']
    n = len(lines)
    cy = y + h/2 - (n - 1)*9 + 5
    for i, s in enumerate(lines):
        out.append(_text(x + w/2, cy + i*18, s, size=14 if i == 0 else 13, weight='bold' if i == 0 else 'normal',
                         color=TEXT if i == 0 else MUTED))
    out.append('</g>')
    return ''.join(out)


def _arrow(x1, y1, x2, y2, dashed=False, eid=None, hi=frozenset()) -> str:
    on = eid in hi
    color = HIGHLIGHT['stroke'] if on else '#374151'
    dash = ' stroke-dasharray="5 4"' if dashed else ''
    marker = 'url(#head-hi)' if on else 'url(#head)'
    return (f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="{color}" stroke-width="{2.2 if on else 1.6}"'
            f'{dash} marker-end="{marker}"/>')


def svg(part: str | None = None) -> str:
    "The diagram as SVG text; `part` (a key of `PARTS`) is highlighted, None draws it neutral."
    hi = PARTS[part][1] if part else set()
    what = f' Highlighted: {PARTS[part][0]}.' if part else ''
    title = 'Perceiver IO architecture' + (f': {PARTS[part][0]}' if part else '')
    desc = ('Raw data is preprocessed into an input array of M rows and C channels. A learned latent array of N rows '
            'and D channels cross-attends to it at cost O(M·N). A block of L self-attention layers is applied R times '
            'with shared weights, cost O(R·L·N²). An output query array of O rows cross-attends to the latents, cost '
            'O(O·N), giving O output rows of E channels, which a postprocessor turns into the task output.' + what)
    r1, r2 = 130, 340  # centre lines of the two rows
    bw, bh = 112, 58   # array boxes
    p = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
         f'aria-labelledby="t d" font-family="sans-serif">',
         f'<title id="t">{escape(title)}</title>', f'<desc id="d">{escape(desc)}</desc>',
         '<defs>'
         '<marker id="head" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
         '<path d="M0,0 L10,5 L0,10 z" fill="#374151"/></marker>'
         f'<marker id="head-hi" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
         f'<path d="M0,0 L10,5 L0,10 z" fill="{HIGHLIGHT["stroke"]}"/></marker>'
         '</defs>',
         f'<rect x="0" y="0" width="{W}" height="{H}" fill="#ffffff"/>']
    # --- row 1: raw data -> preprocess -> inputs x -> cross-attend -> latents z0
    p.append(_box('raw', 15, r1 - bh/2, bw, bh, ['raw data', 'bytes, pixels, audio'], hi))
    p.append(_arrow(15 + bw, r1, 315, r1))
    p.append(_box('preprocess', 160, r1 - 17, 122, 34, ['preprocess'], hi, rx=17))
    p.append(_text(221, r1 - 28, 'O(M·C)', size=13, color=COST, style='italic'))
    p.append(_box('x', 315, r1 - bh/2, bw, bh, ['inputs x', 'M × C'], hi, base=ARRAY))
    p.append(_arrow(315 + bw, r1, 655, r1))
    p.append(_box('cross', 480, r1 - 17, 122, 34, ['cross-attend'], hi, rx=17))
    p.append(_text(541, r1 + 36, 'O(M·N)', size=13, color=COST, style='italic'))
    p.append(_box('latent-array', 475, 14, 132, 52, ['latent array', 'N × D, learned'], hi, base=ARRAY))
    p.append(_arrow(541, 66, 541, r1 - 19))
    p.append(_text(548, 92, 'queries', size=12, color=MUTED, anchor='start'))
    p.append(_text(453, r1 - 22, 'keys,', size=11, color=MUTED))
    p.append(_text(453, r1 - 9, 'values', size=11, color=MUTED))
    p.append(_box('z0', 655, r1 - bh/2, bw, bh, ['latents z', 'N × D'], hi, base=ARRAY))
    # --- the latent processor: L self-attends, applied R times with shared weights
    p.append(_arrow(711, r1 + bh/2, 711, r2 - bh/2 - 2))
    p.append(_box('self', 640, 200, 142, 68, ['self-attend × L', 'a block of L layers', 'applied R times'], hi, rx=12))
    p.append(f'<path d="M 640 250 C 605 250, 605 215, 636 215" fill="none" stroke="#374151" stroke-width="1.4" '
             f'marker-end="url(#head)"/>')
    p.append(_text(606, 238, '× R', size=13, weight='bold', color=TEXT, anchor='end'))
    p.append(_text(790, 239, 'O(R·L·N²)', size=13, color=COST, anchor='start', style='italic'))
    # --- row 2 (right to left): latents z -> cross-attend with output queries -> outputs y -> postprocess -> output
    p.append(_box('z', 655, r2 - bh/2, bw, bh, ['latents z', 'N × D'], hi, base=ARRAY))
    p.append(_arrow(655, r2, 315 + bw, r2))
    p.append(_box('decode', 480, r2 - 17, 122, 34, ['cross-attend'], hi, rx=17))
    p.append(_text(541, r2 + 36, 'O(O·N)', size=13, color=COST, style='italic'))
    p.append(_text(628, r2 - 22, 'keys,', size=11, color=MUTED))
    p.append(_text(628, r2 - 9, 'values', size=11, color=MUTED))
    p.append(_box('y', 315, r2 - bh/2, bw, bh, ['outputs y', 'O × E'], hi, base=ARRAY))
    p.append(_arrow(315, r2, 15 + bw, r2))
    p.append(_box('postprocess', 160, r2 - 17, 122, 34, ['postprocess'], hi, rx=17))
    p.append(_text(221, r2 + 36, 'O(O·E)', size=13, color=COST, style='italic'))
    p.append(_box('out', 15, r2 - bh/2, bw, bh, ['task output', 'logits, pixels, flow'], hi))
    # --- the middle band: position encodings feed the preprocessor and the decoder's queries
    p.append(_box('pos', 150, 212, 142, 52, ['position encodings', 'Fourier or trained'], hi))
    p.append(_arrow(221, 212, 221, r1 + 19, dashed=True, eid='pos-pre', hi=hi))
    p.append(_box('queries', 470, 212, 142, 52, ['output queries o', 'O × E'], hi, base=ARRAY))
    p.append(_arrow(292, 238, 468, 238, dashed=True, eid='pos-query', hi=hi))
    p.append(_text(380, 230, 'decoder query', size=12, color=MUTED))
    p.append(_arrow(541, 264, 541, r2 - 19))
    p.append(_text(548, 290, 'queries', size=12, color=MUTED, anchor='start'))
    # --- the legend
    p.append(_text(W/2, 410, 'M × C inputs · N × D latents · O × E outputs · L self-attends per block · R blocks',
                   size=13, color=MUTED))
    p.append(_text(W/2, 428, 'costs per example, up to the channel widths; N ≪ M, so nothing is quadratic in M or O',
                   size=12, color=MUTED, style='italic'))
    p.append('</svg>')
    return '\n'.join(p) + '\n'


def files() -> dict[str, str]:
    "Every diagram file by name: the neutral one and one per part."
    return {'perceiver.svg': svg(), **{f'perceiver-{k}.svg': svg(k) for k in PARTS}}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--check', action='store_true', help='only check the committed files')
    args = ap.parse_args()
    want = files()
    if args.check:
        bad = [n for n, s in want.items() if not (IMAGES/n).exists() or (IMAGES/n).read_text(encoding='utf-8') != s]
        if bad: sys.exit(f'stale diagrams: {bad}; run python tools/diagram.py')
        print('diagrams up to date'); return
    IMAGES.mkdir(parents=True, exist_ok=True)
    for n, s in want.items(): (IMAGES/n).write_text(s, encoding='utf-8')
    print(f'wrote {len(want)} files to {IMAGES.relative_to(ROOT)}')


if __name__ == '__main__':
    main()
