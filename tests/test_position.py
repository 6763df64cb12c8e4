"""Parity of `perceiver_nb.position` with the position encodings of transformers' Perceiver (5.24).

The Fourier tables are compared bit for bit (`torch.equal`): our code keeps the reference's float32 operation order,
and at the released resolutions any other order differs by 1e-3..1e-2 (see `nbs/05_position_encoding.ipynb`).
"""
import pytest
import torch
import transformers.models.perceiver.modeling_perceiver as hf
from transformers import PerceiverConfig

from perceiver_nb.position import (PerceiverAbstractPositionEncoding, PerceiverFourierPositionEncoding,
                                   PerceiverTrainablePositionEncoding, build_linear_positions, build_position_encoding,
                                   generate_fourier_features)

# In about 5% of fresh processes the very first torch.sin/cos over a large float32 tensor was seen to come out less
# accurate on part of the tensor (1.5e-4 instead of 2e-5 against float64; see shared/reference/HF_PERCEIVER.md).
# Whichever of the two implementations ran first would then differ from the other, so warm both up once.
_warm = torch.linspace(-5e4, 5e4, 1 << 20)
torch.sin(_warm), torch.cos(_warm)

# (name, num_bands, max_resolution, index_dims) of the released models' Fourier encodings
RELEASED = [
    ('image classifier', 64, (224, 224), (224, 224)),
    ('conv classifier', 64, (56, 56), (55, 55)),
    ('optical flow', 64, (368, 496), (368, 496)),
    ('multimodal video', 32, (16, 56, 56), (16, 56, 56)),
    ('multimodal audio', 192, (30720,), (1920,)),
    ('audio, full 1-D grid', 192, (30720,), (30720,)),
]


@pytest.mark.parametrize('index_dims', [(224, 224), (368, 496), (16, 56, 56), (30720,), (1,), (3, 1, 4)])
def test_linear_positions_equal_reference(index_dims):
    ours = build_linear_positions(index_dims)
    assert ours.shape == (*index_dims, len(index_dims)) and ours.dtype == torch.float32
    assert torch.equal(ours, hf.build_linear_positions(index_dims))
    assert torch.equal(build_linear_positions(index_dims, (0.0, 2.0)), hf.build_linear_positions(index_dims, (0.0, 2.0)))


@pytest.mark.parametrize('name,num_bands,max_resolution,index_dims', RELEASED, ids=[r[0] for r in RELEASED])
def test_fourier_module_equals_reference_on_released_configs(name, num_bands, max_resolution, index_dims):
    ours = PerceiverFourierPositionEncoding(num_bands, max_resolution)
    ref = hf.PerceiverFourierPositionEncoding(num_bands, max_resolution)
    got = ours(index_dims, 2, 'cpu', torch.float32)
    want = ref(index_dims, 2, 'cpu', torch.float32)
    assert got.shape == want.shape == (2, torch.Size(index_dims).numel(), ref.output_size())
    assert ours.output_size() == ref.output_size()
    assert torch.equal(got, want)


@pytest.mark.parametrize('concat_pos', [True, False])
@pytest.mark.parametrize('sine_only', [True, False])
@pytest.mark.parametrize('num_bands,max_resolution,index_dims', [(64, (224, 224), (224, 224)), (192, (30720,), (1920,)),
                                                                 (5, (7, 9, 11), (3, 4, 5))])
def test_fourier_variants_equal_reference(num_bands, max_resolution, index_dims, concat_pos, sine_only):
    pos = hf.build_linear_positions(index_dims).reshape(1, -1, len(index_dims)).expand(3, -1, -1)
    ours = generate_fourier_features(pos, num_bands, max_resolution, concat_pos, sine_only)
    ref = hf.generate_fourier_features(pos, num_bands, max_resolution, concat_pos, sine_only)
    module = PerceiverFourierPositionEncoding(num_bands, max_resolution, concat_pos, sine_only)
    assert ours.shape == (3, pos.shape[1], module.output_size())
    # without concat_pos the reference returns an unbatched (P, C) table; ours is broadcast to (B, P, C)
    assert torch.equal(ours if concat_pos else ours[0], ref)
    assert torch.equal(module(index_dims, 3, 'cpu', torch.float32), ours)


def _hf_subsampled_queries(output_index_dims, num_bands, max_resolution, points, batch_size=2):
    "The reference decoder's Fourier queries for flat indices `points` (its own unravel and -1 + 2i/n mapping)."
    decoder = hf.PerceiverBasicDecoder(
        PerceiverConfig(), output_num_channels=8, position_encoding_type='fourier', output_index_dims=output_index_dims,
        position_encoding_only=True,
        fourier_position_encoding_kwargs=dict(num_bands=num_bands, max_resolution=max_resolution))
    return decoder.decoder_query(torch.zeros(batch_size, 1, 1), subsampled_points=points)


SUBSAMPLED = [
    ('multimodal audio chunk', (1920,), 192, (30720,), torch.arange(15 * 7, 15 * 8)),
    ('multimodal audio, all patches', (1920,), 192, (30720,), torch.arange(1920)),
    ('1920 of a 30720 grid', (30720,), 192, (30720,), torch.randperm(30720, generator=torch.Generator().manual_seed(0))[:1920]),
    ('multimodal video first chunk', (16, 224, 224), 32, (16, 56, 56), torch.arange(6272)),
    ('multimodal video last chunk', (16, 224, 224), 32, (16, 56, 56), torch.arange(6272 * 127, 6272 * 128)),
]


@pytest.mark.parametrize('name,output_index_dims,num_bands,max_resolution,points', SUBSAMPLED, ids=[s[0] for s in SUBSAMPLED])
def test_subsampled_positions_equal_reference_decoder_queries(name, output_index_dims, num_bands, max_resolution, points):
    pos = torch.stack(torch.unravel_index(points, output_index_dims), dim=1)
    pos = -1 + 2 * pos / torch.tensor(output_index_dims)[None]  # the decoders' convention, not the linspace grid
    pos = pos[None].expand(2, -1, -1)
    module = PerceiverFourierPositionEncoding(num_bands, max_resolution)
    got = module(output_index_dims, 2, 'cpu', torch.float32, pos=pos)
    want = _hf_subsampled_queries(output_index_dims, num_bands, max_resolution, points)
    assert got.shape == want.shape == (2, len(points), module.output_size())
    assert torch.equal(got, want)
    assert module.cache_info().currsize == 0  # explicit positions are never cached


@pytest.mark.parametrize('dtype', [torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize('num_bands,max_resolution,index_dims', [(64, (224, 224), (224, 224)), (192, (30720,), (1920,))])
def test_fourier_output_dtypes_equal_reference(num_bands, max_resolution, index_dims, dtype):
    ours = PerceiverFourierPositionEncoding(num_bands, max_resolution)
    got = ours(index_dims, 2, 'cpu', dtype)
    want = hf.PerceiverFourierPositionEncoding(num_bands, max_resolution)(index_dims, 2, 'cpu', dtype)
    assert got.dtype == want.dtype == dtype
    assert torch.equal(got, want)
    assert torch.equal(got, ours(index_dims, 2, 'cpu', torch.float32).to(dtype))  # float32 first, then cast


def test_fourier_cache_reuses_and_bounds_tables():
    module = PerceiverFourierPositionEncoding(64, (368, 496))
    first = module((368, 496), 1, 'cpu', torch.float32)
    second = module(torch.Size([368, 496]), 4, torch.device('cpu'), torch.float32)
    assert second.shape == (4, 182528, 258)
    assert second.untyped_storage().data_ptr() == first.untyped_storage().data_ptr()
    assert (module.cache_info().hits, module.cache_info().misses) == (1, 1)
    small = PerceiverFourierPositionEncoding(3, (8, 8))
    for n in range(1, 12): small((n, 8), 1, 'cpu', torch.float32)
    assert small.cache_info().currsize == small.cache_size == 8
    assert [key[0] for key in small._tables] == [(n, 8) for n in range(4, 12)]
    small.cache_clear()
    assert small.cache_info() == (0, 0, 8, 0)


def test_fourier_table_built_in_inference_mode_trains_later():
    module = PerceiverFourierPositionEncoding(4, (6, 10))
    with torch.inference_mode(): module((6, 10), 2, 'cpu', torch.float32)
    proj = torch.nn.Linear(module.output_size(), 3)
    proj(module((6, 10), 2, 'cpu', torch.float32)).sum().backward()
    assert proj.weight.grad is not None and module.cache_info().hits == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_fourier_on_cuda_equals_reference_and_caches():
    module = PerceiverFourierPositionEncoding(64, (368, 496))
    got = module((368, 496), 2, 'cuda', torch.float32)
    want = hf.PerceiverFourierPositionEncoding(64, (368, 496))((368, 496), 2, torch.device('cuda'), torch.float32)
    assert got.device.type == 'cuda' and torch.equal(got, want)
    again = module((368, 496), 2, torch.device('cuda', torch.cuda.current_device()), torch.float32)
    assert again.data_ptr() == got.data_ptr() and module.cache_info().currsize == 1
    assert (got.cpu() - module((368, 496), 2, 'cpu', torch.float32)).abs().max() < 1e-3


# square tables (as the reference assumes) resized to square and non-square sizes
INTERPOLATIONS = [(224 * 224, 8, (384, 384)), (224 * 224, 8, (224, 320)), (224 * 224, 8, (160, 96)),
                  (16 * 16, 5, (10, 12)), (16 * 16, 5, (31, 7)), (16 * 16, 5, (16, 16))]


@pytest.mark.parametrize('num_positions,num_channels,size', INTERPOLATIONS)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.bfloat16])
def test_trainable_interpolation_equals_reference(num_positions, num_channels, size, dtype):
    torch.manual_seed(0); ours = PerceiverTrainablePositionEncoding(num_positions, num_channels).to(dtype)
    torch.manual_seed(0); ref = hf.PerceiverTrainablePositionEncoding(num_positions, num_channels).to(dtype)
    assert torch.equal(ours.position_embeddings, ref.position_embeddings)  # same init from the same seed
    got = ours(2, interpolate_pos_encoding=True, input_size=size)
    want = ref(2, interpolate_pos_encoding=True, input_size=size)
    assert got.shape == (2, size[0] * size[1], num_channels) and got.dtype == dtype
    assert torch.equal(got, want)


def test_trainable_non_square_table_and_errors():
    pe = PerceiverTrainablePositionEncoding((6, 10), 3)
    out = pe(2, interpolate_pos_encoding=True, input_size=(9, 15))
    assert out.shape == (2, 135, 3)
    with pytest.raises(RuntimeError):  # the reference lays the 60 rows out as 7x7
        hf.PerceiverTrainablePositionEncoding((6, 10), 3)(2, interpolate_pos_encoding=True, input_size=(9, 15))
    # same as resizing the explicit (1, C, 6, 10) image of the table
    image = pe.position_embeddings.reshape(6, 10, 3).permute(2, 0, 1)[None]
    expected = torch.nn.functional.interpolate(image, size=(9, 15), mode='bicubic', align_corners=False)
    assert torch.allclose(out[0], expected[0].reshape(3, -1).T, atol=1e-6)
    with pytest.raises(ValueError, match=r'covers 16x16=256 positions but the input has 10x12=120; pass interpolate_pos_encoding=True'):
        PerceiverTrainablePositionEncoding((16, 16), 2)(1, input_size=(10, 12))


def test_state_dict_keys_equal_reference():
    kwargs = dict(trainable_position_encoding_kwargs=dict(index_dims=(5, 7), num_channels=6))
    for project_pos_dim in (-1, 4):
        ours = build_position_encoding('trainable', out_channels=6, project_pos_dim=project_pos_dim, **kwargs)
        ref = hf.build_position_encoding('trainable', out_channels=6, project_pos_dim=project_pos_dim, **kwargs)
        for a, b in zip(ours, ref):
            assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
    fourier = dict(fourier_position_encoding_kwargs=dict(num_bands=64, max_resolution=(224, 224)))
    enc, proj = build_position_encoding('fourier', out_channels=258, project_pos_dim=32, **fourier)
    ref_enc, ref_proj = hf.build_position_encoding('fourier', out_channels=258, project_pos_dim=32, **fourier)
    assert list(enc.state_dict()) == list(ref_enc.state_dict()) == []
    assert {k: v.shape for k, v in proj.state_dict().items()} == {k: v.shape for k, v in ref_proj.state_dict().items()}
    assert isinstance(enc, PerceiverAbstractPositionEncoding) and enc.num_dimensions == ref_enc.num_dimensions == 2


def test_builder_errors_name_the_argument():
    with pytest.raises(ValueError, match='`position_encoding_type` must be one of'):
        build_position_encoding('none')
    with pytest.raises(ValueError, match='`trainable_position_encoding_kwargs`'):
        build_position_encoding('trainable', fourier_position_encoding_kwargs=dict(num_bands=4, max_resolution=(8,)))


def test_fourier_default_device_like_reference():
    module = PerceiverFourierPositionEncoding(3, (4, 5))
    got = module((4, 5), 2, None, torch.float32)  # the reference accepts device=None (the default device)
    assert torch.equal(got, hf.PerceiverFourierPositionEncoding(3, (4, 5))((4, 5), 2, None, torch.float32))
    assert module((4, 5), 2, 'cpu', torch.float32).data_ptr() == got.data_ptr()
