"""Equivalence of the attention, layer and encoder modules with transformers' Perceiver on random small configurations.

Each case builds the transformers module with random weights, loads its state dict into ours with strict=True, and
compares outputs, intermediate latents and attention maps (float32, eval mode, 1e-5), for the explicit path
(output_attentions=True) and the fused one. Masks are given to transformers the way its PerceiverModel builds them
(additive (B, 1, N, M)) and to ours as a (B, M) padding mask (bool, 0/1 int, 0/1 float) and as the additive mask.
"""
import math, random, zlib

import pytest
import torch
from transformers import PerceiverConfig as HFConfig
from transformers.masking_utils import create_bidirectional_mask
from transformers.models.perceiver import modeling_perceiver as hf

from perceiver_nb.config import PerceiverConfig
from perceiver_nb.attention import PerceiverAttention, PerceiverSelfAttention, additive_attention_mask
from perceiver_nb.layers import PerceiverLayer
from perceiver_nb.encoder import PerceiverEmbeddings, PerceiverEncoder

TOL = 1e-5

# Hand-picked cases: each names the feature it is there for.
HAND_PICKED = {
    'defaults_kv': dict(num_latents=4, d_latents=8, d_model=6, num_blocks=1, num_self_attends_per_block=1,
                        num_self_attention_heads=2, num_cross_attention_heads=1),
    'qk_ne_v_heads': dict(num_latents=6, d_latents=12, d_model=5, num_blocks=2, num_self_attends_per_block=2,
                          num_self_attention_heads=4, num_cross_attention_heads=2, qk_channels=8, v_channels=12),
    'shape_q_widen': dict(num_latents=5, d_latents=8, d_model=7, num_blocks=3, num_self_attends_per_block=1,
                          num_self_attention_heads=2, num_cross_attention_heads=4, cross_attention_shape_for_attention='q',
                          cross_attention_widening_factor=3, self_attention_widening_factor=2),
    'chunked_ff': dict(num_latents=6, d_latents=8, d_model=4, num_blocks=2, num_self_attends_per_block=2,
                       num_self_attention_heads=2, num_cross_attention_heads=2, chunk_size_feed_forward=2),
    'no_query_residual': dict(num_latents=3, d_latents=6, d_model=6, num_blocks=1, num_self_attends_per_block=2,
                              num_self_attention_heads=3, num_cross_attention_heads=1, use_query_residual=False),
}


def _random_config(seed: int) -> dict:
    "A random small valid configuration (transformers' constraints: heads divide every width, self-attention v = D)."
    rng = random.Random(seed)
    h_cross, h_self = rng.choice([1, 2]), rng.choice([1, 2, 4])
    lcm = h_cross * h_self // math.gcd(h_cross, h_self)
    D = lcm * rng.choice([2, 3, 4]) if lcm > 1 else rng.choice([6, 8])
    N = rng.choice([3, 4, 6])
    shape_for = rng.choice(['kv', 'q'])
    qk = rng.choice([None, lcm * rng.choice([1, 2])])
    v = None if qk is None else D  # self-attention output must be D wide
    C = h_cross * rng.choice([2, 3]) + (rng.choice([0, 1]) if (qk is not None or shape_for == 'q') else 0)
    return dict(num_latents=N, d_latents=D, d_model=C, num_blocks=rng.choice([1, 2, 3]),
                num_self_attends_per_block=rng.choice([1, 2]), num_self_attention_heads=h_self,
                num_cross_attention_heads=h_cross, qk_channels=qk, v_channels=v,
                cross_attention_shape_for_attention=shape_for,
                cross_attention_widening_factor=rng.choice([1, 2, 3]), self_attention_widening_factor=rng.choice([1, 2]),
                use_query_residual=rng.choice([True, True, False]),
                chunk_size_feed_forward=rng.choice([0, 0] + [c for c in (1, 2, 3) if N % c == 0]))


CASES = {**HAND_PICKED, **{f'random_{s}': _random_config(s) for s in range(8)}}


def _hf_additive_mask(padding: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    "The encoder mask exactly as transformers' PerceiverModel builds it: additive float (B, 1, N, M)."
    cfg = HFConfig(); cfg._attn_implementation = 'eager'
    m = create_bidirectional_mask(config=cfg, inputs_embeds=latents, attention_mask=padding)
    return m if m is not None else torch.zeros(padding.shape[0], 1, latents.shape[1], padding.shape[1])


def _padding(B: int, M: int, gen: torch.Generator) -> torch.Tensor:
    "A (B, M) 0/1 padding mask: random lengths, the last example fully padded when B > 2."
    lengths = torch.randint(1, M + 1, (B,), generator=gen)
    if B > 2: lengths[-1] = 0
    return (torch.arange(M)[None] < lengths[:, None]).long()


def _close(a, b, what):
    assert a.shape == b.shape, f'{what}: shape {tuple(a.shape)} vs {tuple(b.shape)}'
    err = (a - b).abs().max().item()
    assert err <= TOL, f'{what}: max abs diff {err:.3g} > {TOL}'


def _pair_encoder(kw):
    theirs = hf.PerceiverEncoder(HFConfig(**kw), kv_dim=kw['d_model']).eval()
    ours = PerceiverEncoder(PerceiverConfig(**kw), kv_dim=kw['d_model']).eval()
    assert set(ours.state_dict()) == set(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return theirs, ours


@pytest.mark.parametrize('name', list(CASES))
@torch.no_grad()
def test_encoder_matches_transformers(name):
    kw = CASES[name]
    gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    torch.manual_seed(zlib.crc32(name.encode()))
    theirs, ours = _pair_encoder(kw)
    B, M = 3, 7
    emb_t = hf.PerceiverEmbeddings(HFConfig(**kw)); emb_o = PerceiverEmbeddings(PerceiverConfig(**kw))
    emb_o.load_state_dict(emb_t.state_dict(), strict=True)
    z = emb_o(B)
    _close(z, emb_t(B), 'latents')
    x = torch.randn(B, M, kw['d_model'], generator=gen)
    pad = _padding(B, M, gen)
    hf_mask = _hf_additive_mask(pad, z)
    flags = dict(output_attentions=True, output_hidden_states=True)
    ref = theirs(z, inputs=x, inputs_mask=hf_mask, **flags)
    L, R = kw['num_self_attends_per_block'], kw['num_blocks']
    assert len(ref.hidden_states) == R * (L + 1) and len(ref.attentions) == R * L and len(ref.cross_attentions) == 1
    for mask in (pad.bool(), pad, pad.float(), hf_mask):
        out = ours(z, inputs=x, inputs_mask=mask, **flags)
        _close(out.last_hidden_state, ref.last_hidden_state, f'{name} last_hidden_state ({mask.dtype})')
        for field in ('hidden_states', 'attentions', 'cross_attentions'):
            mine, theirs_ = getattr(out, field), getattr(ref, field)
            assert len(mine) == len(theirs_), field
            for i, (a, b) in enumerate(zip(mine, theirs_)): _close(a, b, f'{name} {field}[{i}]')
        fused = ours(z, inputs=x, inputs_mask=mask)
        _close(fused.last_hidden_state, ref.last_hidden_state, f'{name} fused path')
        assert fused.hidden_states is None and fused.attentions is None and fused.cross_attentions is None
    assert not out.last_hidden_state.isnan().any()
    # a fully padded example attends uniformly, like transformers
    cross = out.cross_attentions[0][-1]
    torch.testing.assert_close(cross, torch.full_like(cross, 1 / M), rtol=0, atol=1e-6)
    # tuple form: same order and length as transformers'
    tup = ours(z, inputs=x, inputs_mask=pad, return_dict=False, **flags)
    ref_tup = theirs(z, inputs=x, inputs_mask=hf_mask, return_dict=False, **flags)
    assert len(tup) == len(ref_tup) == 4
    assert len(ours(z, inputs=x, return_dict=False)) == len(theirs(z, inputs=x, return_dict=False)) == 1


@pytest.mark.parametrize('name', ['qk_ne_v_heads', 'random_3'])
@torch.no_grad()
def test_encoder_without_mask_and_self_attention_mask(name):
    "No mask at all, and the encoder's `attention_mask` (a self-attention mask over the latents, passed on like transformers)."
    kw = CASES[name]
    theirs, ours = _pair_encoder(kw)
    B, N, M = 2, kw['num_latents'], 5
    z, x = torch.randn(B, N, kw['d_latents']), torch.randn(B, M, kw['d_model'])
    _close(ours(z, inputs=x).last_hidden_state, theirs(z, inputs=x).last_hidden_state, 'no mask')
    lat_pad = torch.ones(B, N, dtype=torch.long); lat_pad[0, -1] = 0
    lat_mask = _hf_additive_mask(lat_pad, z)
    ref = theirs(z, attention_mask=lat_mask, inputs=x, output_attentions=True)
    out = ours(z, attention_mask=lat_pad.bool(), inputs=x, output_attentions=True)
    _close(out.last_hidden_state, ref.last_hidden_state, 'latent mask')
    for a, b in zip(out.attentions, ref.attentions): _close(a, b, 'latent mask attentions')
    _close(ours(z, attention_mask=lat_pad, inputs=x).last_hidden_state, ref.last_hidden_state, 'latent mask, fused')


DECODER_LIKE = [  # cross-attention from O queries of width E to the N×D latents, as the decoders use it
    dict(q_dim=10, kv_dim=8, qk_channels=8, v_channels=10, num_heads=2, widening_factor=1, use_query_residual=False),
    dict(q_dim=6, kv_dim=12, qk_channels=None, v_channels=None, num_heads=3, widening_factor=2, use_query_residual=True),
    dict(q_dim=9, kv_dim=4, qk_channels=None, v_channels=6, num_heads=1, widening_factor=3, use_query_residual=True),
]


@pytest.mark.parametrize('shape_for', ['kv', 'q'])
@pytest.mark.parametrize('i', range(len(DECODER_LIKE)))
@torch.no_grad()
def test_cross_layer_matches_transformers(i, shape_for):
    kw = DECODER_LIKE[i]
    cfg_kw = dict(cross_attention_shape_for_attention=shape_for)
    theirs = hf.PerceiverLayer(HFConfig(**cfg_kw), is_cross_attention=True, **kw).eval()
    ours = PerceiverLayer(PerceiverConfig(**cfg_kw), is_cross_attention=True, **kw).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    q, z = torch.randn(2, 11, kw['q_dim']), torch.randn(2, 4, kw['kv_dim'])  # B=2, O=11, N=4
    ref, ref_p = theirs(q, inputs=z, output_attentions=True)
    out, out_p = ours(q, inputs=z, output_attentions=True)
    _close(out, ref, 'layer output'); _close(out_p, ref_p, 'layer probabilities')
    _close(ours(q, inputs=z)[0], ref, 'layer fused')


@pytest.mark.parametrize('chunk', [1, 2, 4, 5, 100])
@torch.no_grad()
def test_chunked_feed_forward_any_chunk_size(chunk):
    "Chunks need not divide the sequence (transformers requires it); the result is unchanged."
    kw = dict(qk_channels=8, v_channels=8, num_heads=2, q_dim=8, kv_dim=8, widening_factor=2)
    theirs = hf.PerceiverLayer(HFConfig(), **kw).eval()
    ours = PerceiverLayer(PerceiverConfig(chunk_size_feed_forward=chunk), **kw).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    h = torch.randn(3, 7, 8)
    _close(ours(h)[0], theirs(h)[0], f'chunk {chunk}')


@torch.no_grad()
def test_float64():
    kw = CASES['qk_ne_v_heads']
    theirs, ours = _pair_encoder(kw)
    theirs.double(); ours.double()
    z, x = torch.randn(2, kw['num_latents'], kw['d_latents'], dtype=torch.float64), torch.randn(2, 5, kw['d_model'], dtype=torch.float64)
    pad = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    hf_mask = (1.0 - pad[:, None, None, :].double()) * torch.finfo(torch.float64).min
    ref = theirs(z, inputs=x, inputs_mask=hf_mask).last_hidden_state
    for out in (ours(z, inputs=x, inputs_mask=pad).last_hidden_state,
                ours(z, inputs=x, inputs_mask=pad, output_attentions=True).last_hidden_state):
        assert out.dtype == torch.float64
        assert (out - ref).abs().max().item() < 1e-12


def test_training_mode_dropout():
    "In training, dropout acts on the probabilities in both paths; outputs stay finite and differ from eval."
    kw = CASES['qk_ne_v_heads']
    enc = PerceiverEncoder(PerceiverConfig(**kw, attention_probs_dropout_prob=0.5)).train()
    z, x = torch.randn(2, kw['num_latents'], kw['d_latents']), torch.randn(2, 5, kw['d_model'])
    torch.manual_seed(0)
    out = enc(z, inputs=x, output_attentions=True)
    fused = enc(z, inputs=x).last_hidden_state
    assert (out.cross_attentions[0] == 0).any()
    assert torch.isfinite(fused).all() and torch.isfinite(out.last_hidden_state).all()
    with torch.no_grad(): evald = enc.eval()(z, inputs=x).last_hidden_state
    assert not torch.allclose(fused, evald)
    fused.sum().backward()
    assert enc.self_attends[0].attention.self.query.weight.grad is not None


# ---- errors name the argument, the expected and the actual value ----

def _xattn():
    return PerceiverAttention(PerceiverConfig(), is_cross_attention=True, qk_channels=4, v_channels=6, num_heads=2, q_dim=8, kv_dim=6)


@pytest.mark.parametrize('call, message', [
    (lambda m: m(torch.randn(5, 8), inputs=torch.randn(2, 7, 6)), r'`hidden_states` must have 3 dimensions \(B, N, 8\), got 2 dimensions with shape \(5, 8\)'),
    (lambda m: m(torch.randn(2, 5, 8), inputs=torch.randn(2, 3, 7, 6)), r'`inputs` must have 3 dimensions \(B, M, 6\), got 4 dimensions'),
    (lambda m: m(torch.randn(2, 5, 7), inputs=torch.randn(2, 7, 6)), r'`hidden_states` must have shape \(B, N, 8\), got \(2, 5, 7\)'),
    (lambda m: m(torch.randn(2, 5, 8), inputs=torch.randn(2, 7, 5)), r'`inputs` must have shape \(B, M, 6\), got \(2, 7, 5\)'),
    (lambda m: m(torch.randn(2, 5, 8), inputs=torch.randn(3, 7, 6)), r'`inputs` must have shape \(B, M, 6\) with B=2, got shape \(3, 7, 6\) \(B=3\)'),
    (lambda m: m(torch.randn(2, 5, 8)), r'cross-attention needs `inputs` of shape \(B, M, 6\), got None'),
    (lambda m: m(torch.randn(2, 5, 8), inputs=torch.randn(2, 7, 6), inputs_mask=torch.ones(2, 6)), r'`inputs_mask` must have shape \(B, M\) with M=7, got shape \(2, 6\) \(M=6\)'),
    (lambda m: m(torch.randn(2, 5, 8), inputs=torch.randn(2, 7, 6), inputs_mask=torch.ones(3, 7)), r'`inputs_mask` must have shape \(B, M\) with B=2'),
    (lambda m: m(torch.randn(2, 5, 8), inputs=torch.randn(2, 7, 6), inputs_mask=torch.ones(2, 5, 7)), r'`inputs_mask` must be a \(B, M\) = \(2, 7\) padding mask or a \(B, 1, N, M\) = \(2, 1, 5, 7\) additive mask, got 3 dimensions'),
    (lambda m: m(torch.randn(2, 5, 8), inputs=torch.randn(2, 7, 6), inputs_mask=torch.zeros(2, 1, 4, 7)), r'`inputs_mask` must broadcast to \(B, H, N, M\) = \(2, 2, 5, 7\), got shape \(2, 1, 4, 7\)'),
    (lambda m: m(torch.randn(2, 5, 8), inputs=torch.randn(2, 7, 6), inputs_mask=torch.full((2, 7), -1e9)), r'`inputs_mask` as a \(B, M\) padding mask must hold 0/1 or booleans'),
])
def test_attention_errors(call, message):
    with pytest.raises(ValueError, match=message): call(_xattn())


@pytest.mark.parametrize('build, message', [
    (lambda c: PerceiverSelfAttention(c, qk_channels=6, num_heads=4, q_dim=8), r'`qk_channels`=6 must be divisible by `num_heads`=4'),
    (lambda c: PerceiverSelfAttention(c, qk_channels=8, v_channels=6, num_heads=4, q_dim=8), r'`v_channels`=6 must be divisible by `num_heads`=4'),
    (lambda c: PerceiverAttention(c, is_cross_attention=True, num_heads=4, q_dim=8, kv_dim=6), r'`qk_channels`=6 must be divisible by `num_heads`=4'),
    (lambda c: PerceiverLayer(c, num_heads=3, q_dim=8, kv_dim=8), r'`qk_channels`=8 must be divisible by `num_heads`=3'),
    (lambda c: PerceiverLayer(c, qk_channels=4, q_dim=8), r'`v_channels`=4 equal to `q_dim`=8'),
    (lambda c: PerceiverSelfAttention(c, is_cross_attention=True, q_dim=8), r'cross-attention needs `kv_dim`'),
    (lambda c: PerceiverSelfAttention(c), r'`q_dim`'),
    (lambda c: PerceiverEncoder(PerceiverConfig(d_latents=12, num_self_attention_heads=8, num_cross_attention_heads=1)), r'`d_latents`=12 must be divisible by `num_self_attention_heads`=8'),
    (lambda c: PerceiverEncoder(PerceiverConfig(d_latents=12, num_self_attention_heads=4, num_cross_attention_heads=5)), r'`d_latents`=12 must be divisible by `num_cross_attention_heads`=5'),
    (lambda c: PerceiverEmbeddings(c)(0), r'`batch_size` must be a positive int, got 0'),
])
def test_construction_errors(build, message):
    with pytest.raises(ValueError, match=message): build(PerceiverConfig())


def test_encoder_input_errors():
    kw = CASES['defaults_kv']
    enc = PerceiverEncoder(PerceiverConfig(**kw)).eval()
    z = torch.randn(2, kw['num_latents'], kw['d_latents'])
    with pytest.raises(ValueError, match=r'`inputs` must have shape \(B, M, 6\), got \(2, 7, 5\)'): enc(z, inputs=torch.randn(2, 7, 5))
    with pytest.raises(ValueError, match=r'`inputs` must have 3 dimensions'): enc(z, inputs=torch.randn(7, 6))
    with pytest.raises(ValueError, match=r'`inputs` \(B, M, 6\) are required'): enc(z)


def test_additive_mask_matches_transformers_builder():
    pad = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])
    z = torch.zeros(3, 4, 8)
    ref = _hf_additive_mask(pad, z)
    for m in (pad, pad.bool(), pad.float(), ref, pad.bool()[:, None, None, :]):
        torch.testing.assert_close(additive_attention_mask(m, 3, 2, 4, 5).expand(3, 1, 4, 5), ref, rtol=0, atol=0)
    half = additive_attention_mask(pad, 3, 2, 4, 5, dtype=torch.float16)
    assert half.dtype == torch.float16 and half.min().item() == torch.finfo(torch.float16).min


@pytest.mark.parametrize('shape_for', ['kv', 'q'])
def test_blocks_take_explicit_settings_without_a_config(shape_for):
    # transformers' signatures take `config` first; ours also accept None with the settings passed by name
    settings = dict(attention_probs_dropout_prob=0.0, cross_attention_shape_for_attention=shape_for, hidden_act='gelu')
    sizes = dict(is_cross_attention=True, num_heads=2, q_dim=8, kv_dim=6, widening_factor=3)
    theirs = hf.PerceiverLayer(HFConfig(**settings), **sizes).eval()
    ours = PerceiverLayer(None, **sizes, **settings).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    z, x = torch.randn(2, 5, 8), torch.randn(2, 7, 6)
    with torch.no_grad(): assert (ours(z, inputs=x)[0] - theirs(z, inputs=x)[0]).abs().max() < TOL
    attn = PerceiverSelfAttention(None, q_dim=8, num_heads=2)
    assert attn.dropout.p == 0.1  # transformers' default without a config
    with pytest.raises(ValueError, match=r'`attention_probs_dropout_prob` must be a probability in \[0, 1\], got 1.5'):
        PerceiverAttention(None, q_dim=8, attention_probs_dropout_prob=1.5)
    with pytest.raises(ValueError, match=r"`cross_attention_shape_for_attention` must be one of \('kv', 'q'\), got 'x'"):
        PerceiverLayer(None, is_cross_attention=True, q_dim=8, kv_dim=6, cross_attention_shape_for_attention='x')
