"""The error contract: bad input is refused by our code with a message naming the argument and the expected and
actual value. The pages keep one or two illustrative refusals each; the rest live here (one place to update a
message), grouped by the page that introduces the function. Checks already made elsewhere in `tests/` are not repeated.
"""
import re

import numpy as np
import PIL.Image
import pytest
import torch
from torch import nn

from perceiver_nb.core import (check_float_dtype, check_range, check_shape, default_device, set_seed, show_heatmap,
                               show_image, warmup_cosine)
from perceiver_nb.config import PerceiverConfig, get_activation


def raises(exc, text: str):
    "`pytest.raises` matching `text` literally (the messages are full of brackets and parentheses)."
    return pytest.raises(exc, match=re.escape(text))


# 00_core
def test_core_helpers():
    with raises(ValueError, '`seed` must be a non-negative int'): set_seed(-1)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    with raises(ValueError, '`warmup_steps` must be an int in [1, total_steps=100]'): warmup_cosine(opt, 0, 100)
    if not torch.cuda.is_available():
        with raises(RuntimeError, 'CUDA is not available'): default_device('cuda')
    with raises(ValueError, '`a` must be 2-D'): show_heatmap(torch.zeros(2, 3, 4))
    with raises(ValueError, '`img` must be'): show_image(torch.zeros(2, 2, 2, 2))


def test_core_checks():
    dims = check_shape(torch.zeros(2, 5, 7), 'inputs', ('B', 'M', 7))
    with raises(ValueError, '`attention_mask` must have shape (B, M) with B=2, got shape (3, 5) (B=3)'):
        check_shape(torch.ones(3, 5), 'attention_mask', ('B', 'M'), dims)
    with raises(ValueError, '`inputs` must have 3 dimensions (B, M, 7), got 2 dimensions'):
        check_shape(torch.zeros(2, 5), 'inputs', ('B', 'M', 7))
    with raises(ValueError, '`pixel_values` must have 2+ dimensions (B, ..., 5)'): check_shape(torch.zeros(5), 'pixel_values', ('B', ..., 5))
    with raises(ValueError, '`pixel_values` must have shape (B, ..., 5), got (2, 3, 4)'):
        check_shape(torch.zeros(2, 3, 4), 'pixel_values', ('B', ..., 5))
    with raises(ValueError, '`input_ids` values must lie in [0, 262), got 262'): check_range(torch.tensor([3, 262]), 'input_ids', 0, 262)
    with raises(ValueError, 'got -1'): check_range(torch.tensor([-1, 2]), 'input_ids', 0, 262)
    with raises(TypeError, '`pixel_values` must be floating point'):
        check_float_dtype(torch.zeros(2, dtype=torch.uint8), 'pixel_values', torch.float32)


# 01_bytes_tokenizer
def test_tokenizer_refusals():
    from perceiver_nb.tokenizer import PerceiverTokenizer
    tok = PerceiverTokenizer()
    texts = ['hello', 'é', '汉字 🙂']
    with raises(ValueError, 'rows of lengths [7, 4, 13]'): tok(texts, return_tensors='np')
    with raises(ValueError, 'got -1'): tok.decode(torch.tensor([-1]))
    with raises(ValueError, '`sequences` must be a batch'): tok.batch_decode(7)


# 02_attention, 03_layers, 04_encoder
def test_attention_layer_encoder_refusals():
    from perceiver_nb.attention import PerceiverAttention, PerceiverSelfAttention
    from perceiver_nb.encoder import PerceiverEncoder, PerceiverEmbeddings
    cfg = PerceiverConfig(attention_probs_dropout_prob=0.1)
    xattn = PerceiverSelfAttention(cfg, is_cross_attention=True, qk_channels=4, v_channels=10, num_heads=2, q_dim=8, kv_dim=6).eval()
    z, x = torch.randn(2, 5, 8), torch.randn(2, 7, 6)
    with raises(ValueError, '`inputs` must have shape (B, M, 6) with B=2, got shape (1, 7, 6) (B=1)'): xattn(z, inputs=x[:1])
    with raises(ValueError, '`v_channels`=10 must be divisible by `num_heads`=4'): PerceiverSelfAttention(cfg, v_channels=10, num_heads=4, q_dim=8)
    with raises(ValueError, 'needs `v_channels`=4 equal to `q_dim`=8'): PerceiverAttention(cfg, q_dim=8, qk_channels=4)
    cfg = PerceiverConfig(num_latents=5, d_latents=8, d_model=6, num_self_attends_per_block=1, num_self_attention_heads=2,
                          num_cross_attention_heads=1)
    enc = PerceiverEncoder(cfg).eval()
    z = PerceiverEmbeddings(cfg)(2).detach()
    with raises(ValueError, '`inputs` must have 3 dimensions (B, M, 6), got 2 dimensions'): enc(z, inputs=x[0])
    with raises(ValueError, '`hidden_states` must have shape (B, N, 8), got (2, 5, 4)'): enc(z[..., :4], inputs=x)


# 05_position_encoding
def test_position_encoding_refusals():
    from perceiver_nb.position import (PerceiverFourierPositionEncoding, PerceiverTrainablePositionEncoding,
                                       build_position_encoding, generate_fourier_features)
    with raises(ValueError, 'covers 60 positions'): PerceiverTrainablePositionEncoding(60, 2)(1, input_size=(10, 12))
    with raises(ValueError, 'not a square number'): PerceiverTrainablePositionEncoding(60, 2)(1, True, (10, 12))
    with raises(ValueError, 'needs `input_size`'): PerceiverTrainablePositionEncoding(64, 2)(1, True, None)
    pos = torch.tensor([[[0.5, -0.25], [1.0, 0.1]]])
    with raises(ValueError, '`pos` must have shape (B, P, 3)'): generate_fourier_features(pos, 3, (6, 10, 4))
    with raises(ValueError, '`num_bands` must be a positive int'): generate_fourier_features(pos, 0, (6, 10))
    fpe = PerceiverFourierPositionEncoding(num_bands=3, max_resolution=(6, 10))
    with raises(ValueError, '`index_dims` must have 2 entries'): fpe((6, 10, 2), 2, 'cpu', torch.float32)
    with raises(ValueError, '`pos` must have shape (*, *, 2)'): fpe((6, 10), 2, 'cpu', torch.float32, pos=torch.zeros(2, 4, 1))
    with raises(ValueError, 'needs `out_channels`'):
        build_position_encoding('trainable', project_pos_dim=4, trainable_position_encoding_kwargs=dict(index_dims=3))


# 06_config
def test_config_refusals(tmp_path):
    with raises(ValueError, '`hidden_act` must be one of'): get_activation('gleu')
    with raises(ValueError, '`hidden_act` must be one of'): PerceiverConfig(hidden_act='gleu')
    with raises(ValueError, '`qk_channels` must be a positive int or None'): PerceiverConfig(qk_channels=12.5)
    with raises(ValueError, "must be one of ('kv', 'q'), got 'k'"): PerceiverConfig(cross_attention_shape_for_attention='k')
    with raises(ValueError, '`train_size` must have 2 entries'): PerceiverConfig(train_size=[368])
    with raises(ValueError, '`problem_type` must be one of'): PerceiverConfig(problem_type='ranking')
    with raises(AttributeError, "no field 'no_such_field'"): PerceiverConfig().no_such_field


# 08_weights
def test_weights_refusals(tmp_path):
    from perceiver_nb import PerceiverForImageClassificationFourier, PerceiverModel
    from perceiver_nb.weights import PerceiverPreTrainedModel
    cfg = PerceiverConfig(num_latents=3, d_latents=8, num_blocks=1, num_self_attends_per_block=1, num_self_attention_heads=1,
                          num_cross_attention_heads=1, num_labels=3, image_size=8)
    with raises(ValueError, '`config` must be a PerceiverConfig, got dict'): PerceiverForImageClassificationFourier(dict(num_latents=6))
    model = PerceiverForImageClassificationFourier(cfg)
    model.save_pretrained(tmp_path/'m')
    with raises(ValueError, "unknown config field 'num_lables'"): PerceiverForImageClassificationFourier.from_pretrained(tmp_path/'m', num_lables=3)
    with raises(ValueError, '(3, 8) vs (5, 8)'): PerceiverForImageClassificationFourier.from_pretrained(tmp_path/'m', num_labels=5)
    with raises(ValueError, 'is a file, not a checkpoint directory'): PerceiverForImageClassificationFourier.from_pretrained(tmp_path/'m'/'config.json')

    class NoEncoder(PerceiverPreTrainedModel):
        def __init__(self, config):
            super().__init__(config)
            self.classifier = nn.Linear(config.d_model, config.num_labels)
            self.post_init()
    with raises(ValueError, 'has no encoder whose layers could be checkpointed'): NoEncoder(cfg).gradient_checkpointing_enable()


# 10_text_preprocessor, 11_image_preprocessor, 12_audio_preprocessor
def test_preprocessor_refusals():
    from perceiver_nb.preprocessors.text import PerceiverTextPreprocessor
    from perceiver_nb.preprocessors.image import PerceiverImagePreprocessor, space_to_depth
    from perceiver_nb.preprocessors.audio import PerceiverAudioPreprocessor
    prep = PerceiverTextPreprocessor(PerceiverConfig(d_model=6, max_position_embeddings=9))
    with raises(ValueError, '`inputs` must hold integer token ids, got dtype torch.float32'): prep(torch.zeros(2, 5))

    with raises(ValueError, '`frames` time 3 must be divisible by `temporal_block_size`=2'):
        space_to_depth(torch.zeros(1, 3, 3, 8, 8), temporal_block_size=2)
    with raises(ValueError, '`frames` must have 4 dimensions (B, C, H, W) or 5 dimensions'): space_to_depth(torch.zeros(3, 8, 8))
    cfg = PerceiverConfig()
    fourier = dict(fourier_position_encoding_kwargs=dict(num_bands=4, max_resolution=(24, 32)))
    batch = torch.rand(2, 3, 24, 32)
    with raises(ValueError, 'set `project_pos_dim`=5'):
        PerceiverImagePreprocessor(cfg, prep_type='conv1x1', out_channels=5, concat_or_add_pos='add', **fourier)(batch)
    with raises(ValueError, 'project_pos_dim=8 projects from `out_channels`=64 channels, but the position encoding has 18'):
        PerceiverImagePreprocessor(cfg, prep_type='pixels', project_pos_dim=8, **fourier)
    prep = PerceiverImagePreprocessor(cfg, prep_type='conv1x1', spatial_downsample=1, **fourier).requires_grad_(False)
    with raises(ValueError, '`inputs` must have 4 dimensions (B, C, H, W) or 5 dimensions (B, T, C, H, W), got 3 dimensions'):
        prep(torch.zeros(24, 32, 3))
    video_prep = PerceiverImagePreprocessor(cfg, prep_type='patches', spatial_downsample=4,
                                            fourier_position_encoding_kwargs=dict(num_bands=2, max_resolution=(4, 2, 3))).requires_grad_(False)
    with raises(ValueError, '`inputs` height 10 must be divisible by `spatial_downsample`=4'): video_prep(torch.zeros(2, 4, 3, 10, 12))
    with raises(ValueError, '`inputs` has 8 channels (axis 2 of shape (2, 4, 8, 8, 12))'): video_prep(torch.zeros(2, 4, 8, 8, 12))
    flow_prep = PerceiverImagePreprocessor(cfg, prep_type='patches', spatial_downsample=1, temporal_downsample=2,
                                           conv_after_patching=True, conv_after_patching_in_channels=54,
                                           fourier_position_encoding_kwargs=dict(num_bands=3, max_resolution=(6, 10)))

    prep = PerceiverAudioPreprocessor(cfg, samples_per_patch=16, fourier_position_encoding_kwargs=dict(num_bands=8, max_resolution=(96,)))
    clips = torch.rand(4, 96, 1) * 2 - 1
    with raises(TypeError, '`inputs` must be a floating-point waveform'): prep((clips * 32767).to(torch.int16))


# 15_image_processor
def test_image_processor_refusals(tmp_path):
    from perceiver_nb.image_processor import PerceiverImageProcessor, _channel_stats, _size_dict, as_rgb_array, resize_image
    gray = np.array([[0, 128], [255, 7]], dtype=np.uint8)
    with raises(ValueError, "Pillow image in mode 'L', expected 'RGB'"): as_rgb_array(PIL.Image.fromarray(gray))
    with raises(ValueError, 'must be one image of shape (H, W), (H, W, C) or (C, H, W), got shape (5,)'): as_rgb_array(np.zeros(5))
    with raises(ValueError, 'got shape (2, 3, 8, 8)'): as_rgb_array(np.zeros((2, 3, 8, 8)))
    with raises(ValueError, 'must hold 1, 3 or 4 channels, first (C, H, W) or last (H, W, C), got shape (5, 6, 7)'): as_rgb_array(np.zeros((5, 6, 7)))
    with raises(ValueError, 'got shape (2, 6, 7)'): as_rgb_array(np.zeros((2, 6, 7)))
    with raises(ValueError, 'at least one row, column and channel, got shape (0, 7, 3)'): as_rgb_array(np.zeros((0, 7, 3)))
    with raises(ValueError, '`input_data_format` must be'): as_rgb_array(np.zeros((5, 7, 3), np.uint8), input_data_format='NHWC')
    with raises(ValueError, 'finite'): resize_image(np.full((4, 4, 3), np.nan), 2, 2)
    with raises(ValueError, "`size` must be an int, an (h, w) pair or a dict with keys 'height' and 'width'"): _size_dict({'shortest_edge': 224}, 'size')
    with raises(ValueError, '`image_std` must be a number or 3 numbers'): _channel_stats([0.5, 0.5], 'image_std')
    processor = PerceiverImageProcessor()
    a = np.random.default_rng(0).integers(0, 256, (100, 130, 3), dtype=np.uint8)
    with raises(ValueError, "`return_tensors` must be None, 'np' or 'pt'"): processor(a, return_tensors='tf')
    with raises(ValueError, '`image_mean` must be a number or 3 numbers'): PerceiverImageProcessor(image_mean=[0.5, 0.5])
    with raises(FileNotFoundError, 'no preprocessor_config.json'): PerceiverImageProcessor.from_pretrained(tmp_path/'missing')
    with raises(ValueError, '`images` must be one image (H, W), (H, W, C) or (C, H, W), a batch'): processor(np.zeros(7, np.uint8))
    with raises(ValueError, 'got shape (1, 2, 3, 8, 8)'): processor(np.zeros((1, 2, 3, 8, 8), np.uint8))
    with raises(ValueError, '`images[0]` must hold 1, 3 or 4 channels'): processor(np.zeros((2, 8, 8, 5), np.uint8))
    with raises(ValueError, '`images` must have 3 (RGB) channels, got 1 (grayscale)'): processor(a[..., 0])
    with raises(ValueError, 'too small'): processor(np.zeros((1, 6, 3), np.uint8), input_data_format='channels_last')


# 20_decoder_basic, 22_decoder_classification, 26_postprocessors
def test_decoder_and_postprocessor_refusals():
    from perceiver_nb.decoders.basic import PerceiverBasicDecoder
    from perceiver_nb.decoders.classification import PerceiverClassificationDecoder
    from perceiver_nb.postprocessors import PerceiverEmbeddingDecoder, PerceiverProjectionPostprocessor
    cfg = PerceiverConfig(d_latents=12, num_labels=3, attention_probs_dropout_prob=0.0)
    B, N, D, grid, E, E_out = 2, 5, 12, (3, 7), 10, 6
    x = torch.randn(B, 9, 4)
    four = PerceiverBasicDecoder(cfg, output_num_channels=E_out, position_encoding_type='fourier', output_index_dims=grid, num_channels=E,
                                 fourier_position_encoding_kwargs=dict(num_bands=2, max_resolution=grid)).eval()
    pts = torch.tensor([0, 4, 13, 20])
    with raises(ValueError, '`subsampled_points` values must lie in [0, 21), got 21'): four.decoder_query(x, subsampled_points=torch.tensor([3, 21]))
    with raises(ValueError, '`subsampled_points` must have 1 dimensions'): four.decoder_query(x, subsampled_points=pts[None])
    with raises(ValueError, "`position_encoding_type` must be one of ('trainable', 'fourier', 'none'), got 'sinusoid'"):
        PerceiverBasicDecoder(cfg, 3, position_encoding_type='sinusoid')
    dec = PerceiverClassificationDecoder(cfg, num_channels=D, use_query_residual=True,
                                         trainable_position_encoding_kwargs=dict(index_dims=1, num_channels=D)).eval()
    with raises(ValueError, '`query` must have shape (B, O, 12)'): dec(dec.decoder_query(x)[..., :-1], torch.randn(B, N, D))

    y = torch.randn(2, 7, 10)
    with raises(ValueError, '`inputs` must have shape (B, ..., 10), got (2, 7, 9)'): PerceiverProjectionPostprocessor(10, 3)(y[..., :-1])
    cfg = PerceiverConfig(num_labels=3, vocab_size=262, d_model=16)
    head, h = PerceiverEmbeddingDecoder(cfg), torch.randn(2, 7, 16)
    with raises(ValueError, '`hidden_states` must have shape (B, O, 16), got (2, 7, 15)'): head(h[..., :-1], nn.Embedding(262, 16))


# 33_task_flow
def test_flow_label_shape():
    from perceiver_nb import PerceiverForOpticalFlow, patches_for_flow
    model = PerceiverForOpticalFlow(PerceiverConfig(num_latents=7, d_latents=16, num_blocks=1, num_self_attends_per_block=1,
                                                    num_self_attention_heads=2, num_cross_attention_heads=1, train_size=[6, 9])).eval()
    inputs = patches_for_flow(torch.rand(3, 2, 3, 6, 9))
    with raises(ValueError, '`labels` must have shape (3, 6, 9, 2), got (3, 6, 9, 1)'): model(inputs, labels=torch.zeros(3, 6, 9, 1))


# refusals moved from the pages after the validators were unified in core (00, 02, 05)
def test_unified_validators():
    from perceiver_nb.core import _positive_int
    from perceiver_nb.attention import _setting
    from perceiver_nb.position import _check_preprocessor_args
    with raises(ValueError, '`num_latents` must be a positive int, got True'): _positive_int(True, 'num_latents')
    with raises(ValueError, 'must be a probability in [0, 1], got 2.0'): _setting(2.0, None, 'attention_probs_dropout_prob')
    with raises(ValueError, "`concat_or_add_pos` must be one of ['concat', 'add'], got 'sum'"): _check_preprocessor_args('sum', {})
