"""Video and multimodal decoders against transformers: same weights (strict loading both ways), same numbers.

Each case builds transformers' decoder from a tiny random layout, copies its state dict into ours with `strict=True`
(and ours back into a fresh transformers decoder), then compares queries and logits on subsampled points (the only
path transformers can run). Our own additions (full-grid decoding, `range` points, batch sizes other than
`output_shape[0]`, clear errors) are checked against the same decoder's subsample path.
"""
import math

import pytest
import torch

import transformers.models.perceiver.modeling_perceiver as hf
from transformers import PerceiverConfig as HFConfig

from perceiver_nb.config import PerceiverConfig
from perceiver_nb.decoders.basic import PerceiverBasicDecoder
from perceiver_nb.decoders.classification import PerceiverClassificationDecoder
from perceiver_nb.decoders.video import PerceiverBasicVideoAutoencodingDecoder
from perceiver_nb.decoders.multimodal import PerceiverMultimodalDecoder
from perceiver_nb.position import build_linear_positions, generate_fourier_features

TOL = 1e-5


def configs(**kw):
    kw = dict(d_latents=8, num_labels=5, attention_probs_dropout_prob=0.0, **kw)
    return PerceiverConfig(**kw), HFConfig(**kw)


def maxdiff(a, b): return (a - b).abs().max().item()


VIDEO_CASES = [  # (output_shape, bands, decoder kwargs)
    ([1, 3, 4, 5], 2, dict(num_channels=15, output_num_channels=3)),
    ([2, 2, 3, 7], 3, dict(num_channels=21, output_num_channels=4, num_heads=2, widening_factor=2, use_query_residual=True)),
    ([1, 1, 6, 5], 1, dict(num_channels=8, output_num_channels=2, project_pos_dim=8, out_channels=9, qk_channels=6, v_channels=4)),
]


@pytest.mark.parametrize('shape,bands,kw', VIDEO_CASES)
def test_video_decoder_matches_transformers(shape, bands, kw):
    ours_cfg, hf_cfg = configs()
    args = dict(output_shape=shape, position_encoding_type='fourier',
                fourier_position_encoding_kwargs=dict(num_bands=bands, max_resolution=tuple(shape[1:])), **kw)
    torch.manual_seed(0)
    theirs = hf.PerceiverBasicVideoAutoencodingDecoder(hf_cfg, **args).eval()
    ours = PerceiverBasicVideoAutoencodingDecoder(ours_cfg, **args).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    hf.PerceiverBasicVideoAutoencodingDecoder(hf_cfg, **args).load_state_dict(ours.state_dict(), strict=True)
    B, O = 3, math.prod(shape[1:])
    x, z = torch.randn(B, 5, 4), torch.randn(B, 6, 8)
    g = torch.Generator().manual_seed(1)
    for points in (torch.randperm(O, generator=g)[:7], torch.arange(O)):
        with torch.no_grad():
            q_hf, q = theirs.decoder_query(x, subsampled_points=points), ours.decoder_query(x, subsampled_points=points)
            assert maxdiff(q_hf, q) <= TOL
            y_hf, y = theirs.decoder(q_hf, z).logits, ours(q, z).logits
        assert maxdiff(y_hf, y.reshape(B, len(points), -1)) <= TOL
    assert y.shape == (B, *shape[1:], kw['output_num_channels'])  # all points: reshaped, whatever B


def test_video_decoder_full_grid_and_batch():
    cfg, hf_cfg = configs()
    args = dict(output_shape=[1, 2, 3, 4], position_encoding_type='fourier', output_num_channels=3, num_channels=15,
                fourier_position_encoding_kwargs=dict(num_bands=2, max_resolution=(2, 3, 4)))
    dec = PerceiverBasicVideoAutoencodingDecoder(cfg, **args).eval()
    x = torch.randn(2, 5, 4)
    q = dec.decoder_query(x)
    expected = generate_fourier_features(build_linear_positions((2, 3, 4)).reshape(1, -1, 3), 2, (2, 3, 4))
    assert maxdiff(q[0], expected[0]) == 0  # the full grid is the linspace grid (DeepMind's), not the input's shape
    assert dec.decoder_query(torch.randn(2, 3, 5, 6, 7)).shape == (2, 24, 15)  # un-flattened inputs too
    with torch.no_grad(): assert dec(q, torch.randn(2, 6, 8)).logits.shape == (2, 2, 3, 4, 3)
    theirs = hf.PerceiverBasicVideoAutoencodingDecoder(hf_cfg, **args).eval()
    assert theirs.decoder_query(x).shape == (2, 4, 13)  # transformers reads a 1-D grid from the flat inputs' width: wrong
    with pytest.raises(RuntimeError): theirs(q, torch.randn(2, 6, 8))  # and reshapes with batch 1
    half = dec.to(torch.bfloat16)
    with torch.no_grad():
        out = half(half.decoder_query(x.bfloat16()), torch.randn(2, 6, 8, dtype=torch.bfloat16)).logits
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


@pytest.mark.parametrize('bad,msg', [
    (dict(output_shape=(2, 3, 4)), 'must have rank 4'),
    (dict(output_shape=[1, 2, 0, 4]), 'must hold positive ints'),
    (dict(output_num_channels=None), '`output_num_channels` is required'),
    (dict(output_index_dims=(2,)), 'sets `output_index_dims` itself'),
])
def test_video_decoder_errors(bad, msg):
    cfg, _ = configs()
    args = dict(output_shape=[1, 2, 3, 4], position_encoding_type='fourier', output_num_channels=3,
                fourier_position_encoding_kwargs=dict(num_bands=2, max_resolution=(2, 3, 4)))
    args.update(bad)
    if args.get('output_num_channels', 0) is None: del args['output_num_channels']
    with pytest.raises(ValueError, match=msg.replace('`', '.')):
        PerceiverBasicVideoAutoencodingDecoder(cfg, **args)


def modalities(lib, cfg, names, layout):
    "Query-only modality decoders for `names` (audio-like, video-like, label-like) in transformers or our classes."
    (a_n, a_k, a_res), (vid, v_k), (lab_c,) = layout
    only = dict(position_encoding_only=True, output_num_channels=6, use_query_residual=False)
    Basic, Video, Cls = ((hf.PerceiverBasicDecoder, hf.PerceiverBasicVideoAutoencodingDecoder, hf.PerceiverClassificationDecoder)
                         if lib == 'hf' else (PerceiverBasicDecoder, PerceiverBasicVideoAutoencodingDecoder, PerceiverClassificationDecoder))
    a, v, l = names
    return {
        l: Cls(cfg, position_encoding_type='trainable', use_query_residual=False, position_encoding_only=True,
               trainable_position_encoding_kwargs=dict(num_channels=lab_c, index_dims=1)),
        v: Video(cfg, output_shape=[1, *vid], position_encoding_type='fourier',
                 fourier_position_encoding_kwargs=dict(num_bands=v_k, max_resolution=tuple(vid)), **only),
        a: Basic(cfg, output_index_dims=(a_n,), position_encoding_type='fourier',
                 fourier_position_encoding_kwargs=dict(num_bands=a_k, max_resolution=(a_res,)), **only),
    }


MM_CASES = [  # (names audio/video/label, layout, min_padding_size, shared decoder kwargs)
    (('audio', 'image', 'label'), ((12, 3, 48), ((2, 3, 4), 2), (10,)), 2, dict(num_heads=2)),
    (('zz_sound', 'a_frames', 'm_class'), ((7, 2, 21), ((1, 4, 3), 1), (4,)), 0, dict(widening_factor=2, use_query_residual=True)),
    (('b', 'c', 'a'), ((16, 4, 64), ((3, 2, 2), 3), (30,)), 4, dict(qk_channels=8, v_channels=4, num_heads=4)),
]


def mm_pair(names, layout, pad, kw):
    ours_cfg, hf_cfg = configs()
    torch.manual_seed(0)
    theirs = hf.PerceiverMultimodalDecoder(hf_cfg, modalities('hf', hf_cfg, names, layout), num_outputs=None,
                                           output_num_channels=6, min_padding_size=pad, **kw).eval()
    ours = PerceiverMultimodalDecoder(ours_cfg, modalities('ours', ours_cfg, names, layout), num_outputs=None,
                                      output_num_channels=6, min_padding_size=pad, **kw).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    hf.PerceiverMultimodalDecoder(hf_cfg, modalities('hf', hf_cfg, names, layout), num_outputs=None, output_num_channels=6,
                                  min_padding_size=pad, **kw).load_state_dict(ours.state_dict(), strict=True)
    return ours, theirs


@pytest.mark.parametrize('names,layout,pad,kw', MM_CASES)
def test_multimodal_decoder_matches_transformers(names, layout, pad, kw):
    ours, theirs = mm_pair(names, layout, pad, kw)
    a, v, l = names
    sizes = {a: 5, v: 3, l: 1}
    x, z = torch.randn(2, 9, 7), torch.randn(2, 6, 8)
    n_a, n_v = layout[0][0], math.prod(layout[1][0])
    g = torch.Generator().manual_seed(2)
    for points in ({a: torch.randperm(n_a, generator=g)[:4], v: torch.randperm(n_v, generator=g)[:5], l: None},
                   {a: torch.arange(n_a), v: torch.arange(n_v), l: None}):
        with torch.no_grad():
            q_hf, q = theirs.decoder_query(x, sizes, subsampled_points=points), ours.decoder_query(x, sizes, subsampled_points=points)
            assert q.shape == q_hf.shape and maxdiff(q_hf, q) <= TOL
            y_hf, y = theirs(q_hf, z, output_attentions=True), ours(q, z, output_attentions=True)
        assert maxdiff(y_hf.logits, y.logits) <= TOL
        assert maxdiff(y_hf.cross_attentions[0], y.cross_attentions[0]) <= TOL
    # every output as ranges (the cached tables) equals the index tensors, in sorted-name order
    ranges = {a: range(0, n_a), v: range(0, n_v), l: range(0, 1)}
    with torch.no_grad(): q_r = ours.decoder_query(x, sizes, subsampled_points=ranges)
    assert maxdiff(q_r, q) <= TOL
    assert list(ours.output_sizes(ranges)) == sorted(names)
    # decoding without subsampling works and has every output
    full = ours.decoder_query(x, sizes)
    assert full.shape == (2, n_a + n_v + 1, ours.num_query_channels)
    with pytest.raises(RuntimeError, match='expanded size'): theirs.decoder_query(x, sizes)  # transformers: no full decode
    with torch.no_grad(): assert ours(full, z).logits.shape == (2, n_a + n_v + 1, 6)


def test_multimodal_decoder_padding_and_order():
    ours, _ = mm_pair(*MM_CASES[1])
    # names sorted: a_frames (video), m_class (label), zz_sound (audio)
    assert ours.num_query_channels == max(m.num_query_channels for m in ours.modalities.values()) + 0
    x, z = torch.randn(1, 9, 7), torch.randn(1, 6, 8)
    with torch.no_grad(): q = ours.decoder_query(x, {'zz_sound': 5, 'a_frames': 3, 'm_class': 1})
    n_v = 12
    assert torch.equal(q[0, n_v, :4], ours.modalities['m_class'].decoder.output_position_encodings.position_embeddings[0])
    width_v = ours.modalities['a_frames'].num_query_channels
    assert torch.equal(q[0, :n_v, width_v:], ours.padding['a_frames'].expand(n_v, -1))


def test_multimodal_decoder_errors_and_dtypes():
    ours, _ = mm_pair(*MM_CASES[0])
    x, sizes = torch.randn(2, 9, 7), {'audio': 5, 'image': 3, 'label': 1}
    cases = [
        (lambda: ours.decoder_query(x, None), '`modality_sizes` must be a dict'),
        (lambda: ours.decoder_query(x, {'audio': 5, 'image': 4}), "no entry for the modalities \\['label'\\]"),
        (lambda: ours.decoder_query(x, {'audio': 5, 'image': 3, 'label': 2}), 'add up to 10 rows'),
        (lambda: ours.decoder_query(x, sizes, subsampled_points={'video': None}), "names modalities \\['video'\\]"),
        (lambda: ours.decoder_query(x, sizes, subsampled_points=[1, 2]), 'must be a dict'),
        (lambda: ours.decoder_query(x, sizes, subsampled_points={'image': range(0, 25)}), 'step 1 inside \\[0, 24\\]'),
        (lambda: ours.decoder_query(x, sizes, subsampled_points={'image': range(0, 6, 2)}), 'step 1'),
        (lambda: ours.decoder_query(x, sizes, subsampled_points={'image': torch.tensor([24])}), 'values must lie in \\[0, 24\\)'),
        (lambda: ours.decoder_query(x, sizes, subsampled_points={'image': torch.tensor([0.5])}), 'integer indices'),
    ]
    for fn, msg in cases:
        with pytest.raises(ValueError, match=msg): fn()
    cfg, _ = configs()
    with pytest.raises(ValueError, match='non-empty dict'): PerceiverMultimodalDecoder(cfg, {}, None, 6)
    with pytest.raises(TypeError, match='must be a decoder'): PerceiverMultimodalDecoder(cfg, {'a': torch.nn.Linear(2, 2)}, None, 6)
    with pytest.raises(ValueError, match='min_padding_size'): PerceiverMultimodalDecoder(cfg, modalities('ours', cfg, ('a', 'b', 'c'), MM_CASES[0][1]), None, 6, min_padding_size=-1)
    for dtype in (torch.bfloat16, torch.float16):
        half = ours.to(dtype)
        with torch.no_grad():
            q = half.decoder_query(x.to(dtype), sizes, subsampled_points={'image': range(0, 24)})
            y = half(q, torch.randn(2, 6, 8, dtype=dtype)).logits
        assert q.dtype == dtype and y.dtype == dtype and torch.isfinite(y).all()
    ours.float()
    assert {k[2] for k in ours._tables} >= {torch.bfloat16, torch.float16}
    ours.cache_clear(); assert not ours._tables


def test_released_size_queries_bit_for_bit():
    "The released audio (1920 patches, 192 bands over 30,720 samples: arguments up to ~48,000 rad) and video queries."
    cfg, hf_cfg = configs()
    audio_kw = dict(output_index_dims=(1920,), output_num_channels=512, position_encoding_type='fourier', position_encoding_only=True,
                    fourier_position_encoding_kwargs=dict(num_bands=192, max_resolution=(30720,), sine_only=False, concat_pos=True))
    video_kw = dict(output_shape=[1, 16, 224, 224], output_num_channels=512, position_encoding_type='fourier', position_encoding_only=True,
                    fourier_position_encoding_kwargs=dict(num_bands=32, max_resolution=(16, 56, 56), sine_only=False, concat_pos=True))
    label_kw = dict(position_encoding_type='trainable', position_encoding_only=True,
                    trainable_position_encoding_kwargs=dict(num_channels=1024, index_dims=1))
    mods = lambda lib, c: {'audio': (hf.PerceiverBasicDecoder if lib == 'hf' else PerceiverBasicDecoder)(c, **audio_kw),
                           'image': (hf.PerceiverBasicVideoAutoencodingDecoder if lib == 'hf' else PerceiverBasicVideoAutoencodingDecoder)(c, **video_kw),
                           'label': (hf.PerceiverClassificationDecoder if lib == 'hf' else PerceiverClassificationDecoder)(c, **label_kw)}
    theirs = hf.PerceiverMultimodalDecoder(hf_cfg, mods('hf', hf_cfg), num_outputs=None, output_num_channels=512).eval()
    ours = PerceiverMultimodalDecoder(cfg, mods('ours', cfg), num_outputs=None, output_num_channels=512).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    assert ours.num_query_channels == 1026
    x, sizes = torch.zeros(1, 3, 1), {'audio': 1, 'image': 1, 'label': 1}
    g = torch.Generator().manual_seed(0)
    img = torch.randperm(16 * 224 * 224, generator=g)[:4096]
    with torch.no_grad():
        for points in ({'audio': torch.arange(1920), 'image': img, 'label': None},
                       {'audio': torch.arange(1905, 1920), 'image': torch.arange(6272 * 127, 6272 * 128), 'label': None}):
            assert torch.equal(theirs.decoder_query(x, sizes, subsampled_points=points), ours.decoder_query(x, sizes, subsampled_points=points))
        ranges = {'audio': range(1905, 1920), 'image': range(6272 * 127, 6272 * 128), 'label': range(0, 1)}
        assert torch.equal(ours.decoder_query(x, sizes, subsampled_points=ranges), theirs.decoder_query(x, sizes, subsampled_points=points))
