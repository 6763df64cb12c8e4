"""Optical flow against transformers, and the flow utilities.

The decoder and `PerceiverForOpticalFlow` are built by transformers from small random configurations, saved with
`save_pretrained` and loaded into ours (and back); flow, hidden states and attention maps agree within 1e-4 in
float32. Nothing is downloaded.
"""
import random

import pytest
import torch
import transformers
import transformers.models.perceiver.modeling_perceiver as hf

from perceiver_nb.config import PerceiverConfig
from perceiver_nb.decoders.flow import PerceiverOpticalFlowDecoder

transformers.utils.logging.disable_progress_bar()
# See tests/test_position.py: warm up sin/cos once so the first large call is not the one compared.
_warm = torch.linspace(-5e4, 5e4, 1 << 16)
torch.sin(_warm), torch.cos(_warm)

TOL = 1e-4


def maxdiff(a, b): return (a - b).abs().max().item()


# ---------------------------------------------------------------------------------------------------------------
# The decoder

def decoder_kwargs(rng: random.Random, E: int, H: int, W: int) -> dict:
    heads = rng.choice([1, 2])
    qk = rng.choice([None, 4 * heads, 8 * heads])
    return dict(num_channels=E, num_heads=heads if qk else 1, qk_channels=qk, v_channels=None if qk is None else 6 * heads,
                widening_factor=rng.choice([1, 2]), use_query_residual=rng.choice([True, False]),
                position_encoding_type='fourier',
                fourier_position_encoding_kwargs=dict(num_bands=2, max_resolution=(H, W), concat_pos=True, sine_only=False))


@pytest.mark.parametrize('seed', range(4))
def test_decoder_parity(seed):
    rng = random.Random(seed)
    B, H, W, E, N, D = rng.choice([1, 3]), rng.choice([3, 5]), rng.choice([4, 7]), rng.choice([6, 10]), 5, 12
    kw = decoder_kwargs(rng, E, H, W)
    rescale, channels = rng.choice([100.0, 7.0]), rng.choice([2, 3])
    shape_kw = dict(output_image_shape=(H, W), output_num_channels=channels, rescale_factor=rescale)
    cfg_kw = dict(d_latents=D, attention_probs_dropout_prob=0.0, cross_attention_shape_for_attention=rng.choice(['kv', 'q']))
    torch.manual_seed(seed)
    theirs = hf.PerceiverOpticalFlowDecoder(transformers.PerceiverConfig(**cfg_kw), **shape_kw, **kw).eval()
    ours = PerceiverOpticalFlowDecoder(PerceiverConfig(**cfg_kw), **shape_kw, **kw).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    hf.PerceiverOpticalFlowDecoder(transformers.PerceiverConfig(**cfg_kw), **shape_kw, **kw).load_state_dict(
        ours.state_dict(), strict=True)
    x, z = torch.randn(B, H * W, E), torch.randn(B, N, D)
    assert ours.num_query_channels == theirs.num_query_channels == channels
    for attn in (False, True):
        with torch.no_grad():
            a = ours(ours.decoder_query(x), z, output_attentions=attn)
            b = theirs(theirs.decoder_query(x), z, output_attentions=attn)
        assert a.logits.shape == b.logits.shape == (B, H, W, channels)
        assert maxdiff(a.logits, b.logits) <= TOL
        if attn: assert maxdiff(a.cross_attentions[0], b.cross_attentions[0]) <= TOL
        else: assert a.cross_attentions is None and b.cross_attentions is None


def test_decoder_bad_inputs():
    kw = dict(num_channels=6, position_encoding_type='fourier',
              fourier_position_encoding_kwargs=dict(num_bands=2, max_resolution=(3, 4)))
    cfg = PerceiverConfig(d_latents=8)
    dec = PerceiverOpticalFlowDecoder(cfg, output_image_shape=(3, 4), **kw)
    x, z = torch.randn(2, 12, 6), torch.randn(2, 5, 8)
    with pytest.raises(ValueError, match=r'`query` must have shape \(B, 12, \*\), got \(2, 11, 6\)'): dec(x[:, :-1], z)
    with pytest.raises(ValueError, match=r'`z` must have shape \(B, N, 8\)'): dec(x, z[..., :-1])
    with pytest.raises(ValueError, match=r'`query` must have shape \(B, O, 6\)'): dec(x[..., :-1], z)
    with pytest.raises(ValueError, match='`subsampled_points` must be None'): dec.decoder_query(x, subsampled_points=torch.arange(2))
    with pytest.raises(ValueError, match=r'`inputs` must have 3 dimensions'): dec.decoder_query(x[0])
    for bad in [(3, 0), (3.5, 4), (), (True, 4)]:
        with pytest.raises(ValueError, match='`output_image_shape` must be a sequence of positive ints'):
            PerceiverOpticalFlowDecoder(cfg, output_image_shape=bad, **kw)
    with pytest.raises(ValueError, match='`rescale_factor` must be non-zero'):
        PerceiverOpticalFlowDecoder(cfg, output_image_shape=(3, 4), rescale_factor=0, **kw)
    with pytest.raises(ValueError, match='needs `trainable_position_encoding_kwargs`'):  # transformers' default type
        PerceiverOpticalFlowDecoder(cfg, output_image_shape=(3, 4), num_channels=6)
