"""Decoders and postprocessors against transformers: same weights (strict loading both ways), same numbers.

Every case builds the transformers module from a tiny random config, copies its state dict into ours with
`strict=True` (and ours back into a fresh transformers module), then compares queries, logits and attention maps.
"""
import pytest
import torch
from torch import nn

import transformers.models.perceiver.modeling_perceiver as hf
from transformers import PerceiverConfig as HFConfig, PerceiverModel as HFPerceiverModel

from perceiver_nb.config import PerceiverConfig
from perceiver_nb.decoders.basic import PerceiverBasicDecoder, PerceiverAbstractDecoder
from perceiver_nb.decoders.projection import PerceiverProjectionDecoder
from perceiver_nb.decoders.classification import PerceiverClassificationDecoder
from perceiver_nb.postprocessors import (PerceiverEmbeddingDecoder, PerceiverClassificationPostprocessor,
                                         PerceiverProjectionPostprocessor, PerceiverAudioPostprocessor,
                                         PerceiverMultimodalPostprocessor, restructure)

TOL = 1e-5
D, N = 12, 5  # latent width and count, distinct from every other size below


def configs(**kw):
    "Our config and transformers' with the same fields."
    kw = dict(d_latents=D, num_labels=3, **kw)
    return PerceiverConfig(**kw), HFConfig(**kw)


def pair(ours_cls, hf_cls, cfg_kw, *args, **kw):
    "A transformers module and ours with its weights (strict), both in eval mode; also check the reverse load."
    ours_cfg, hf_cfg = configs(**cfg_kw)
    torch.manual_seed(0)
    theirs = hf_cls(hf_cfg, *args, **kw).eval()
    ours = ours_cls(ours_cfg, *args, **kw).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    fresh = hf_cls(hf_cfg, *args, **kw)
    fresh.load_state_dict(ours.state_dict(), strict=True)
    return ours, theirs


def maxdiff(a, b): return (a - b).abs().max().item()


def fourier(*res, **kw): return dict(fourier_position_encoding_kwargs=dict(num_bands=2, max_resolution=res, **kw))


def trainable(index_dims, channels): return dict(trainable_position_encoding_kwargs=dict(index_dims=index_dims, num_channels=channels))


# (name, config fields, decoder kwargs, inputs shape, subsampled points, inputs_without_pos shape)
BASIC_CASES = [
    ('trainable-defaults', {}, dict(output_num_channels=6, output_index_dims=(3, 7), num_channels=10, **trainable((3, 7), 10)),
     (2, 9, 4), None, None),
    ('trainable-heads-qk-v-widening-residual-noproject', {},
     dict(output_num_channels=6, output_index_dims=21, num_channels=10, num_heads=2, qk_channels=8, v_channels=6,
          widening_factor=3, use_query_residual=True, final_project=False, **trainable(21, 10)),
     (3, 9, 4), None, None),
    ('trainable-projected-concat', {},
     dict(output_num_channels=6, output_index_dims=(3, 7), num_channels=11, project_pos_dim=7, out_channels=10,
          concat_preprocessed_input=True, use_query_residual=True, **trainable((3, 7), 10)),
     (2, 21, 4), None, (2, 21, 4)),
    ('fourier-2d-subsampled-3heads', {},
     dict(output_num_channels=6, position_encoding_type='fourier', output_index_dims=(3, 7), num_channels=10,
          num_heads=3, use_query_residual=True, **fourier(3, 7)),
     (2, 9, 4), torch.tensor([0, 4, 13, 20, 8]), None),
    ('fourier-1d-subsampled-sine-only', {},
     dict(output_num_channels=5, position_encoding_type='fourier', output_index_dims=(16,), num_channels=3,
          num_heads=3, qk_channels=6, v_channels=9, **fourier(16, sine_only=True)),
     (1, 9, 4), torch.tensor([15, 0, 7]), None),
    ('fourier-3d-subsampled-projected', {},
     dict(output_num_channels=3, position_encoding_type='fourier', output_index_dims=(2, 3, 5), num_channels=9,
          project_pos_dim=9, out_channels=15, widening_factor=2, **fourier(2, 3, 5)),
     (2, 9, 4), torch.arange(0, 30, 4), None),
    ('fourier-unflattened-grid-from-inputs', {},
     dict(output_num_channels=6, position_encoding_type='fourier', output_index_dims=(3, 7), num_channels=10,
          **fourier(3, 7)),
     (2, 4, 3, 7), None, None),
    ('fourier-unflattened-concat', {},
     dict(output_num_channels=6, position_encoding_type='fourier', output_index_dims=(3, 7), num_channels=14,
          concat_preprocessed_input=True, **fourier(3, 7)),
     (2, 4, 3, 7), None, (2, 21, 4)),
    ('query-shape-q-and-chunked-mlp', dict(cross_attention_shape_for_attention='q', chunk_size_feed_forward=7),
     dict(output_num_channels=6, output_index_dims=(3, 7), num_channels=10, num_heads=2, **trainable((3, 7), 10)),
     (2, 9, 4), None, None),
    ('tanh-gelu-dropout-config', dict(hidden_act='gelu_new', attention_probs_dropout_prob=0.3),
     dict(output_num_channels=6, output_index_dims=(3, 7), num_channels=10, widening_factor=4, **trainable((3, 7), 10)),
     (2, 9, 4), None, None),
]


@pytest.mark.parametrize('name,cfg_kw,kw,in_shape,points,wo_shape', BASIC_CASES, ids=[c[0] for c in BASIC_CASES])
@pytest.mark.parametrize('output_attentions', [True, False])
def test_basic_decoder_parity(name, cfg_kw, kw, in_shape, points, wo_shape, output_attentions):
    ours, theirs = pair(PerceiverBasicDecoder, hf.PerceiverBasicDecoder, cfg_kw, **kw)
    torch.manual_seed(1)
    x = torch.randn(in_shape)
    z = torch.randn(in_shape[0], N, D)
    wo = torch.randn(wo_shape) if wo_shape else None
    with torch.no_grad():
        q_hf = theirs.decoder_query(x, inputs_without_pos=wo, subsampled_points=points)
        q = ours.decoder_query(x, inputs_without_pos=wo, subsampled_points=points)
        assert q.shape == q_hf.shape and maxdiff(q, q_hf) < TOL
        r_hf = theirs(q_hf, z, output_attentions=output_attentions)
        r = ours(q, z, output_attentions=output_attentions)
    assert r.logits.shape == r_hf.logits.shape
    assert maxdiff(r.logits, r_hf.logits) < TOL
    assert ours.num_query_channels == theirs.num_query_channels
    if output_attentions:
        assert len(r.cross_attentions) == 1
        assert maxdiff(r.cross_attentions[0], r_hf.cross_attentions[0]) < TOL
    else:
        assert r.cross_attentions is None


@pytest.mark.parametrize('kw', [
    dict(output_index_dims=(3, 7), **trainable((3, 7), 10)),
    dict(output_index_dims=(3, 7), project_pos_dim=8, out_channels=10, **trainable((3, 7), 10)),
    dict(position_encoding_type='fourier', output_index_dims=(3, 7), **fourier(3, 7)),
    dict(position_encoding_type='fourier', output_index_dims=(3, 7), project_pos_dim=5, out_channels=10, **fourier(3, 7)),
], ids=['trainable', 'trainable-projected', 'fourier', 'fourier-projected'])
def test_position_encoding_only_parity(kw):
    ours, theirs = pair(PerceiverBasicDecoder, hf.PerceiverBasicDecoder, {}, output_num_channels=6,
                        position_encoding_only=True, **kw)
    assert not hasattr(ours, 'decoding_cross_attention') and not hasattr(ours, 'final_layer')
    assert ours.num_query_channels == theirs.num_query_channels
    x, pts = torch.randn(2, 9, 4), torch.tensor([2, 11, 17])
    with torch.no_grad():
        theirs_q = theirs.decoder_query(x, subsampled_points=pts)
        if 'trainable_position_encoding_kwargs' in kw: theirs_q = theirs_q[:, pts]  # transformers returns every row
        assert maxdiff(ours.decoder_query(x, subsampled_points=pts), theirs_q) < TOL
    with pytest.raises(ValueError, match='position_encoding_only=True'):
        ours(ours.decoder_query(x), torch.randn(2, N, D))


def test_no_position_encoding_parity():
    "Queries from the caller (the multimodal decoder's shared decoder): same submodules and numbers."
    ours, theirs = pair(PerceiverBasicDecoder, hf.PerceiverBasicDecoder, {}, output_num_channels=6,
                        position_encoding_type='none', output_index_dims=(11,), num_channels=10, num_heads=2)
    assert ours.output_position_encodings is None and not hasattr(ours, 'positions_projection')
    q, z = torch.randn(2, 11, 10), torch.randn(2, N, D)
    with torch.no_grad(): assert maxdiff(ours(q, z).logits, theirs(q, z).logits) < TOL
    with pytest.raises(ValueError, match='cannot build queries'): ours.decoder_query(torch.randn(2, 9, 4))
    with pytest.raises(ValueError, match='no query width'): ours.num_query_channels


def test_fourier_flattened_inputs_use_output_index_dims():
    "Where transformers reads a Fourier grid from the channel axis of (B, M, C) inputs, we use output_index_dims."
    kw = dict(output_num_channels=6, position_encoding_type='fourier', output_index_dims=(3, 7), num_channels=10, **fourier(3, 7))
    ours, theirs = pair(PerceiverBasicDecoder, hf.PerceiverBasicDecoder, {}, **kw)
    x = torch.randn(2, 9, 4)
    assert theirs.decoder_query(x).shape == (2, 4, 9)  # C=4 one-dimensional "positions", too few channels for the layer
    q = ours.decoder_query(x)
    expected = ours.output_position_encodings((3, 7), 2, device=x.device, dtype=x.dtype)
    assert q.shape == (2, 21, 10) and torch.equal(q, expected)
    # ... and it is the grid transformers builds from the equivalent un-flattened inputs
    assert maxdiff(q, theirs.decoder_query(torch.randn(2, 4, 3, 7))) < TOL


def test_fourier_without_concat_pos_keeps_batch_axis():
    "transformers' Fourier features without concat_pos have no batch axis, so its subsampled query comes out (P, 1, C)."
    kw = dict(output_num_channels=5, position_encoding_type='fourier', output_index_dims=(16,), num_channels=2,
              num_heads=2, **fourier(16, concat_pos=False, sine_only=True))
    ours, theirs = pair(PerceiverBasicDecoder, hf.PerceiverBasicDecoder, {}, **kw)
    x, z, pts = torch.randn(2, 9, 4), torch.randn(2, N, D), torch.tensor([15, 0, 7])
    with torch.no_grad():
        q, q_hf = ours.decoder_query(x, subsampled_points=pts), theirs.decoder_query(x, subsampled_points=pts)
        assert q.shape == (2, 3, 2) and q_hf.shape == (3, 1, 2)
        assert torch.equal(q, q_hf.transpose(0, 1).expand(2, -1, -1))
        assert maxdiff(ours(q, z).logits, theirs(q, z).logits) < TOL


def test_trainable_subsampled_points_select_their_rows():
    "transformers returns every row of a trainable query table whatever points are asked for; ours returns those rows."
    kw = dict(output_num_channels=6, output_index_dims=(3, 7), num_channels=10, **trainable((3, 7), 10))
    ours, theirs = pair(PerceiverBasicDecoder, hf.PerceiverBasicDecoder, {}, **kw)
    x, pts = torch.randn(2, 9, 4), torch.tensor([1, 5, 20])
    with torch.no_grad():
        full_hf = theirs.decoder_query(x, subsampled_points=pts)
        q = ours.decoder_query(x, subsampled_points=pts)
    assert full_hf.shape == (2, 21, 10) and q.shape == (2, 3, 10)
    assert torch.equal(q, full_hf[:, pts])
    z = torch.randn(2, N, D)
    with torch.no_grad():  # decoding is per query, so the chosen rows decode to the chosen rows of the full output
        assert maxdiff(ours(q, z).logits, theirs(full_hf, z).logits[:, pts]) < TOL


def test_subsampled_positions_are_not_linspace():
    "Decoding every point through subsampled_points gives -1 + 2i/n coordinates, not the full query's linspace grid."
    kw = dict(output_num_channels=6, position_encoding_type='fourier', output_index_dims=(3, 7), num_channels=10, **fourier(3, 7))
    ours, _ = pair(PerceiverBasicDecoder, hf.PerceiverBasicDecoder, {}, **kw)
    x = torch.randn(1, 9, 4)
    sub, full = ours.decoder_query(x, subsampled_points=torch.arange(21)), ours.decoder_query(x)
    i, j = torch.meshgrid(torch.arange(3), torch.arange(7), indexing='ij')
    assert torch.allclose(sub[0, :, :2], torch.stack([-1 + 2 * i / 3, -1 + 2 * j / 7], -1).reshape(21, 2))
    assert not torch.allclose(sub, full) and torch.allclose(sub[0, 0], full[0, 0])


def test_int_output_index_dims_subsampling():
    "transformers fails to subsample a decoder declared with an int grid; ours treats the int as a 1-D grid."
    kw = dict(output_num_channels=6, position_encoding_type='fourier', output_index_dims=16, num_channels=10, **fourier(16))
    ours, theirs = pair(PerceiverBasicDecoder, hf.PerceiverBasicDecoder, {}, **kw)
    x, pts = torch.randn(2, 9, 4), torch.tensor([3, 9])
    with pytest.raises(IndexError): theirs.decoder_query(x, subsampled_points=pts)
    tuple_dec, _ = pair(PerceiverBasicDecoder, hf.PerceiverBasicDecoder, {}, **dict(kw, output_index_dims=(16,)))
    assert torch.equal(ours.decoder_query(x, subsampled_points=pts), tuple_dec.decoder_query(x, subsampled_points=pts))


def test_basic_decoder_bad_inputs():
    ours, _ = pair(PerceiverBasicDecoder, hf.PerceiverBasicDecoder, {}, output_num_channels=6, output_index_dims=(3, 7),
                   num_channels=10, concat_preprocessed_input=True, **trainable((3, 7), 6))
    x, z = torch.randn(2, 9, 4), torch.randn(2, N, D)
    with pytest.raises(ValueError, match='`inputs_without_pos` is required'): ours.decoder_query(x)
    with pytest.raises(ValueError, match=r'`inputs_without_pos` must have shape \(2, 21, \*\)'):
        ours.decoder_query(x, inputs_without_pos=torch.randn(2, 20, 4))
    q = ours.decoder_query(x, inputs_without_pos=torch.randn(2, 21, 4))
    with pytest.raises(ValueError, match=r'`query` must have shape \(B, O, 10\), got \(2, 21, 9\)'): ours(q[..., :9], z)
    with pytest.raises(ValueError, match='`query` must have 3 dimensions'): ours(q[0], z)
    with pytest.raises(ValueError, match=r'`z` must have shape \(B, N, 12\), got \(2, 5, 13\)'): ours(q, torch.randn(2, N, 13))
    with pytest.raises(ValueError, match='with B=2'): ours(q, z[:1])
    with pytest.raises(ValueError, match=r'`subsampled_points` values must lie in \[0, 21\), got -1'):
        ours.decoder_query(x, inputs_without_pos=torch.randn(2, 21, 4), subsampled_points=torch.tensor([-1, 3]))
    with pytest.raises(ValueError, match='`position_encoding_type` must be one of'):
        PerceiverBasicDecoder(configs()[0], 6, position_encoding_type='learned')
    no_dims = PerceiverBasicDecoder(configs()[0], 6, position_encoding_type='fourier', num_channels=10, **fourier(3, 7))
    with pytest.raises(ValueError, match='needs the decoder to know its `output_index_dims`'):
        no_dims.decoder_query(x, subsampled_points=torch.tensor([1]))
    wrong_rank = PerceiverBasicDecoder(configs()[0], 6, position_encoding_type='fourier', output_index_dims=(21,),
                                       num_channels=10, **fourier(3, 7))
    with pytest.raises(ValueError, match=r'2-D `max_resolution`, but the output grid \(21,\) has 1 dimensions'):
        wrong_rank.decoder_query(x, subsampled_points=torch.tensor([1]))
    with pytest.raises(ValueError, match='must be divisible'):
        PerceiverBasicDecoder(configs()[0], 6, num_channels=10, num_heads=5, **trainable(3, 10))


def test_abstract_decoder_contract():
    with pytest.raises(TypeError, match='abstract'): PerceiverAbstractDecoder()
    for cls in (PerceiverBasicDecoder, PerceiverProjectionDecoder, PerceiverClassificationDecoder):
        assert issubclass(cls, PerceiverAbstractDecoder) and not cls.__abstractmethods__


CLS_CASES = [
    ('released-shape', dict(num_channels=D, use_query_residual=True, **trainable(1, D))),
    ('heads-qk-v-widening', dict(num_channels=10, num_heads=2, qk_channels=8, v_channels=6, widening_factor=2, **trainable(1, 10))),
    ('projected-query', dict(num_channels=10, project_pos_dim=10, out_channels=7, **trainable(1, 7))),
    ('no-final-project', dict(num_channels=10, final_project=False, **trainable(1, 10))),
]


@pytest.mark.parametrize('name,kw', CLS_CASES, ids=[c[0] for c in CLS_CASES])
@pytest.mark.parametrize('batch', [1, 3])
def test_classification_decoder_parity(name, kw, batch):
    ours, theirs = pair(PerceiverClassificationDecoder, hf.PerceiverClassificationDecoder, {}, **kw)
    x, z = torch.randn(batch, 9, 4), torch.randn(batch, N, D)
    with torch.no_grad():
        q, q_hf = ours.decoder_query(x), theirs.decoder_query(x)
        r, r_hf = ours(q, z, output_attentions=True), theirs(q_hf, z, output_attentions=True)
    assert maxdiff(q, q_hf) < TOL and r.logits.shape == r_hf.logits.shape
    assert r.logits.shape == (batch, 3 if kw.get('final_project', True) else kw['num_channels'])
    assert maxdiff(r.logits, r_hf.logits) < TOL
    assert maxdiff(r.cross_attentions[0], r_hf.cross_attentions[0]) < TOL
    assert ours.num_query_channels == theirs.num_query_channels


def test_classification_decoder_fourier_subsampled_single_point():
    "A Fourier classification query decoded at point 0: transformers fails on its int grid (1), ours works."
    ours, theirs = pair(PerceiverClassificationDecoder, hf.PerceiverClassificationDecoder, {},
                        position_encoding_type='fourier', num_channels=5, **fourier(1))
    x, z = torch.randn(2, 9, 4), torch.randn(2, N, D)
    with pytest.raises(IndexError): theirs.decoder_query(x, subsampled_points=torch.tensor([0]))
    q = ours.decoder_query(x, subsampled_points=torch.tensor([0]))
    assert q.shape == (2, 1, 5) and ours(q, z).logits.shape == (2, 3)


def test_classification_decoder_bad_inputs():
    ours, _ = pair(PerceiverClassificationDecoder, hf.PerceiverClassificationDecoder, {}, num_channels=10, **trainable(1, 10))
    z = torch.randn(2, N, D)
    with pytest.raises(ValueError, match=r'`query` must have shape \(\*, 1, \*\), got \(2, 4, 10\)'): ours(torch.randn(2, 4, 10), z)
    with pytest.raises(ValueError, match='`z` must have shape'): ours(torch.randn(2, 1, 10), z[..., :-1])
    with pytest.raises(ValueError, match=r"sets \['output_num_channels'\] itself"):
        PerceiverClassificationDecoder(configs()[0], output_num_channels=4, **trainable(1, 10))


class _CompletedHFProjectionDecoder(hf.PerceiverProjectionDecoder):
    "transformers' projection decoder with the abstract property it lacks, so that it can be built at all."
    num_query_channels = property(lambda self: self.classifier.out_features)


def test_projection_decoder_parity_and_model_use():
    with pytest.raises(TypeError, match='num_query_channels'): hf.PerceiverProjectionDecoder(configs()[1])
    ours, theirs = pair(PerceiverProjectionDecoder, _CompletedHFProjectionDecoder, {})
    z = torch.randn(3, N, D)
    assert ours.decoder_query(torch.randn(3, 9, 4)) is None and ours.num_query_channels == 3
    out = ours(None, z, output_attentions=True)
    assert out.cross_attentions is None and out.logits.shape == (3, 3)
    assert maxdiff(out.logits, theirs(None, z)) < TOL
    with pytest.raises(ValueError, match=r'`z` must have shape \(B, N, 12\)'): ours(None, z[..., :-1])
    with pytest.raises(ValueError, match='`z` must have 3 dimensions'): ours(None, z[0])
    # it works as the decoder of a Perceiver model (transformers' model here)
    cfg = HFConfig(num_latents=N, d_latents=D, d_model=7, num_self_attends_per_block=1, num_self_attention_heads=2,
                   num_cross_attention_heads=1, num_labels=3)
    model = HFPerceiverModel(cfg, decoder=PerceiverProjectionDecoder(configs()[0])).eval()
    res = model(torch.randn(2, 9, 7), output_attentions=True)
    assert res.logits.shape == (2, 3) and len(res.cross_attentions) == 1


# -- postprocessors ---------------------------------------------------------------------------------------------

def post_pair(ours_cls, hf_cls, *args, cfg_kw=None, **kw):
    ours_cfg, hf_cfg = configs(**(cfg_kw or {}))
    needs_cfg = ours_cls not in (PerceiverProjectionPostprocessor,)
    a = ((ours_cfg,) if needs_cfg else ()) + args
    b = ((hf_cfg,) if needs_cfg else ()) + args
    torch.manual_seed(0)
    theirs = hf_cls(*b, **kw)
    ours = ours_cls(*a, **kw)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    hf_cls(*b, **kw).load_state_dict(ours.state_dict(), strict=True)
    return ours, theirs


@pytest.mark.parametrize('shape', [(2, 7, 10), (1, 1, 10), (3, 4, 10)])
def test_simple_postprocessors_parity(shape):
    y = torch.randn(shape)
    cls, cls_hf = post_pair(PerceiverClassificationPostprocessor, hf.PerceiverClassificationPostprocessor, 10)
    aud, aud_hf = post_pair(PerceiverAudioPostprocessor, hf.PerceiverAudioPostprocessor, 10, cfg_kw=dict(samples_per_patch=6))
    prj, prj_hf = post_pair(PerceiverProjectionPostprocessor, hf.PerceiverProjectionPostprocessor, 10, 3)
    with torch.no_grad():
        assert cls(y).shape == (shape[0], 3) and maxdiff(cls(y), cls_hf(y)) < TOL
        assert aud(y).shape == (shape[0], shape[1] * 6) and maxdiff(aud(y), aud_hf(y)) < TOL
        assert prj(y).shape == shape[:2] + (3,) and maxdiff(prj(y), prj_hf(y)) < TOL
    assert [k for k in cls.state_dict()] == ['classifier.weight', 'classifier.bias']


def test_postprocessors_bad_inputs():
    cls, _ = post_pair(PerceiverClassificationPostprocessor, hf.PerceiverClassificationPostprocessor, 10)
    aud, _ = post_pair(PerceiverAudioPostprocessor, hf.PerceiverAudioPostprocessor, 10)
    prj, _ = post_pair(PerceiverProjectionPostprocessor, hf.PerceiverProjectionPostprocessor, 10, 3)
    with pytest.raises(ValueError, match=r'`inputs` must have shape \(B, O, 10\), got \(2, 7, 9\)'): cls(torch.randn(2, 7, 9))
    with pytest.raises(ValueError, match='`inputs` must have 3 dimensions'): aud(torch.randn(2, 10))
    with pytest.raises(ValueError, match='`inputs` must have shape'): prj(torch.randn(2, 7, 9))
    with pytest.raises(ValueError, match="`postproc_type` must be 'patches'"): PerceiverAudioPostprocessor(configs()[0], 10, 'pixels')
    with pytest.raises(ValueError): hf.PerceiverAudioPostprocessor(configs()[1], 10, 'pixels')


def test_restructure_matches_transformers():
    y = torch.randn(2, 9, 4)
    for sizes in ({'label': 1, 'image': 5, 'audio': 3}, {'audio': 3, 'image': 5, 'label': 1}, {'b': 4, 'a': 5}):
        ours, theirs = restructure(sizes, y), hf.restructure(sizes, y)
        assert list(ours) == sorted(sizes) == list(theirs)
        assert all(torch.equal(ours[k], theirs[k]) for k in sizes)
    with pytest.raises(ValueError, match='add up to 8 rows, but `inputs` has 9'): restructure({'a': 3, 'b': 5}, y)


@pytest.mark.parametrize('order', [('audio', 'image', 'label'), ('label', 'audio', 'image')])
def test_multimodal_postprocessor_parity(order):
    ours_cfg, hf_cfg = configs(samples_per_patch=4)
    make = lambda ns, c: {'audio': ns.PerceiverAudioPostprocessor(c, in_channels=10),
                          'image': ns.PerceiverProjectionPostprocessor(10, 3),
                          'label': ns.PerceiverClassificationPostprocessor(c, in_channels=10)}
    import perceiver_nb.postprocessors as ns_ours
    theirs = hf.PerceiverMultimodalPostprocessor({k: make(hf, hf_cfg)[k] for k in order})
    ours = PerceiverMultimodalPostprocessor({k: make(ns_ours, ours_cfg)[k] for k in order})
    ours.load_state_dict(theirs.state_dict(), strict=True)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    sizes = {'image': 5, 'label': 1, 'audio': 3}
    y = torch.randn(2, 9, 10)
    with torch.no_grad(): a, b = ours(y, modality_sizes=sizes), theirs(y, modality_sizes=sizes)
    assert list(a) == list(b) == list(order)
    assert a['audio'].shape == (2, 12) and a['image'].shape == (2, 5, 3) and a['label'].shape == (2, 3)
    assert all(maxdiff(a[k], b[k]) < TOL for k in a)
    with pytest.raises(ValueError, match='`modality_sizes` is required'): ours(y)
    as_dict = PerceiverMultimodalPostprocessor(ours.modalities, input_is_dict=True)
    split = restructure(sizes, y)
    assert all(torch.equal(as_dict(split)[k], a[k]) for k in a)
    with pytest.raises(ValueError, match=r"no entry for the modalities \['label'\]"):
        as_dict({k: v for k, v in split.items() if k != 'label'})


@pytest.mark.parametrize('shape', [(2, 7, 16), (1, 3, 16)])
def test_embedding_decoder_parity(shape):
    ours, theirs = post_pair(PerceiverEmbeddingDecoder, hf.PerceiverEmbeddingDecoder, cfg_kw=dict(vocab_size=30))
    with torch.no_grad(): theirs.bias.normal_(); ours.load_state_dict(theirs.state_dict(), strict=True)
    assert list(ours.state_dict()) == ['bias'] and torch.equal(PerceiverEmbeddingDecoder(configs(vocab_size=30)[0]).bias, torch.zeros(30))
    emb, h = nn.Embedding(30, 16), torch.randn(shape)
    with torch.no_grad(): a, b = ours(h, emb), theirs(h, emb)
    assert a.shape == shape[:2] + (30,) and maxdiff(a, b) < TOL
    with pytest.raises(ValueError, match=r'`embedding_layer.weight` must have shape \(30, C\), got \(31, 16\)'): ours(h, nn.Embedding(31, 16))
    with pytest.raises(ValueError, match=r'`hidden_states` must have shape \(B, O, 16\)'): ours(h[..., :8], emb)
