"""PerceiverForMultimodalAutoencoding against transformers, `reconstruct` against transformers' chunk loop, and the demo.

Parity: transformers' model with random weights (std 0.1, outputs of order 1) saved with `save_pretrained`, loaded by
ours with `from_pretrained`, outputs compared on transformers' own subsampled calls (the only ones it can run), and
back. Tolerance 1e-4 absolute on every modality; measured gaps are about 2e-6.
"""
import math
import tempfile

import pytest
import torch
from perceiver_nb.core import num_threads
import transformers

from perceiver_nb.config import PerceiverConfig, RELEASED_CONFIGS
from perceiver_nb.tasks.multimodal import (PerceiverForMultimodalAutoencoding, reconstruct, autoencoding_loss,
                                           train_autoencoder, PAPER_LOSS_WEIGHTS)

transformers.utils.logging.disable_progress_bar()
TOL = 1e-4


def config(**kw) -> dict:
    return dict(num_latents=6, d_latents=16, d_model=8, num_blocks=1, num_self_attends_per_block=2, num_self_attention_heads=2,
                num_cross_attention_heads=1, num_labels=5, num_frames=2, audio_samples_per_frame=32, samples_per_patch=8,
                image_size=3, output_shape=[1, 2, 12, 12], output_num_channels=10, _label_trainable_num_channels=12,
                attention_probs_dropout_prob=0.0) | kw


CONFIGS = [  # (config fields, batch size)
    (config(), 2),
    (config(num_blocks=2, num_self_attends_per_block=1, num_cross_attention_heads=2, num_self_attention_heads=4, qk_channels=8, v_channels=16,
            num_labels=3, output_num_channels=6, _label_trainable_num_channels=7, samples_per_patch=4, audio_samples_per_frame=16), 3),
    (config(num_frames=3, output_shape=[1, 3, 8, 16], image_size=4, num_latents=9, d_latents=12, cross_attention_widening_factor=2,
            self_attention_widening_factor=3, _label_trainable_num_channels=400), 1),  # the label query is the widest here
]


def clip(cfg: dict, B: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    T, (H, W) = cfg['num_frames'], cfg['output_shape'][2:]
    return dict(image=torch.randn(B, T, 3, H, W, generator=g), audio=torch.randn(B, T * cfg['audio_samples_per_frame'], 1, generator=g),
                label=torch.zeros(B, cfg['num_labels']))


def random_pair(cfg: dict, seed: int = 0):
    "transformers' model with weights of std 0.1 and ours loaded from its checkpoint (and a transformers copy of ours)."
    theirs = transformers.PerceiverForMultimodalAutoencoding(transformers.PerceiverConfig(**cfg)).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if 'layernorm' not in name: p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    with tempfile.TemporaryDirectory() as d:
        theirs.save_pretrained(d)
        ours = PerceiverForMultimodalAutoencoding.from_pretrained(d).eval()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    with tempfile.TemporaryDirectory() as d:
        ours.save_pretrained(d)
        back = transformers.PerceiverForMultimodalAutoencoding.from_pretrained(d).eval()
    return ours, theirs, back


def gap(a: dict, b: dict) -> float:
    assert sorted(a) == sorted(b) and all(a[k].shape == b[k].shape for k in a), ({k: v.shape for k, v in a.items()}, {k: v.shape for k, v in b.items()})
    return max((a[k] - b[k]).abs().max().item() for k in a)


def hf_loop(model, inputs, nchunks: int) -> dict:
    "transformers' documented reconstruction: one forward pass per chunk, stitched."
    cfg = model.config
    image_chunk = math.prod(cfg.output_shape[1:]) // nchunks
    audio_chunk = inputs['audio'].shape[1] // cfg.samples_per_patch // nchunks
    outs = []
    with torch.no_grad():
        for k in range(nchunks):
            sub = {'image': torch.arange(image_chunk * k, image_chunk * (k + 1)),
                   'audio': torch.arange(audio_chunk * k, audio_chunk * (k + 1)), 'label': None}
            outs.append(model(inputs=inputs, subsampled_output_points=sub).logits)
    return dict(image=torch.cat([o['image'] for o in outs], 1), audio=torch.cat([o['audio'] for o in outs], 1), label=outs[-1]['label'])


@pytest.mark.parametrize('cfg,B', CONFIGS)
def test_matches_transformers_both_ways(cfg, B):
    ours, theirs, back = random_pair(cfg)
    x = clip(cfg, B)
    O_img, O_aud = math.prod(cfg['output_shape'][1:]), cfg['num_frames'] * cfg['audio_samples_per_frame'] // cfg['samples_per_patch']
    g = torch.Generator().manual_seed(3)
    for points in ({'image': torch.randperm(O_img, generator=g)[:17], 'audio': torch.randperm(O_aud, generator=g)[:3], 'label': None},
                   {'image': torch.arange(O_img), 'audio': torch.arange(O_aud), 'label': None}):
        with torch.no_grad():
            a = theirs(inputs=x, subsampled_output_points=points, output_attentions=True, output_hidden_states=True)
            b = ours(inputs=x, subsampled_output_points=points, output_attentions=True, output_hidden_states=True)
            c = back(inputs=x, subsampled_output_points=points).logits
        assert gap(a.logits, b.logits) <= TOL and gap(c, b.logits) <= TOL
        assert max(a.logits[k].abs().max().item() for k in a.logits) > 0.1  # outputs not all near zero
        for field in ('hidden_states', 'attentions', 'cross_attentions'):
            for u, v in zip(getattr(a, field), getattr(b, field), strict=True):
                assert (u - v).abs().max().item() <= TOL, field
    # our whole decode (no subsampling) equals transformers' all-points call, modality by modality
    with torch.no_grad(): assert gap(ours(inputs=x).logits, a.logits) <= TOL


@pytest.mark.parametrize('cfg,B', CONFIGS[:2])
@pytest.mark.parametrize('nchunks', [1, 4])
def test_reconstruct_equals_stitched_transformers_loop(cfg, B, nchunks):
    ours, theirs, _ = random_pair(cfg, seed=1)
    x = clip(cfg, B, seed=2)
    stitched = hf_loop(theirs, x, nchunks)
    T, (H, W) = cfg['num_frames'], cfg['output_shape'][2:]
    for chunk_size in (None, 1, 13, 10_000):
        rec = reconstruct(ours, x, chunk_size=chunk_size)
        assert rec['image'].shape == (B, T, 3, H, W) and rec['audio'].shape == x['audio'].shape and rec['label'].shape == (B, cfg['num_labels'])
        flat = dict(image=rec['image'].permute(0, 1, 3, 4, 2).reshape(B, -1, 3), audio=rec['audio'][..., 0], label=rec['label'])
        assert gap(flat, stitched) <= TOL, chunk_size


def test_released_config_parameter_count():
    name = 'deepmind/multimodal-perceiver'
    with torch.device('meta'):
        ours = PerceiverForMultimodalAutoencoding(PerceiverConfig(**RELEASED_CONFIGS[name]))
        theirs = transformers.PerceiverForMultimodalAutoencoding(transformers.PerceiverConfig(**RELEASED_CONFIGS[name]))
    assert ours.num_parameters() == sum(p.numel() for p in theirs.parameters()) == 19_858_855
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {k: tuple(v.shape) for k, v in theirs.state_dict().items()}


def test_one_frame_and_half_precision():
    cfg = config(num_frames=1, output_shape=[1, 1, 12, 12])
    model = PerceiverForMultimodalAutoencoding(PerceiverConfig(**cfg)).eval()
    x = clip(cfg, 2)
    assert reconstruct(model, x)['image'].shape == (2, 1, 3, 12, 12)
    theirs = transformers.PerceiverForMultimodalAutoencoding(transformers.PerceiverConfig(**cfg)).eval()
    with pytest.raises(Exception):  # transformers squeezes the single frame away
        theirs(inputs=x, subsampled_output_points={'image': torch.arange(4), 'audio': torch.arange(2), 'label': None})
    for dtype in (torch.bfloat16, torch.float16):
        m = PerceiverForMultimodalAutoencoding(PerceiverConfig(**config())).eval().to(dtype)
        x = clip(config(), 2)
        with torch.no_grad(): out = m(inputs=x, subsampled_output_points={'image': torch.arange(30)}).logits
        rec = reconstruct(m, x, chunk_size=64)
        for v in (*out.values(), *rec.values()): assert v.dtype == dtype and torch.isfinite(v).all()
        with torch.no_grad(): assert torch.isfinite(m(inputs=x, labels=torch.tensor([0, 4])).loss)


def test_loss_and_label_errors():
    model = PerceiverForMultimodalAutoencoding(PerceiverConfig(**config())).eval()
    x = clip(config(), 2)
    assert model.loss_weights == PAPER_LOSS_WEIGHTS
    out = model(inputs=x, labels=torch.tensor([0, 4], dtype=torch.int32))
    out.loss.backward()
    assert out.loss.ndim == 0 and all(p.grad is not None for p in model.perceiver.decoder.parameters())
    targets = model.autoencoding_targets(x, torch.tensor([0, 4]))
    model.zero_grad()
    assert torch.allclose(autoencoding_loss(out.logits, targets, model.loss_weights), out.loss)
    pts = {'image': torch.tensor([5, 0, 100]), 'audio': range(1, 3)}
    sub = model(inputs=x, subsampled_output_points=pts, labels=torch.tensor([1, 2]))
    t = model.autoencoding_targets(x, torch.tensor([1, 2]), pts)
    assert torch.equal(t['image'][:, 0], x['image'][:, 0, :, 0, 5]) and torch.equal(t['audio'], x['audio'][:, 8:24, 0])
    assert sub.logits['image'].shape == t['image'].shape and sub.logits['audio'].shape == t['audio'].shape
    bad = [(torch.tensor([0.5, 1.0]), TypeError, 'integer class ids'), (torch.tensor([[0, 1]]), ValueError, 'shape \\(B,\\) = \\(2,\\)'),
           (torch.tensor([0, 5]), ValueError, 'values must lie in \\[0, 5\\)'), (torch.tensor([-1, 0]), ValueError, 'got -1'),
           (torch.tensor([0, 1, 2]), ValueError, 'shape \\(B,\\)'), ([0, 1], TypeError, 'must be a tensor')]
    for labels, err, msg in bad:
        with pytest.raises(err, match=msg): model(inputs=x, labels=labels)
    with pytest.raises(ValueError, match='`targets\\[.image.\\]` must have the shape'):
        autoencoding_loss(out.logits, dict(targets, image=targets['image'][:, :3]))
    with pytest.raises(ValueError, match='`targets` has modalities'): autoencoding_loss({}, targets)
    with pytest.raises(TypeError, match='`inputs` must be a dict'): model(inputs=x['image'])
    with pytest.raises(ValueError, match='`chunk_size` must be a positive int'): reconstruct(model, x, chunk_size=0)
    with pytest.raises(ValueError, match="names modalities \\['video'\\]"): model(inputs=x, subsampled_output_points={'video': None})


def test_modality_names_come_from_the_decoder():
    "Renamed modalities flow through the model plumbing: nothing in the decoding path looks up 'audio' or 'image'."
    model = PerceiverForMultimodalAutoencoding(PerceiverConfig(**config())).eval()
    p = model.perceiver
    for module in (p.input_preprocessor.modalities, p.decoder.modalities, p.output_postprocessor.modalities):
        module['sound'] = module.pop('audio')
    for pd in (p.input_preprocessor.padding, p.input_preprocessor.mask, p.decoder.padding):
        if 'audio' in pd: pd['sound'] = pd.pop('audio')
    p.input_preprocessor.mask_probs = {('sound' if k == 'audio' else k): v for k, v in p.input_preprocessor.mask_probs.items()}
    x = clip(config(), 2)
    x['sound'] = x.pop('audio')
    with torch.no_grad(): out = model(inputs=x).logits
    assert list(out) == ['image', 'label', 'sound'] and out['sound'].shape == (2, 64)


@pytest.mark.parametrize('seed,threads', [(1, None), (2, None), (3, None), (4, None), (0, 1)],
                         ids=['seed1', 'seed2', 'seed3', 'seed4', 'seed0-threads1'])  # the page runs seed 0 as is
def test_demo_trains_for_other_seeds(seed, threads):
    "The page's thresholds hold for other seeds and thread counts (measured: accuracy 0.906-1.0, image 0.28-0.34, audio 0.03-0.16 of start)."
    torch.manual_seed(0)
    with num_threads(threads): _, history = train_autoencoder(seed=seed, progress=False)
    first, last = history[0], history[-1]
    assert last['accuracy'] >= 0.8, history
    assert last['audio_l1'] <= 0.5 * first['audio_l1'], history
    assert last['image_l1'] <= 0.6 * first['image_l1'], history
