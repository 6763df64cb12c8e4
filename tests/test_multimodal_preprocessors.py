"""The multimodal autoencoder's preprocessors against transformers' (5.24), their error contract, dtypes and the I/O helpers.

`PerceiverAudioPreprocessor`, `PerceiverOneHotPreprocessor` and `PerceiverMultimodalPreprocessor` are built from random
tiny configurations; weights go from ours into transformers' and back with `load_state_dict(strict=True)`, and the
outputs must agree (the operations are the same, in the same order: the differences seen are exactly 0). Random
masking is compared by seeding torch's generator identically before each call. Bad inputs are generated and must be
refused by our code with the argument named. Also: bfloat16/float16 keep their dtype, the WAV round trip, GIF frames.
"""
import io, math, random, wave

import numpy as np
import pytest
import torch
import transformers
import transformers.models.perceiver.modeling_perceiver as hf

from perceiver_nb.config import PerceiverConfig
from perceiver_nb.preprocessors.audio import PerceiverAudioPreprocessor, read_wav, write_wav, tone, spectrogram
from perceiver_nb.preprocessors.image import PerceiverImagePreprocessor
from perceiver_nb.preprocessors.multimodal import PerceiverMultimodalPreprocessor, save_gif, show_frames, _frames_uint8
from perceiver_nb.preprocessors.onehot import PerceiverOneHotPreprocessor
from perceiver_nb.postprocessors import restructure

# See tests/test_position.py: warm up sin/cos once so the first large call is not the one compared.
_warm = torch.linspace(-5e4, 5e4, 1 << 16)
torch.sin(_warm), torch.cos(_warm)

ATOL = 1e-6  # same operations in the same order; the largest difference measured is 0.0


def randomize(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters(): p.copy_(torch.randn(p.shape, generator=g))


def max_diff(got, want) -> float:
    if isinstance(got, dict): return max([0.0] + [max_diff(got[k], want[k]) for k in got])
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, want.shape, got.dtype, want.dtype)
    return (got - want).abs().max().item() if got.numel() else 0.0


# ----------------------------------------------------------------------------------------------------------- audio
def audio_spec(rng: random.Random, allow_unbatched: bool = True) -> tuple[dict, int]:
    "Random constructor kwargs of an audio preprocessor, and a number of patches it accepts."
    k, patches = rng.choice([1, 3, 4, 16]), rng.randint(1, 9)
    kw = dict(samples_per_patch=k, concat_or_add_pos=rng.choice(['concat', 'add']))
    if rng.random() < 0.5:
        c = rng.randint(1, 6)
        kw.update(position_encoding_type='trainable', trainable_position_encoding_kwargs=dict(index_dims=patches, num_channels=c))
        width = c
    else:
        bands, sine_only = rng.randint(1, 6), rng.random() < 0.3
        mu = rng.choice([patches * k, 2 * patches * k + 3, 30720])
        kw.update(fourier_position_encoding_kwargs=dict(num_bands=bands, max_resolution=(mu,), sine_only=sine_only,
                                                        concat_pos=not allow_unbatched or rng.random() < 0.8))
        width = bands * (1 if sine_only else 2) + (1 if kw['fourier_position_encoding_kwargs']['concat_pos'] else 0)
    if kw['concat_or_add_pos'] == 'add' or rng.random() < 0.3:  # project (add needs positions k wide)
        kw.update(out_channels=width, project_pos_dim=k if kw['concat_or_add_pos'] == 'add' else rng.randint(1, 5))
    return kw, patches


def _reference_works(kw) -> bool:
    # transformers' Fourier table without concat_pos is unbatched and its concatenation fails (see 05 and 11)
    return kw.get('fourier_position_encoding_kwargs', {}).get('concat_pos', True)


@pytest.mark.parametrize('seed', range(16))
def test_audio_equals_transformers_both_ways(seed):
    rng = random.Random(seed)
    kw, patches = audio_spec(rng)
    ours = PerceiverAudioPreprocessor(PerceiverConfig(), prep_type='patches', **kw)
    randomize(ours, seed)
    batch = rng.randint(1, 3)
    shape = (batch, patches * kw['samples_per_patch']) + ((1,) if rng.random() < 0.7 else ())
    x = torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    got = ours(x)
    assert got[0].shape == (batch, patches, ours.num_channels) and got[1] is None
    assert got[2].shape == (batch, patches, kw['samples_per_patch'])
    if not _reference_works(kw): return
    ref = hf.PerceiverAudioPreprocessor(transformers.PerceiverConfig(), prep_type='patches', **kw)
    ref.load_state_dict(ours.state_dict(), strict=True)
    want = ref(x)
    assert ours.num_channels == ref.num_channels
    assert max(max_diff(got[0], want[0]), max_diff(got[2], want[2])) <= ATOL
    back = PerceiverAudioPreprocessor(PerceiverConfig(), prep_type='patches', **kw)
    randomize(ref, seed + 100)
    back.load_state_dict(ref.state_dict(), strict=True)
    assert max_diff(back(x)[0], ref(x)[0]) <= ATOL


def test_audio_released_size_bit_for_bit():
    "30,720 samples, 16 per patch, 192 bands at max_resolution 30720: arguments up to ~48,000 rad."
    kw = dict(prep_type='patches', samples_per_patch=16, position_encoding_type='fourier',
              fourier_position_encoding_kwargs=dict(num_bands=192, max_resolution=(30720,), sine_only=False, concat_pos=True))
    ours = PerceiverAudioPreprocessor(PerceiverConfig(), **kw)
    ref = hf.PerceiverAudioPreprocessor(transformers.PerceiverConfig(), **kw)
    x = torch.rand(2, 30720, 1, generator=torch.Generator().manual_seed(0)) * 2 - 1
    got, want = ours(x), ref(x)
    assert got[0].shape == (2, 1920, 401) and ours.num_channels == ref.num_channels == 401
    assert max_diff(got[0], want[0]) == 0.0 and torch.equal(got[2], want[2])
    # and the table alone, against a float64 computation: float32 rounding of ~48,000 rad arguments is ~4e-3
    pos = torch.linspace(-1, 1, 1920, dtype=torch.float64)[:, None]
    exact = torch.sin(torch.pi * pos * torch.linspace(1, 15360, 192, dtype=torch.float64))
    assert (got[0][0, :, 17:17 + 192].double() - exact).abs().max() < 1e-2


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize('kind', ['fourier', 'trainable', 'projected add'])
def test_audio_keeps_dtype(dtype, kind):
    kws = {'fourier': dict(fourier_position_encoding_kwargs=dict(num_bands=4, max_resolution=(64,))),
           'trainable': dict(position_encoding_type='trainable', trainable_position_encoding_kwargs=dict(index_dims=4, num_channels=3)),
           'projected add': dict(concat_or_add_pos='add', out_channels=9, project_pos_dim=16,
                                 fourier_position_encoding_kwargs=dict(num_bands=4, max_resolution=(64,)))}
    prep = PerceiverAudioPreprocessor(PerceiverConfig(), samples_per_patch=16, **kws[kind])
    x = tone(torch.tensor([300., 900.]), 64, 8000)[..., None]
    ref32 = prep(x)[0]
    for module_dtype in (torch.float32, dtype):  # float32 weights, or weights in the input's dtype
        y = prep.to(module_dtype)(x.to(dtype))[0]
        assert y.dtype == dtype and torch.isfinite(y).all()
        assert (y.float() - ref32).abs().max() < 0.1
        prep.float()


AUDIO_BAD_INPUTS = [
    # (input, error type, message fragment)
    ([0.0] * 32, TypeError, '`inputs` must be a torch.Tensor'),
    (np.zeros((1, 32)), TypeError, '`inputs` must be a torch.Tensor'),
    *[(torch.zeros(2, 32, dtype=d), TypeError, f'got dtype {d}') for d in (torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool)],
    (torch.zeros(2, 32, dtype=torch.complex64), TypeError, 'must be a floating-point waveform'),
    *[(torch.zeros(2, 32, c), ValueError, f'`inputs` must be mono audio (B, S) or (B, S, 1), got shape (2, 32, {c})') for c in (2, 3, 6)],
    (torch.zeros(32), ValueError, '`inputs` must have 2 dimensions (B, S) or 3 dimensions (B, S, 1), got 1 dimensions'),
    (torch.zeros(2, 32, 1, 1), ValueError, 'got 4 dimensions with shape (2, 32, 1, 1)'),
    *[(torch.zeros(2, n, 1), ValueError, f'`inputs` has {n} samples') for n in (1, 15, 17, 33, 47)],
    (torch.zeros(2, 0, 1), ValueError, 'not a positive multiple of `samples_per_patch`=16; pad to 16'),
]


@pytest.mark.parametrize('bad,exc,fragment', AUDIO_BAD_INPUTS, ids=lambda v: None)
def test_audio_bad_inputs(bad, exc, fragment):
    prep = PerceiverAudioPreprocessor(PerceiverConfig(), samples_per_patch=16,
                                      fourier_position_encoding_kwargs=dict(num_bands=2, max_resolution=(64,)))
    with pytest.raises(exc) as e: prep(bad)
    assert fragment in str(e.value)


def test_audio_trainable_length_and_interpolation():
    prep = PerceiverAudioPreprocessor(PerceiverConfig(), samples_per_patch=8, position_encoding_type='trainable',
                                      trainable_position_encoding_kwargs=dict(index_dims=5, num_channels=3))
    assert prep(torch.zeros(2, 40))[0].shape == (2, 5, 11)
    for n in (8, 32, 48, 80):
        with pytest.raises(ValueError, match=rf'has 5 rows \(one per patch\) but `inputs` has {n} samples = {n // 8} patches.*pass 40 samples'):
            prep(torch.zeros(2, n))
    with pytest.raises(ValueError, match='interpolate_pos_encoding=True resizes 2-D tables'):
        prep(torch.zeros(2, 40), interpolate_pos_encoding=True)
    fourier = PerceiverAudioPreprocessor(PerceiverConfig(), samples_per_patch=8,
                                         fourier_position_encoding_kwargs=dict(num_bands=2, max_resolution=(40,)))
    assert torch.equal(fourier(torch.ones(1, 40), interpolate_pos_encoding=True)[0], fourier(torch.ones(1, 40))[0])


AUDIO_BAD_SETTINGS = [
    (dict(prep_type='conv'), "`prep_type` must be 'patches'"),
    (dict(prep_type='pixels'), "`prep_type` must be 'patches'"),
    (dict(concat_or_add_pos='sum'), '`concat_or_add_pos` must be one of'),
    *[(dict(samples_per_patch=v), f'`samples_per_patch` must be a positive int, got {v!r}') for v in (0, -4, 1.5, True, '16')],
    (dict(fourier_kwargs=dict(num_bands=2)), "unexpected keyword arguments ['fourier_kwargs']"),
    (dict(position_encoding_type='learned'), "`position_encoding_type` must be one of ['trainable', 'fourier'], got 'learned'"),
    (dict(fourier_position_encoding_kwargs=dict(num_bands=2, max_resolution=(8, 8))), 'audio positions are 1-D'),
    (dict(position_encoding_type='trainable', trainable_position_encoding_kwargs=dict(index_dims=(2, 3), num_channels=4)),
     'audio positions are 1-D'),
    (dict(project_pos_dim=4, out_channels=64, fourier_position_encoding_kwargs=dict(num_bands=2, max_resolution=(8,))),
     'project_pos_dim=4 projects from `out_channels`=64 channels, but the position encoding has 5'),
    (dict(concat_or_add_pos='add', samples_per_patch=16, fourier_position_encoding_kwargs=dict(num_bands=2, max_resolution=(8,))),
     "concat_or_add_pos='add' needs positions as wide as a patch: 5 position channels, `samples_per_patch`=16; set `project_pos_dim`=16"),
]


@pytest.mark.parametrize('kw,fragment', AUDIO_BAD_SETTINGS, ids=lambda v: None)
def test_audio_bad_settings(kw, fragment):
    kw = {'fourier_position_encoding_kwargs': dict(num_bands=2, max_resolution=(8,)), **kw}
    if 'trainable_position_encoding_kwargs' in kw or 'fourier_kwargs' in kw: kw.pop('fourier_position_encoding_kwargs')
    with pytest.raises(ValueError) as e: PerceiverAudioPreprocessor(PerceiverConfig(), **kw)
    assert fragment in str(e.value)


# ---------------------------------------------------------------------------------------------------------- one-hot
@pytest.mark.parametrize('seed', range(6))
def test_onehot_equals_transformers(seed):
    g = torch.Generator().manual_seed(seed)
    num_labels, batch = 1 + seed * 3, 1 + seed % 3
    ours = PerceiverOneHotPreprocessor(PerceiverConfig(num_labels=num_labels))
    ref = hf.PerceiverOneHotPreprocessor(transformers.PerceiverConfig(num_labels=num_labels))
    ids = torch.randint(num_labels, (batch,), generator=g)
    soft = torch.rand(batch, num_labels, generator=g).softmax(-1)
    for x in (torch.nn.functional.one_hot(ids, num_labels).float(), soft):
        got, want = ours(x), ref(x)
        assert max_diff(got[0], want[0]) == 0.0 and got[2] is got[0] and got[1] is None
    assert ours.num_channels == ref.num_channels == num_labels
    assert torch.equal(ours(ids)[0], ref(torch.nn.functional.one_hot(ids, num_labels).float())[0])
    assert ours(soft.double())[0].dtype == torch.float64 and ours(soft.bfloat16())[0].dtype == torch.bfloat16
    assert ours(torch.nn.functional.one_hot(ids, num_labels))[0].dtype == torch.float32  # integer one-hot converted
    assert ours(soft, interpolate_pos_encoding=True)[0].shape == (batch, 1, num_labels)
    with pytest.raises(TypeError, match='interpolate_pos_encoding'): ref(soft, interpolate_pos_encoding=True)


ONEHOT_BAD = [
    *[(torch.zeros(2, w), ValueError, f'got shape (2, {w})') for w in (0, 4, 6, 700)],
    (torch.zeros(2, 1, 5), ValueError, '`inputs` must have shape (B, 5)'),
    (torch.tensor(3), ValueError, '`inputs` must have shape (B, 5)'),
    *[(torch.tensor([0, v]), ValueError, f'`inputs` values must lie in [0, 5), got {v}') for v in (-1, 5, 7, 700)],
    (torch.tensor([1.0, 2.0]), TypeError, 'must be an integer tensor, got dtype torch.float32'),
    (torch.tensor([True, False]), TypeError, 'must be an integer tensor, got dtype torch.bool'),
    (torch.zeros(2, 5, dtype=torch.complex64), TypeError, 'must be real labels'),
    ([[0, 1, 0, 0, 0]], TypeError, '`inputs` must be a torch.Tensor'),
]


@pytest.mark.parametrize('bad,exc,fragment', ONEHOT_BAD, ids=lambda v: None)
def test_onehot_bad_inputs(bad, exc, fragment):
    with pytest.raises(exc) as e: PerceiverOneHotPreprocessor(PerceiverConfig(num_labels=5))(bad)
    assert fragment in str(e.value)


# ------------------------------------------------------------------------------------------------------- multimodal
def modality_specs(rng: random.Random, num_labels: int, batch: int):
    "Random modalities: {name: (ours factory, reference factory, input)} with random names."
    names = rng.sample(['audio', 'image', 'label', 'zeta', 'a_sound', 'Video', 'text2', 'b'], rng.randint(1, 4))
    g = torch.Generator().manual_seed(rng.randint(0, 10 ** 6))
    specs = {}
    for name in names:
        kind = rng.choice(['audio', 'video', 'image', 'label'])
        if kind == 'audio':
            kw, patches = audio_spec(rng, allow_unbatched=False)
            x = torch.rand(batch, patches * kw['samples_per_patch'], 1, generator=g) * 2 - 1
            specs[name] = (lambda c, kw=kw: PerceiverAudioPreprocessor(c, **kw),
                           lambda c, kw=kw: hf.PerceiverAudioPreprocessor(c, **kw), x)
        elif kind in ('video', 'image'):
            t, h, w, s = rng.randint(2, 3), rng.randint(1, 3), rng.randint(1, 3), rng.choice([1, 2])
            res = (t, h, w) if kind == 'video' else (h, w)
            kw = dict(prep_type='patches', spatial_downsample=s, temporal_downsample=1,
                      fourier_position_encoding_kwargs=dict(num_bands=rng.randint(1, 3), max_resolution=res))
            x = torch.rand((batch, t, 3, h * s, w * s) if kind == 'video' else (batch, 3, h * s, w * s), generator=g)
            specs[name] = (lambda c, kw=kw: PerceiverImagePreprocessor(c, **kw),
                           lambda c, kw=kw: hf.PerceiverImagePreprocessor(c, **kw), x)
        else:
            x = torch.nn.functional.one_hot(torch.randint(num_labels, (batch,), generator=g), num_labels).float()
            specs[name] = (PerceiverOneHotPreprocessor, hf.PerceiverOneHotPreprocessor, x)
    return specs


@pytest.mark.parametrize('seed', range(16))
def test_multimodal_equals_transformers_both_ways(seed):
    rng = random.Random(1000 + seed)
    num_labels, batch = rng.randint(2, 6), rng.randint(1, 3)
    specs = modality_specs(rng, num_labels, batch)
    probs = {n: rng.choice([0.0, 1.0, 0.5, 0.25]) for n in specs if rng.random() < 0.7}
    pad = rng.randint(0, 4)
    ours = PerceiverMultimodalPreprocessor({n: f(PerceiverConfig(num_labels=num_labels)) for n, (f, _, _) in specs.items()},
                                           mask_probs=probs, min_padding_size=pad)
    ref = hf.PerceiverMultimodalPreprocessor({n: f(transformers.PerceiverConfig(num_labels=num_labels)) for n, (_, f, _) in specs.items()},
                                             mask_probs=probs, min_padding_size=pad)
    randomize(ours, seed)
    ref.load_state_dict(ours.state_dict(), strict=True)
    assert ours.num_channels == ref.num_channels
    inputs = {n: x for n, (_, _, x) in specs.items()}
    for mode in ('eval', 'train'):  # transformers masks in both
        ours.train(mode == 'train'); ref.train(mode == 'train')
        for s in (0, 1):
            torch.manual_seed(s); got = ours(inputs)
            torch.manual_seed(s); want = ref(inputs)
            assert got[1] == want[1] and list(got[1]) == list(want[1])
            assert max_diff(got[0], want[0]) <= ATOL and max_diff(got[2], {k: want[2][k] for k in got[2]}) <= ATOL
    # splitting back: sorted-name order, each unmasked modality's rows followed by its padding vector
    parts = restructure(got[1], got[0])
    assert list(parts) == sorted(specs)
    for n, part in parts.items():
        if probs.get(n, 0.0) == 0.0:
            own = ours.modalities[n](inputs[n])[0]
            assert torch.equal(part[..., :own.shape[-1]], own)
        elif probs[n] == 1.0:
            assert torch.equal(part, ours.mask[n].expand_as(part))
    back = PerceiverMultimodalPreprocessor({n: f(PerceiverConfig(num_labels=num_labels)) for n, (f, _, _) in specs.items()},
                                           mask_probs=probs, min_padding_size=pad)
    randomize(ref, seed + 100)
    back.load_state_dict(ref.state_dict(), strict=True)
    torch.manual_seed(2); got = back(inputs)
    torch.manual_seed(2); want = ref(inputs)
    assert max_diff(got[0], want[0]) <= ATOL


def released_like(num_frames=2, side=8, samples=64, num_labels=5, probs=None):
    c = PerceiverConfig(num_labels=num_labels)
    prep = PerceiverMultimodalPreprocessor(dict(
        audio=PerceiverAudioPreprocessor(c, samples_per_patch=16, fourier_position_encoding_kwargs=dict(num_bands=4, max_resolution=(samples,))),
        image=PerceiverImagePreprocessor(c, prep_type='patches', spatial_downsample=4, temporal_downsample=1,
                                         fourier_position_encoding_kwargs=dict(num_bands=2, max_resolution=(num_frames, side // 4, side // 4))),
        label=PerceiverOneHotPreprocessor(c)), mask_probs=probs or dict(image=0.0, audio=0.0, label=1.0), min_padding_size=4)
    g = torch.Generator().manual_seed(0)
    inputs = dict(audio=torch.rand(2, samples, 1, generator=g) - 0.5, image=torch.rand(2, num_frames, 3, side, side, generator=g),
                  label=torch.nn.functional.one_hot(torch.tensor([1, 3]), num_labels).float())
    return prep, inputs


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_multimodal_half_precision_keeps_dtype(dtype):
    prep, inputs = released_like(probs=dict(image=0.0, audio=0.5, label=1.0))
    torch.manual_seed(0); ref32 = prep(inputs)[0]
    half_inputs = {k: v.to(dtype) for k, v in inputs.items()}
    for module_dtype in (dtype, torch.float32):
        torch.manual_seed(0); y = prep.to(module_dtype)(half_inputs)[0]
        assert y.dtype == dtype and torch.isfinite(y).all()
        assert (y.float() - ref32).abs().max() < 0.1
        prep.float()
    # transformers promotes through its float32 mask
    ref = hf.PerceiverMultimodalPreprocessor({'label': hf.PerceiverOneHotPreprocessor(transformers.PerceiverConfig(num_labels=5))},
                                             mask_probs={'label': 1.0}).to(dtype)
    assert ref({'label': half_inputs['label']})[0].dtype == torch.float32
    # modalities of different dtypes are promoted as a concatenation would
    mixed = dict(half_inputs, label=inputs['label'])
    assert prep(mixed)[0].dtype == torch.float32


def test_multimodal_masked_rows_ignore_nonfinite_input():
    prep, inputs = released_like()
    inputs['label'] = torch.full_like(inputs['label'], float('nan'))
    x, sizes, _ = prep(inputs)
    assert torch.isfinite(x).all()
    assert torch.equal(restructure(sizes, x)['label'], prep.mask['label'].expand(2, 1, -1))


def test_multimodal_one_frame_and_gradients():
    prep, inputs = released_like(num_frames=1)
    x, sizes, _ = prep(inputs)
    assert sizes == {'audio': 4, 'image': 4, 'label': 1} and x.shape == (2, 9, prep.num_channels)
    x.sum().backward()
    assert prep.padding['audio'].grad is not None and prep.mask['label'].grad is not None
    assert prep.mask['audio'].grad.abs().sum() == 0  # p = 0: the audio mask token is never used


class _Liar(torch.nn.Module):
    "A preprocessor whose output is not as wide as its num_channels says."
    @property
    def num_channels(self) -> int: return 4
    def forward(self, inputs, pos=None, network_input_is_1d=True): return inputs, None, inputs


def _mm_error(call):
    with pytest.raises((ValueError, TypeError)) as e: call()
    return e


MM_BAD_INPUTS = [
    (lambda i: {k: v for k, v in i.items() if k != 'audio'}, ValueError, "missing ['audio']"),
    (lambda i: {k: v for k, v in i.items() if k == 'label'}, ValueError, "missing ['audio', 'image']"),
    (lambda i: {**i, 'depth': i['image']}, ValueError, "unexpected ['depth']"),
    (lambda i: {**i, 3: i['image']}, ValueError, 'unexpected [3]'),
    (lambda i: list(i.values()), TypeError, "`inputs` must be a dict {modality: tensor} with the modalities ['audio', 'image', 'label']"),
    (lambda i: i['image'], TypeError, '`inputs` must be a dict'),
    (lambda i: {**i, 'label': i['label'][:1]}, ValueError, "every modality must have the same batch size, got {'audio': 2, 'image': 2, 'label': 1}"),
    (lambda i: {**i, 'audio': torch.cat([i['audio']] * 2)}, ValueError, 'every modality must have the same batch size'),
    (lambda i: {**i, 'audio': i['audio'][:, :30]}, ValueError, '`inputs` has 30 samples'),
    (lambda i: {**i, 'image': i['image'][:, :, :, :6]}, ValueError, "`inputs` height 6 must be divisible by `spatial_downsample`=4"),
    (lambda i: {**i, 'label': i['label'][:, :3]}, ValueError, '`inputs` must have shape (B, 5)'),
]


@pytest.mark.parametrize('make,exc,fragment', MM_BAD_INPUTS, ids=lambda v: None)
def test_multimodal_bad_inputs(make, exc, fragment):
    prep, inputs = released_like()
    with pytest.raises(exc) as e: prep(make(inputs))
    assert fragment in str(e.value)


def _onehot(n=3): return PerceiverOneHotPreprocessor(PerceiverConfig(num_labels=n))


MM_BAD_SETTINGS = [
    (lambda: dict(modalities={}), ValueError, '`modalities` must be a non-empty mapping'),
    (lambda: dict(modalities=[('a', _onehot())]), ValueError, '`modalities` must be a non-empty mapping'),
    *[(lambda n=n: dict(modalities={n: _onehot()}), ValueError, 'modality names must be non-empty strings without "."')
      for n in ('', 'a.b', 3, None)],
    (lambda: dict(modalities={'keys': _onehot()}), ValueError, 'cannot be used as a module name'),
    (lambda: dict(modalities={'a': torch.nn.Linear(2, 2)}), TypeError, "modality 'a': the preprocessor must be an nn.Module with a `num_channels` property"),
    (lambda: dict(modalities={'a': 'onehot'}), TypeError, "modality 'a'"),
    (lambda: dict(modalities={'a': _onehot()}, mask_probs={'b': 0.5}), ValueError, "`mask_probs` names modalities ['b'] that are not in `modalities` ['a']"),
    *[(lambda p=p: dict(modalities={'a': _onehot()}, mask_probs={'a': p}), ValueError, "`mask_probs['a']` must be a probability in [0, 1]")
      for p in (-0.1, 1.5, float('nan'), True, '0.5', None)],
    *[(lambda v=v: dict(modalities={'a': _onehot()}, min_padding_size=v), ValueError, '`min_padding_size` must be a non-negative int')
      for v in (-1, 2.0, True, None)],
]


@pytest.mark.parametrize('make,exc,fragment', MM_BAD_SETTINGS, ids=lambda v: None)
def test_multimodal_bad_settings(make, exc, fragment):
    with pytest.raises(exc) as e: PerceiverMultimodalPreprocessor(**make())
    assert fragment in str(e.value)


def test_multimodal_child_output_checked():
    prep = PerceiverMultimodalPreprocessor({'a': _Liar(), 'b': _onehot()})
    with pytest.raises(ValueError, match=r"modality 'a': its preprocessor must return \(B, M, 4\) \(its num_channels\), got shape \(2, 3, 5\)"):
        prep({'a': torch.zeros(2, 3, 5), 'b': torch.zeros(2, 3)})


def test_multimodal_interpolate_pos_encoding_is_passed_on():
    c = PerceiverConfig(num_labels=3)
    image = PerceiverImagePreprocessor(c, prep_type='conv1x1', spatial_downsample=1, out_channels=4, position_encoding_type='trainable',
                                       trainable_position_encoding_kwargs=dict(index_dims=16, num_channels=4))
    prep = PerceiverMultimodalPreprocessor(dict(image=image, label=_onehot()))
    inputs = dict(image=torch.rand(2, 3, 6, 5), label=torch.eye(3)[:2])
    with pytest.raises(ValueError, match='pass interpolate_pos_encoding=True'): prep(inputs)
    x, sizes, _ = prep(inputs, interpolate_pos_encoding=True)
    assert sizes == {'image': 30, 'label': 1}


# ------------------------------------------------------------------------------------------------------------- I/O
@pytest.mark.parametrize('seed', range(6))
def test_wav_round_trip(seed, tmp_path):
    rng = random.Random(seed)
    channels, n, rate = rng.choice([1, 2]), rng.randint(1, 3000), rng.choice([8000, 16000, 44100, 48000])
    x = torch.rand((n, channels) if channels == 2 or rng.random() < 0.5 else (n,), generator=torch.Generator().manual_seed(seed)) * 2 - 1
    if n > 2: x[0], x[1] = 1.0, -1.0  # the extremes: +1 clips to 32767/32768, -1 is exact
    target = tmp_path / f'clip{seed}.wav' if seed % 2 else io.BytesIO()
    write_wav(target, x, rate)
    if isinstance(target, io.BytesIO): target.seek(0)
    y, r = read_wav(target)
    assert r == rate and y.dtype == torch.float32 and y.shape == (n, channels)
    assert (y - x.reshape(n, channels)).abs().max() <= 2 ** -15 + 1e-9  # half a step, a full one at +1
    inner = x.reshape(n, channels).clamp(-1, 1 - 2 ** -15)
    again = io.BytesIO(); write_wav(again, y, rate); again.seek(0)
    first = io.BytesIO(); write_wav(first, x, rate)
    assert again.getvalue() == first.getvalue()  # PCM -> float -> PCM is lossless
    assert (read_wav(io.BytesIO(first.getvalue()))[0] - inner).abs().max() <= 2 ** -16 + 1e-9


def _raw(width, payload, channels=1):
    out = io.BytesIO()
    with wave.open(out, 'wb') as f: f.setnchannels(channels); f.setsampwidth(width); f.setframerate(8000); f.writeframes(payload)
    out.seek(0)
    return out


def test_wav_sample_widths():
    ints = [-2 ** 31, -1, 0, 1, 2 ** 31 - 1]
    y, _ = read_wav(_raw(4, b''.join(i.to_bytes(4, 'little', signed=True) for i in ints)))
    assert y[:, 0].double().tolist() == pytest.approx([i / 2 ** 31 for i in ints], abs=1e-7)
    y, _ = read_wav(_raw(2, np.array([-32768, 0, 32767, 5, -7, 9], '<i2').tobytes(), channels=2))
    assert y.shape == (3, 2) and y[0].tolist() == [-1.0, 0.0] and y[1, 0] == 32767 / 32768


WAV_BAD_READS = [
    (lambda: io.BytesIO(b'not a wav file at all'), 'is not an integer-PCM WAV file'),
    (lambda: io.BytesIO(b''), 'is not an integer-PCM WAV file'),
    (lambda: io.BytesIO(_raw(2, b'\x00\x01' * 8).getvalue()[:30]), 'is not an integer-PCM WAV file'),
]


@pytest.mark.parametrize('make,fragment', WAV_BAD_READS, ids=lambda v: None)
def test_wav_bad_files(make, fragment):
    with pytest.raises(ValueError) as e: read_wav(make())
    assert fragment in str(e.value)


def test_wav_truncated_data_keeps_whole_frames(tmp_path):
    data = _raw(2, np.arange(10, dtype='<i2').tobytes(), channels=2).getvalue()
    y, _ = read_wav(io.BytesIO(data[:-3]))  # 5 frames of 4 bytes, 3 bytes missing: 4 whole frames left
    assert y.shape == (4, 2) and y[:, 0].tolist() == [0, 2 / 32768, 4 / 32768, 6 / 32768]
    with pytest.raises(FileNotFoundError): read_wav(tmp_path / 'missing.wav')
    bad = tmp_path / 'bad.wav'; bad.write_bytes(b'RIFF0000WAVEjunk')
    with pytest.raises(ValueError, match="'.*bad.wav' is not an integer-PCM WAV file"): read_wav(bad)


WAV_BAD_WRITES = [
    (torch.full((10,), 1.5), {}, ValueError, 'has samples up to 1.5 in magnitude, outside [-1, 1]'),
    (torch.tensor([0.0, float('nan')]), {}, ValueError, 'NaN or infinite'),
    (torch.tensor([0.0, float('inf')]), dict(clip=True), ValueError, 'NaN or infinite'),
    (torch.zeros(10, dtype=torch.int16), {}, TypeError, 'must be floating point'),
    (torch.zeros(2, 4000), {}, ValueError, 'i.e. 4000 channels; waveforms are (samples, channels): transpose'),
    (torch.zeros(1, 10, 1), {}, ValueError, 'for a batch, write one clip at a time'),
    (torch.zeros(0), {}, ValueError, 'has no samples'),
    (torch.zeros(10), dict(sample_rate=0), ValueError, '`sample_rate` must be a positive int'),
    (torch.zeros(10), dict(sample_rate=44100.0), ValueError, '`sample_rate` must be a positive int'),
]


@pytest.mark.parametrize('x,kw,exc,fragment', WAV_BAD_WRITES, ids=lambda v: None)
def test_wav_bad_writes(x, kw, exc, fragment):
    kw = {'sample_rate': 8000, **kw}
    with pytest.raises(exc) as e: write_wav(io.BytesIO(), x, **kw)
    assert fragment in str(e.value)


def test_wav_clip_on_request():
    out = io.BytesIO(); write_wav(out, torch.tensor([2.0, -3.0, 0.5]), 8000, clip=True); out.seek(0)
    assert read_wav(out)[0][:, 0].tolist() == [32767 / 32768, -1.0, 0.5]


def test_tone_and_spectrogram():
    t = tone(torch.tensor([[440.0], [880.0]]), 1000, 8000)
    assert t.shape == (2, 1, 1000) and t.dtype == torch.float32
    spec = spectrogram(tone(1000.0, 4000, 8000), n_fft=256)
    assert spec.shape == (129, 63) and spec[:, 30].argmax().item() == 32  # 1000 Hz is bin 1000 / (8000 / 256) = 32
    with pytest.raises(ValueError, match='needs more than n_fft // 2 = 128'): spectrogram(torch.zeros(100))
    with pytest.raises(ValueError, match=r'mono audio of shape \(S,\) or \(S, 1\), got shape \(100, 2\)'): spectrogram(torch.zeros(100, 2))
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match='`num_samples` must be a positive int'): tone(440.0, bad)


def test_frames_and_gif():
    video = torch.rand(3, 3, 6, 5, generator=torch.Generator().manual_seed(0))
    frames = _frames_uint8(video)
    assert frames.shape == (3, 6, 5, 3) and frames.dtype == np.uint8
    assert _frames_uint8(video[:, :1]).shape == (3, 6, 5) and _frames_uint8(torch.rand(2, 4, 4)).shape == (2, 4, 4)
    assert (_frames_uint8(torch.full((1, 3, 2, 2), 2.0)) == 255).all()  # clipped, not stretched
    gif = io.BytesIO(); save_gif(video, gif, fps=10, scale=3)
    from PIL import Image
    img = Image.open(io.BytesIO(gif.getvalue()))
    assert img.n_frames == 3 and img.size == (15, 18)
    for bad, fragment in ((torch.rand(2, 3, 3, 4, 4), 'pass video[b]'), (torch.rand(3, 2, 4, 4), 'C = 1 or 3, got C=2'),
                          (torch.rand(4, 4), 'must have shape (T, C, H, W) or (T, H, W)'), (torch.rand(0, 4, 4), 'has no frames')):
        with pytest.raises(ValueError) as e: _frames_uint8(bad)
        assert fragment in str(e.value)
    with pytest.raises(TypeError, match='floating point in \\[0, 1\\] or uint8'): _frames_uint8(torch.zeros(2, 4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match='`fps` must be a positive number'): save_gif(video, io.BytesIO(), fps=0)
    import matplotlib.pyplot as plt
    axes = show_frames(video, title='t')
    assert len(axes) == 3
    plt.close('all')
