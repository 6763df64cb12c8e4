"""The architecture diagram (tools/diagram.py, nbs/images/): committed files current, on every component page, found by the site."""
import json, re
import xml.etree.ElementTree as ET

import pytest

from tools import diagram
from tools.nbrun import ROOT, notebooks

NBS = ROOT/'nbs'
# Every page whose subject is a part of the architecture, with the diagram variant it opens with (None: the whole
# model, neutral). Pages about configuration, outputs, weights, the API, the task models and the end-to-end runs
# are not one part of the picture, so they are not listed.
PAGES = {
    'index.ipynb': None, '30_perceiver.ipynb': None,
    '01_bytes_tokenizer.ipynb': 'inputs', '15_image_processor.ipynb': 'inputs',
    '02_attention.ipynb': 'attention', '03_layers.ipynb': 'attention',
    '04_encoder.ipynb': 'encoder', '05_position_encoding.ipynb': 'position',
    '10_text_preprocessor.ipynb': 'preprocess', '11_image_preprocessor.ipynb': 'preprocess',
    '12_audio_preprocessor.ipynb': 'preprocess', '13_onehot_preprocessor.ipynb': 'preprocess',
    '14_multimodal_preprocessor.ipynb': 'preprocess',
    '20_decoder_basic.ipynb': 'decode', '21_decoder_projection.ipynb': 'decode',
    '22_decoder_classification.ipynb': 'decode', '23_decoder_flow.ipynb': 'decode',
    '24_decoder_video.ipynb': 'decode', '25_decoder_multimodal.ipynb': 'decode',
    '26_postprocessors.ipynb': 'postprocess',
}
SVG_NS = '{http://www.w3.org/2000/svg}'


def _cells(name):
    return json.loads((NBS/name).read_text(encoding='utf-8'))['cells']


def test_committed_diagrams_are_what_the_script_writes():
    want = diagram.files()
    have = {p.name for p in (NBS/'images').glob('perceiver*.svg')}
    assert have == set(want), f'nbs/images has {sorted(have)}, tools/diagram.py writes {sorted(want)}'
    stale = [n for n, s in want.items() if (NBS/'images'/n).read_text(encoding='utf-8') != s]
    assert not stale, f'{stale} differ from what tools/diagram.py writes: run `python tools/diagram.py` and commit'


@pytest.mark.parametrize('name', sorted(diagram.files()))
def test_diagram_is_self_contained_svg_with_real_text(name):
    root = ET.fromstring(diagram.files()[name])
    assert root.tag == f'{SVG_NS}svg' and root.get('viewBox') == f'0 0 {diagram.W} {diagram.H}'
    assert root.find(f'{SVG_NS}title').text and root.find(f'{SVG_NS}desc').text  # alt text for screen readers
    words = ' '.join(t.text for t in root.iter(f'{SVG_NS}text'))
    for s in ('M × C', 'N × D', 'O × E', 'self-attend × L', 'O(M·N)', 'O(R·L·N²)', 'O(O·N)'):
        assert s in words, f'{name}: the label {s!r} is missing'
    text = diagram.files()[name]
    assert not re.search(r'(href=|@import|@font-face|url\((?!#))', text), f'{name} refers to something outside itself'
    hi = sum(r.get('fill') == diagram.HIGHLIGHT['fill'] for r in root.iter(f'{SVG_NS}rect'))
    assert (hi == 0) == (name == 'perceiver.svg'), f'{name}: {hi} highlighted boxes'


@pytest.mark.parametrize('name,part', sorted(PAGES.items()), ids=lambda x: str(x))
def test_component_page_opens_with_its_diagram(name, part):
    want = f'images/perceiver{"-" + part if part else ""}.svg'
    first = [''.join(c['source']) for c in _cells(name)[:3] if c['cell_type'] == 'markdown']
    found = [m for s in first for m in re.findall(r'!\[([^\]]+)\]\((images/[^)\s]+)\)', s)]
    assert any(path == want and alt.strip() for alt, path in found), \
        f'{name}: its first markdown cells should show ![alt text]({want}); found {found}'


def test_every_image_a_page_shows_exists():
    for nb in notebooks():
        for c in json.loads(nb.read_text(encoding='utf-8'))['cells']:
            if c['cell_type'] != 'markdown': continue
            for path in re.findall(r'!\[[^\]]*\]\(([^)\s]+)\)', ''.join(c['source'])):
                if re.match(r'\w+:', path): continue
                assert (nb.parent/path).is_file(), f'{nb.name} shows {path}, which is not in nbs/'


def test_the_site_and_readme_find_the_images(tmp_path):
    from tools import build_docs as bd
    bd.copy_images(tmp_path)
    assert {p.name for p in (tmp_path/'images').iterdir()} >= set(diagram.files())
    (tmp_path/'images'/'gone.svg').write_text('<svg/>')
    bd.copy_images(tmp_path)  # a diagram removed from nbs/images does not linger on the site
    assert not (tmp_path/'images'/'gone.svg').exists()
    cfg = bd.settings()
    md = '![the model](images/perceiver.svg) and [a page](30_perceiver.ipynb)'
    assert '](nbs/images/perceiver.svg)' in bd.Linker(cfg, {}, readme=True).markdown(md)
    assert '](images/perceiver.svg)' in bd.Linker(cfg, {}, readme=False).markdown(md)
