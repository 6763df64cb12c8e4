"""Parity of `perceiver_nb.preprocessors.image` with transformers' Perceiver image preprocessing (5.24).

Every `prep_type` with Fourier and trainable positions, concatenated or added, projected or not, with
`conv_after_patching`, temporal downsampling, images and videos, batch > 1, batch norm with non-trivial running
statistics in evaluation and training mode. Our module and the reference hold the same weights (the state dicts load
into each other strictly) and must give the same outputs. Where we deliberately differ (`pixels` with
spatial_downsample > 1 on 4-D input, a single frame group with a 3-D encoding), the test says what we do instead.
"""
import pytest
import torch
import transformers
import transformers.models.perceiver.modeling_perceiver as hf

from perceiver_nb.config import PerceiverConfig
from perceiver_nb.preprocessors.image import (Conv2DDownsample, Conv2dSamePadding, PerceiverImagePreprocessor,
                                              space_to_depth)

# See tests/test_position.py: warm up sin/cos once so the first large call is not the one compared.
_warm = torch.linspace(-5e4, 5e4, 1 << 16)
torch.sin(_warm), torch.cos(_warm)

ATOL = 1e-6  # same operations in the same order: the differences seen are 0 or float32 rounding


def fourier(*max_resolution, num_bands=3, **kw):
    return dict(fourier_position_encoding_kwargs=dict(num_bands=num_bands, max_resolution=max_resolution, **kw))


def trainable(index_dims, num_channels):
    return dict(position_encoding_type='trainable',
                trainable_position_encoding_kwargs=dict(index_dims=index_dims, num_channels=num_channels))


def randomize(module: torch.nn.Module, seed: int = 0) -> None:
    "Random parameters and batch-norm statistics, so that no parity can hold by accident of the initialisation."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters(): p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        for name, b in module.named_buffers():
            if name.endswith('running_mean'): b.copy_(torch.randn(b.shape, generator=g) * 0.3)
            elif name.endswith('running_var'): b.copy_(torch.rand(b.shape, generator=g) * 1.5 + 0.5)
            elif name.endswith('num_batches_tracked'): b.fill_(7)


def pair(**kw):
    "Our preprocessor with random weights, and the reference loaded with them (strictly), both in eval mode."
    ours = PerceiverImagePreprocessor(PerceiverConfig(), **kw)
    randomize(ours)
    ref = hf.PerceiverImagePreprocessor(transformers.PerceiverConfig(), **kw)
    ref.load_state_dict(ours.state_dict(), strict=True)
    return ours.eval(), ref.eval()


def assert_same(got, want, atol=ATOL):
    assert got[1] is None and want[1] is None
    for g, w in ((got[0], want[0]), (got[2], want[2])):
        assert g.shape == w.shape and g.dtype == w.dtype
        torch.testing.assert_close(g, w, atol=atol, rtol=0)


# (id, constructor kwargs, input shape). Sizes are distinct per axis; every batch has B > 1.
CASES = [
    # the released classifiers, small
    ('learned: conv1x1 trainable concat project', dict(prep_type='conv1x1', spatial_downsample=1, out_channels=6,
        project_pos_dim=6, **trainable(9 * 11, 6)), (3, 3, 9, 11)),
    ('fourier: pixels s=1', dict(prep_type='pixels', spatial_downsample=1, **fourier(9, 11)), (3, 3, 9, 11)),
    ('conv: stem s=1 fourier', dict(prep_type='conv', spatial_downsample=1, out_channels=8, **fourier(6, 7)), (3, 3, 21, 27)),
    # conv
    ('conv s=4 fourier', dict(prep_type='conv', spatial_downsample=4, out_channels=5, **fourier(4, 6, num_bands=2)), (2, 3, 18, 26)),
    ('conv no batchnorm', dict(prep_type='conv', out_channels=5, conv2d_use_batchnorm=False, **fourier(5, 6)), (2, 3, 21, 26)),
    ('conv 4 channels', dict(prep_type='conv', in_channels=4, out_channels=5, **fourier(5, 6)), (2, 4, 21, 26)),
    ('conv trainable', dict(prep_type='conv', out_channels=5, **trainable(5 * 6, 7)), (2, 3, 21, 26)),
    ('conv trainable 2-D table', dict(prep_type='conv', out_channels=5, **trainable((5, 6), 7)), (2, 3, 21, 26)),
    ('conv add', dict(prep_type='conv', out_channels=10, concat_or_add_pos='add', **fourier(5, 6, num_bands=2)), (2, 3, 21, 26)),
    ('conv add project', dict(prep_type='conv', out_channels=6, concat_or_add_pos='add', project_pos_dim=6,
        **trainable(5 * 6, 6)), (2, 3, 21, 26)),
    ('conv add fourier sine_only no concat_pos', dict(prep_type='conv', out_channels=6, concat_or_add_pos='add',
        **fourier(5, 6, concat_pos=False, sine_only=True)), (2, 3, 21, 26)),
    # conv1x1
    ('conv1x1 s=2 fourier', dict(prep_type='conv1x1', spatial_downsample=2, out_channels=4, **fourier(5, 6)), (2, 3, 10, 12)),
    ('conv1x1 s=3 odd sizes', dict(prep_type='conv1x1', spatial_downsample=3, out_channels=4, **fourier(4, 5)), (3, 3, 10, 13)),
    ('conv1x1 add project', dict(prep_type='conv1x1', spatial_downsample=1, out_channels=7, concat_or_add_pos='add',
        project_pos_dim=7, **trainable(7 * 9, 7)), (2, 3, 7, 9)),
    ('conv1x1 1 channel', dict(prep_type='conv1x1', in_channels=1, spatial_downsample=1, out_channels=4, **fourier(7, 9)), (2, 1, 7, 9)),
    # pixels (s = 1 on images; any s on videos, where the reference slices the right axes)
    ('pixels trainable', dict(prep_type='pixels', spatial_downsample=1, **trainable(7 * 9, 5)), (2, 3, 7, 9)),
    ('pixels add', dict(prep_type='pixels', spatial_downsample=1, in_channels=4, concat_or_add_pos='add',
        **fourier(7, 9, num_bands=1, sine_only=True)), (2, 4, 7, 9)),
    ('pixels video s=2 t=2', dict(prep_type='pixels', spatial_downsample=2, temporal_downsample=2,
        **fourier(3, 4, 5, num_bands=2)), (2, 5, 3, 7, 9)),
    ('pixels video s=1', dict(prep_type='pixels', spatial_downsample=1, **fourier(3, 7, 9, num_bands=2)), (2, 3, 3, 7, 9)),
    # patches
    ('patches s=2 image', dict(prep_type='patches', spatial_downsample=2, **fourier(4, 5)), (2, 3, 8, 10)),
    ('patches s=2 image conv_after', dict(prep_type='patches', spatial_downsample=2, conv_after_patching=True,
        conv_after_patching_in_channels=12, out_channels=5, **fourier(4, 5)), (2, 3, 8, 10)),
    ('patches multimodal video s=4', dict(prep_type='patches', spatial_downsample=4, **fourier(3, 4, 5, num_bands=2)),
        (2, 3, 3, 16, 20)),
    ('patches video t=2 s=2', dict(prep_type='patches', spatial_downsample=2, temporal_downsample=2,
        **fourier(2, 4, 5, num_bands=2)), (2, 4, 3, 8, 10)),
    ('patches video trainable', dict(prep_type='patches', spatial_downsample=2, temporal_downsample=2,
        **trainable((2, 4, 5), 6)), (2, 4, 3, 8, 10)),
    ('patches flow t=2 conv_after', dict(prep_type='patches', spatial_downsample=1, temporal_downsample=2,
        conv_after_patching=True, conv_after_patching_in_channels=54, **fourier(6, 10)), (2, 2, 27, 6, 10)),
    ('patches flow project add', dict(prep_type='patches', spatial_downsample=1, temporal_downsample=2,
        conv_after_patching=True, conv_after_patching_in_channels=54, out_channels=9, concat_or_add_pos='add',
        project_pos_dim=9, **trainable(6 * 10, 9)), (2, 2, 27, 6, 10)),
]


@pytest.mark.parametrize('kw,shape', [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_preprocessor_equals_reference(kw, shape):
    ours, ref = pair(**kw)
    assert sorted(ours.state_dict()) == sorted(ref.state_dict())
    assert ours.num_channels == ref.num_channels
    x = torch.randn(shape)
    got, want = ours(x), ref(x)
    assert_same(got, want)
    assert got[0].shape[-1] == ours.num_channels


# The reference's unbatched table without concat_pos cannot be reshaped to the grid (see the test further down).
GRID_CASES = [c for c in CASES if 'no concat_pos' not in c[0]]


@pytest.mark.parametrize('kw,shape', [c[1:] for c in GRID_CASES], ids=[c[0] for c in GRID_CASES])
def test_grid_output_equals_reference(kw, shape):
    "network_input_is_1d=False keeps the index grid; the reference then reshapes the positions to it."
    ours, ref = pair(**kw)
    x = torch.randn(shape)
    assert_same(ours(x, network_input_is_1d=False), ref(x, network_input_is_1d=False))


def test_reference_weights_load_into_ours():
    "The other direction: a reference module with its own initialisation loads into ours strictly and agrees."
    for _, kw, shape in CASES:
        ref = hf.PerceiverImagePreprocessor(transformers.PerceiverConfig(), **kw).eval()
        ours = PerceiverImagePreprocessor(PerceiverConfig(), **kw).eval()
        ours.load_state_dict(ref.state_dict(), strict=True)
        x = torch.randn(shape)
        assert_same(ours(x), ref(x))


@pytest.mark.parametrize('use_batchnorm', [True, False])
def test_conv_training_mode_and_running_statistics(use_batchnorm):
    "In training mode batch norm uses the batch's statistics and updates the running ones, identically."
    kw = dict(prep_type='conv', out_channels=6, conv2d_use_batchnorm=use_batchnorm, **fourier(5, 6))
    ours, ref = pair(**kw)
    ours.train(), ref.train()
    for step in range(3):
        x = torch.randn(3, 3, 21, 26) * (step + 1)
        assert_same(ours(x), ref(x))
    for (name, a), (_, b) in zip(ours.state_dict().items(), ref.state_dict().items()):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0, msg=name)
    ours.eval(), ref.eval()
    x = torch.randn(2, 3, 21, 26)
    assert_same(ours(x), ref(x))


def test_float64():
    ours, ref = pair(prep_type='conv1x1', spatial_downsample=1, out_channels=6, project_pos_dim=6, **trainable(9 * 11, 6))
    ours.double(), ref.double()
    x = torch.randn(2, 3, 9, 11, dtype=torch.float64)
    assert_same(ours(x), ref(x), atol=1e-12)
    ours, ref = pair(prep_type='conv', out_channels=5, **fourier(5, 6))
    ours.double(), ref.double()
    x = torch.randn(2, 3, 21, 26, dtype=torch.float64)
    got = ours(x)
    assert got[0].dtype == torch.float64
    assert_same(got, ref(x), atol=1e-12)


@pytest.mark.parametrize('size', [(12, 10), (5, 5), (8, 8), (20, 13)])
@pytest.mark.parametrize('prep_type', ['conv1x1', 'pixels'])
def test_interpolated_trainable_positions_equal_reference(prep_type, size):
    "A square 8x8 table resized bicubically to other grids, non-square included (8x8 is a no-op)."
    kw = dict(prep_type=prep_type, spatial_downsample=1, **trainable(64, 6))
    if prep_type == 'conv1x1': kw.update(out_channels=6, project_pos_dim=6)
    ours, ref = pair(**kw)
    x = torch.randn(2, 3, *size)
    assert_same(ours(x, interpolate_pos_encoding=True), ref(x, interpolate_pos_encoding=True))


def test_interpolated_positions_after_the_stem():
    "With the conv stem the table is resized to the stem's output grid (5x6 here), not to the image."
    ours, ref = pair(prep_type='conv', out_channels=5, **trainable(16, 4))
    x = torch.randn(2, 3, 21, 26)
    got = ours(x, interpolate_pos_encoding=True)
    assert got[0].shape == (2, 30, 9)
    assert_same(got, ref(x, interpolate_pos_encoding=True))


def test_wrong_size_for_a_trainable_table_names_interpolate_pos_encoding():
    ours, _ = pair(prep_type='conv1x1', spatial_downsample=1, out_channels=6, project_pos_dim=6, **trainable(64, 6))
    with pytest.raises(ValueError, match=r'covers 64 positions but the input has 9x11=99; pass interpolate_pos_encoding=True'):
        ours(torch.randn(2, 3, 9, 11))
    video, _ = pair(prep_type='patches', spatial_downsample=2, temporal_downsample=2, **trainable((2, 4, 5), 6))
    with pytest.raises(ValueError, match=r'covers 2x4x5=40 positions but the input has 3x4x5=60'):
        video(torch.randn(2, 6, 3, 8, 10))
    with pytest.raises(ValueError, match=r'interpolate_pos_encoding=True resizes the trainable table to a 2-D grid'):
        video(torch.randn(2, 4, 3, 8, 10), interpolate_pos_encoding=True)


@pytest.mark.parametrize('s', [2, 3])
def test_pixels_subsample_height_and_width_not_batch_and_channels(s):
    """The reference's `inputs[::s, ::s]` on (B, C, H, W) strides batch and channels; ours strides H and W.

    Ours must equal the reference fed the correctly subsampled images at s = 1, and report C channels."""
    kw = dict(prep_type='pixels', **fourier(4, 5))
    ours = PerceiverImagePreprocessor(PerceiverConfig(), spatial_downsample=s, **kw)
    ref_s = hf.PerceiverImagePreprocessor(transformers.PerceiverConfig(), spatial_downsample=s, **kw)
    ref_1 = hf.PerceiverImagePreprocessor(transformers.PerceiverConfig(), spatial_downsample=1, **kw)
    x = torch.randn(4, 3, 4 * s - 1, 5 * s - 1)  # ceil((4s-1)/s) = 4, ceil((5s-1)/s) = 5
    got = ours(x)
    assert got[0].shape == (4, 20, 3 + ref_1.position_embeddings.output_size()) == (4, 20, ours.num_channels)
    assert_same(got, ref_1(x[:, :, ::s, ::s]))
    assert ref_s(x)[0].shape[0] == 2 and ref_s.num_channels == ours.num_channels - 3 + -(-3 // s)  # the reference's bug


def test_fourier_features_without_concat_pos():
    """The reference's Fourier table without concat_pos is unbatched (P, C), so concatenating it, or reshaping it to
    the grid (network_input_is_1d=False), fails; ours is batched."""
    kw = dict(prep_type='conv1x1', spatial_downsample=1, out_channels=4, **fourier(7, 9, concat_pos=False))
    ours, ref = pair(**kw)
    x = torch.randn(2, 3, 7, 9)
    with pytest.raises(RuntimeError): ref(x)
    out, _, without = ours(x)
    assert out.shape == (2, 63, 4 + 12) == (2, 63, ours.num_channels)
    pos = hf.build_linear_positions((7, 9)).reshape(1, 63, 2)
    torch.testing.assert_close(out[:, :, 4:], hf.generate_fourier_features(pos, 3, (7, 9), concat_pos=False).expand(2, -1, -1), atol=0, rtol=0)
    torch.testing.assert_close(out[:, :, :4], without, atol=0, rtol=0)
    grid = ours(x, network_input_is_1d=False)[0]
    torch.testing.assert_close(grid, out.reshape(2, 7, 9, 16), atol=0, rtol=0)


@pytest.mark.parametrize('prep_type,s,size', [('conv', 4, (21, 26)), ('conv1x1', 2, (10, 12))])
def test_conv_modes_apply_per_frame_to_videos(prep_type, s, size):
    "The reference's 2-D convolution refuses a video; ours convolves every frame, as DeepMind's hk.BatchApply does."
    ours, ref = pair(prep_type=prep_type, spatial_downsample=s, out_channels=5, **fourier(3, 5, 6, num_bands=2))
    x = torch.randn(2, 3, 3, *size)
    with pytest.raises(RuntimeError): ref(x)
    out, _, without = ours(x)
    assert out.shape == (2, 3 * 5 * 6, 5 + 15) and out.shape[-1] == ours.num_channels
    conv = ref.convnet if prep_type == 'conv' else ref.convnet_1x1
    frames = torch.stack([conv(x[:, i]) for i in range(3)], dim=1)  # (B, T, C, H', W') from the reference, frame by frame
    torch.testing.assert_close(without, frames.movedim(2, -1).reshape(2, 90, 5), atol=ATOL, rtol=0)
    pos = hf.PerceiverFourierPositionEncoding(2, (3, 5, 6))((3, 5, 6), 2, 'cpu', torch.float32)
    torch.testing.assert_close(out[..., 5:], pos, atol=0, rtol=0)


def test_single_frame_group_keeps_time_axis_for_3d_positions():
    "The reference squeezes T/t == 1 away and then fails on its 3-D encoding; we keep the axis."
    kw = dict(prep_type='patches', spatial_downsample=2, temporal_downsample=3, **fourier(1, 4, 5, num_bands=2))
    ours = PerceiverImagePreprocessor(PerceiverConfig(), **kw)
    ref = hf.PerceiverImagePreprocessor(transformers.PerceiverConfig(), **kw)
    x = torch.randn(2, 3, 3, 8, 10)
    with pytest.raises(RuntimeError): ref(x)
    out, _, without = ours(x)
    assert out.shape == (2, 20, 3 * 3 * 4 + 15) and out.shape[-1] == ours.num_channels == ref.num_channels
    torch.testing.assert_close(without, space_to_depth(x, 3, 2).reshape(2, 20, 36), atol=0, rtol=0)
    # the flow case (2-D positions) still squeezes, as in the reference: covered by 'patches flow' above


@pytest.mark.parametrize('shape,t,s', [((2, 3, 6, 10), 1, 2), ((3, 1, 4, 4), 1, 4), ((2, 3, 5, 7), 1, 1),
                                       ((2, 4, 3, 6, 10), 2, 2), ((1, 6, 2, 9, 3), 3, 3), ((2, 2, 27, 5, 7), 2, 1)])
def test_space_to_depth_equals_reference(shape, t, s):
    x = torch.randn(shape)
    assert torch.equal(space_to_depth(x, t, s), hf.space_to_depth(x, t, s))


@pytest.mark.parametrize('kernel_size,stride', [(7, 2), (3, 1), (4, 1), ((4, 3), 2), ((1, 6), (2, 3))])
def test_conv2d_same_padding_equals_reference(kernel_size, stride):
    ours = Conv2dSamePadding(3, 5, kernel_size, stride=stride)
    ref = hf.Conv2dSamePadding(3, 5, kernel_size, stride=stride)
    ref.load_state_dict(ours.state_dict(), strict=True)
    assert ours.zero_pad_2d.padding == ref.zero_pad_2d.padding
    x = torch.randn(2, 3, 11, 14)
    torch.testing.assert_close(ours(x), ref(x), atol=ATOL, rtol=0)


@pytest.mark.parametrize('size', [(224, 224), (21, 26), (5, 6), (33, 8)])
def test_conv2d_downsample_equals_reference(size):
    ours = Conv2DDownsample(in_channels=3, out_channels=6)
    randomize(ours)
    ref = hf.Conv2DDownsample(in_channels=3, out_channels=6)
    ref.load_state_dict(ours.state_dict(), strict=True)
    ours.eval(), ref.eval()
    x = torch.randn(2, 3, *size)
    got = ours(x)
    torch.testing.assert_close(got, ref(x), atol=ATOL, rtol=0)
    if size == (224, 224): assert got.shape == (2, 6, 55, 55)


BAD_CONSTRUCTIONS = [
    (dict(prep_type='patch'), "`prep_type` must be one of ['conv', 'conv1x1', 'patches', 'pixels'], got 'patch'"),
    (dict(prep_type='conv', spatial_downsample=2), "prep_type='conv' needs `spatial_downsample` a power of 4, got 2"),
    (dict(prep_type='conv', spatial_downsample=16), 'always downsamples 4x), got 16'),
    (dict(prep_type='conv', temporal_downsample=2), '`temporal_downsample` must be 1, got 2'),
    (dict(prep_type='conv1x1', temporal_downsample=2), "prep_type='conv1x1' does not downsample in time"),
    (dict(spatial_downsample=0), '`spatial_downsample` must be a positive int, got 0'),
    (dict(concat_or_add_pos='sum'), "`concat_or_add_pos` must be one of ['concat', 'add'], got 'sum'"),
    (dict(position_encoding_type='learned'), "`position_encoding_type` must be one of ['trainable', 'fourier']"),
    (dict(prep_type='pixels', project_pos_dim=8), 'project_pos_dim=8 projects from `out_channels`=64 channels, but the position encoding has 10'),
]


@pytest.mark.parametrize('kw,message', BAD_CONSTRUCTIONS, ids=[m for _, m in BAD_CONSTRUCTIONS])
def test_bad_construction_is_refused(kw, message):
    with pytest.raises(ValueError) as e:
        PerceiverImagePreprocessor(PerceiverConfig(), **{**fourier(4, 4, num_bands=2), **kw})
    assert message in str(e.value)


def test_missing_or_unknown_position_kwargs_are_refused():
    with pytest.raises(ValueError, match='needs `fourier_position_encoding_kwargs`'):
        PerceiverImagePreprocessor(PerceiverConfig())
    with pytest.raises(ValueError, match=r"unexpected keyword arguments \['fourier_kwargs'\]"):
        PerceiverImagePreprocessor(PerceiverConfig(), fourier_kwargs={})


BAD_INPUTS = [
    (dict(prep_type='conv1x1', spatial_downsample=1), (2, 4, 8, 8),
     '`inputs` has 4 channels (axis 1 of shape (2, 4, 8, 8)) but the preprocessor was built with `in_channels`=3'),
    (dict(prep_type='conv'), (2, 1, 8, 8), 'built with `in_channels`=3'),
    (dict(prep_type='pixels', spatial_downsample=1), (2, 2, 5, 8, 8), '`inputs` has 5 channels (axis 2'),
    (dict(prep_type='patches', spatial_downsample=2), (2, 4, 8, 8), 'built with `in_channels`=3'),
    (dict(prep_type='pixels', spatial_downsample=1), (3, 8, 8), '`inputs` must have 4 dimensions (B, C, H, W) or 5 dimensions (B, T, C, H, W)'),
    (dict(prep_type='patches', spatial_downsample=3), (2, 3, 9, 10), '`inputs` width 10 must be divisible by `spatial_downsample`=3'),
    (dict(prep_type='patches', spatial_downsample=1, temporal_downsample=2), (2, 3, 3, 8, 8),
     '`inputs` time 3 must be divisible by `temporal_downsample`=2'),
    (dict(prep_type='patches', spatial_downsample=1, temporal_downsample=2, conv_after_patching=True), (2, 2, 26, 4, 4),
     'the patches have 52 channels (t·s·s·C = 2·1·1·26) but `conv_after_patching_in_channels`=54'),
    (dict(prep_type='pixels', spatial_downsample=1, concat_or_add_pos='add'), (2, 3, 4, 4),
     "concat_or_add_pos='add' needs positions as wide as the features: 10 position channels, 3 feature channels"),
]


@pytest.mark.parametrize('kw,shape,message', BAD_INPUTS, ids=[m for *_, m in BAD_INPUTS])
def test_bad_input_is_refused(kw, shape, message):
    prep = PerceiverImagePreprocessor(PerceiverConfig(), **{**fourier(4, 4, num_bands=2), **kw})
    with pytest.raises(ValueError) as e: prep(torch.randn(shape))
    assert message in str(e.value)
