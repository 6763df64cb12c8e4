"""`PerceiverImageProcessor` against transformers' `PerceiverImageProcessorPil`: pixel values on random images, configs.

Built directly (no hub). Sizes avoid 1, 3 and 4 rows or columns so no layout is ambiguous. Exact equality is expected
for uint8 input (same Pillow calls, same float64-then-float32 arithmetic); the assertions allow 1e-5.
"""
import json, warnings

import numpy as np
import PIL.Image
import pytest
import torch

transformers = pytest.importorskip('transformers')
from perceiver_nb.image_processor import PerceiverImageProcessor, PerceiverFeatureExtractor

TOL = 1e-5


def _hf(**kw): return transformers.PerceiverImageProcessorPil(**kw)


def _random_size(rng):
    "Small, mid and large sides, square and not; never 1, 3 or 4 (ambiguous channel axis)."
    pick = lambda: int(rng.choice([rng.integers(5, 64), rng.integers(64, 224), rng.integers(224, 520)]))
    return pick(), pick()


def _image(rng, hw=None):
    h, w = hw or _random_size(rng)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _layouts(hwc):
    "The same picture as PIL, NumPy HWC, NumPy CHW, torch CHW and torch HWC."
    return {'pil': PIL.Image.fromarray(hwc), 'np_hwc': hwc, 'np_chw': np.ascontiguousarray(hwc.transpose(2, 0, 1)),
            'pt_chw': torch.from_numpy(hwc).permute(2, 0, 1), 'pt_hwc': torch.from_numpy(hwc)}


def _maxdiff(ours, theirs):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    assert ours.dtype == np.float32 and theirs.dtype == np.float32
    return float(np.abs(ours - theirs).max())


@pytest.mark.parametrize('seed', range(6))
def test_parity_random_images_all_layouts(seed):
    rng = np.random.default_rng(seed)
    ours, hf = PerceiverImageProcessor(), _hf()
    hwc = _image(rng)
    reference = hf(PIL.Image.fromarray(hwc), return_tensors='np')['pixel_values']
    assert reference.shape == (1, 3, 224, 224)
    for name, img in _layouts(hwc).items():
        assert _maxdiff(ours(img, return_tensors='np').pixel_values, reference) <= TOL, name
        assert _maxdiff(hf(img, return_tensors='np')['pixel_values'], reference) == 0, name


@pytest.mark.parametrize('hw', [(224, 224), (256, 256), (7, 9), (9, 7), (50, 300), (517, 211), (100, 101)])
def test_parity_edge_sizes(hw):
    img = _image(np.random.default_rng(sum(hw)), hw)
    theirs = _hf()(img, return_tensors='np')['pixel_values']
    assert _maxdiff(PerceiverImageProcessor()(img, return_tensors='np').pixel_values, theirs) <= TOL


def test_parity_batch_of_different_sizes_pt_and_np():
    rng = np.random.default_rng(10)
    imgs = [_image(rng) for _ in range(5)]
    mixed = [PIL.Image.fromarray(imgs[0]), imgs[1], imgs[2].transpose(2, 0, 1), torch.from_numpy(imgs[3]).permute(2, 0, 1), imgs[4]]
    ours, hf = PerceiverImageProcessor(), _hf()
    theirs = hf(imgs, return_tensors='pt')['pixel_values']
    got_pt = ours(mixed, return_tensors='pt').pixel_values
    assert isinstance(got_pt, torch.Tensor) and got_pt.shape == (5, 3, 224, 224) and got_pt.dtype == torch.float32
    assert _maxdiff(got_pt.numpy(), theirs.numpy()) <= TOL
    got_np = ours(mixed, return_tensors='np').pixel_values
    assert isinstance(got_np, np.ndarray) and _maxdiff(got_np, theirs.numpy()) <= TOL
    got_list = ours(imgs).pixel_values
    theirs_list = hf(imgs)['pixel_values']
    assert isinstance(got_list, list) and len(got_list) == 5
    assert max(_maxdiff(o, t) for o, t in zip(got_list, theirs_list)) <= TOL


def test_parity_4d_batches():
    rng = np.random.default_rng(11)
    batch = rng.integers(0, 256, (3, 70, 90, 3), dtype=np.uint8)
    theirs = _hf()(batch, return_tensors='np')['pixel_values']
    ours = PerceiverImageProcessor()
    assert _maxdiff(ours(batch, return_tensors='np').pixel_values, theirs) <= TOL
    assert _maxdiff(ours(torch.from_numpy(batch).permute(0, 3, 1, 2), return_tensors='pt').pixel_values.numpy(), theirs) <= TOL


CONFIGS = [
    dict(size={'height': 96, 'width': 128}, crop_size={'height': 100, 'width': 140}),
    dict(size={'height': 64, 'width': 64}, crop_size={'height': 48, 'width': 40}),  # ratio > 1: zero padding
    dict(size={'height': 80, 'width': 50}, crop_size={'height': 100, 'width': 70}, resample=2),
    dict(size={'height': 33, 'width': 57}, resample=PIL.Image.Resampling.LANCZOS, image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.5, 1.0]),
    dict(do_center_crop=False, size={'height': 40, 'width': 30}, resample=0),
    dict(do_normalize=False, rescale_factor=0.5),
]


@pytest.mark.parametrize('cfg', CONFIGS, ids=range(len(CONFIGS)))
def test_parity_non_default_configs(cfg):
    rng = np.random.default_rng(20)
    imgs = [_image(rng) for _ in range(3)]
    theirs = _hf(**cfg)(imgs, return_tensors='np')['pixel_values']
    assert _maxdiff(PerceiverImageProcessor(**cfg)(imgs, return_tensors='np').pixel_values, theirs) <= TOL
    # the same options given per call
    assert _maxdiff(PerceiverImageProcessor()(imgs, return_tensors='np', **cfg).pixel_values, theirs) <= TOL


def test_parity_without_resize_keeps_size():
    img = _image(np.random.default_rng(21), (40, 70))
    for cfg in (dict(do_resize=False), dict(do_resize=False, do_center_crop=False)):
        theirs = _hf(**cfg)(img, return_tensors='np')['pixel_values']
        assert _maxdiff(PerceiverImageProcessor(**cfg)(img, return_tensors='np').pixel_values, theirs) <= TOL


def test_parity_other_dtypes():
    rng = np.random.default_rng(30)
    img = _image(rng, (60, 90))
    ours, hf = PerceiverImageProcessor(), _hf()
    for x in (img.astype(np.int64), img.astype(np.float32), img.astype(np.float64), torch.from_numpy(img.astype(np.int32))):
        assert _maxdiff(ours(x, return_tensors='np').pixel_values, hf(x, return_tensors='np')['pixel_values']) <= TOL
    fractional = rng.random((60, 90, 3))  # not multiples of 1/255: truncated to 8 bits before the Pillow resize
    for do_rescale in (False, True):
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            got = ours(fractional, do_rescale=do_rescale, return_tensors='np').pixel_values
        assert _maxdiff(got, hf(fractional, do_rescale=do_rescale, return_tensors='np')['pixel_values']) <= TOL
    with pytest.warns(UserWarning, match='do_rescale=False'):
        ours(fractional, return_tensors='np')


def test_parity_convert_rgb():
    rng = np.random.default_rng(40)
    gray = rng.integers(0, 256, (50, 70), dtype=np.uint8)
    rgba = rng.integers(0, 256, (50, 70, 4), dtype=np.uint8)
    ours, hf = PerceiverImageProcessor(do_convert_rgb=True), _hf(do_convert_rgb=True)
    for x in (PIL.Image.fromarray(gray), PIL.Image.fromarray(rgba), rgba, rgba.transpose(2, 0, 1), gray[None],
              PIL.Image.fromarray(gray).convert('P'), PIL.Image.fromarray(rgba[..., :3]).convert('CMYK')):
        assert _maxdiff(ours(x, return_tensors='np').pixel_values, hf(x, return_tensors='np')['pixel_values']) <= TOL


@pytest.mark.parametrize('bad, message', [
    (np.zeros(9, np.uint8), 'must be one image (H, W), (H, W, C) or (C, H, W)'),
    (np.zeros((2, 2, 3, 9, 9), np.uint8), 'got shape (2, 2, 3, 9, 9)'),
    (np.zeros((9, 9, 5), np.uint8), 'must hold 1, 3 or 4 channels'),
    (np.zeros((2, 9, 9), np.uint8), 'must hold 1, 3 or 4 channels'),
    (torch.zeros(9, 9, 2, dtype=torch.uint8), 'got shape (9, 9, 2)'),
    (np.zeros((9, 9), np.uint8), 'got 1 (grayscale)'),
    (np.zeros((9, 9, 1), np.uint8), 'got 1 (grayscale)'),
    (np.zeros((4, 9, 9), np.uint8), 'got 4 (RGBA)'),
    (PIL.Image.new('L', (9, 9)), "mode 'L', expected 'RGB'"),
    (PIL.Image.new('RGBA', (9, 9)), "mode 'RGBA', expected 'RGB'"),
    (np.zeros((9, 9, 3), bool), 'got dtype bool'),
    ('image.png', 'got str'),
    ([], 'at least one image'),
    ([np.zeros((9, 9, 3), np.uint8), np.zeros((9, 9, 7), np.uint8)], '`images[1]` must hold 1, 3 or 4 channels'),
    (np.full((9, 9, 3), 2.5), 'must lie in [0, 1] to be resized'),
    (np.full((9, 9, 3), 300), 'must lie in [0, 255] to be resized'),
])
def test_bad_images_are_refused(bad, message):
    with pytest.raises(ValueError) as e: PerceiverImageProcessor()(bad)
    assert message in str(e.value), str(e.value)


def test_bad_options_are_refused():
    for kw, message in [(dict(size={'shortest_edge': 9}), '`size` must be'), (dict(crop_size=(0, 5)), '`crop_size` must hold positive'),
                        (dict(resample=99), '`resample` must be'), (dict(image_std=[1, 0, 1]), 'must not contain 0'),
                        (dict(do_rescale='no'), '`do_rescale` must be True or False')]:
        with pytest.raises(ValueError, match=None) as e: PerceiverImageProcessor(**kw)
        assert message in str(e.value)
        with pytest.raises(ValueError) as e: PerceiverImageProcessor()(np.zeros((9, 9, 3), np.uint8), **kw)
        assert message in str(e.value)
    with pytest.raises(ValueError, match='return_tensors'): PerceiverImageProcessor()(np.zeros((9, 9, 3), np.uint8), return_tensors='jax')


@pytest.mark.parametrize('cfg', [{}] + CONFIGS + [dict(do_convert_rgb=True)], ids=range(len(CONFIGS) + 2))
def test_config_round_trips(cfg, tmp_path):
    ours = PerceiverImageProcessor(**cfg)
    assert json.loads(ours.to_json_string()) == json.loads(_hf(**cfg).to_json_string())
    ours.save_pretrained(tmp_path / 'ours')
    hf_loaded = transformers.PerceiverImageProcessorPil.from_pretrained(tmp_path / 'ours')
    assert json.loads(hf_loaded.to_json_string()) == ours.to_dict()
    _hf(**cfg).save_pretrained(tmp_path / 'hf')
    assert PerceiverImageProcessor.from_pretrained(tmp_path / 'hf').to_dict() == ours.to_dict()
    assert PerceiverImageProcessor.from_pretrained(tmp_path / 'hf' / 'preprocessor_config.json').to_dict() == ours.to_dict()
    img = _image(np.random.default_rng(50), (60, 80))
    assert _maxdiff(PerceiverImageProcessor.from_pretrained(tmp_path / 'hf')(img, return_tensors='np').pixel_values,
                    hf_loaded(img, return_tensors='np')['pixel_values']) <= TOL


def test_legacy_config_and_feature_extractor(tmp_path):
    legacy = {'crop_size': 256, 'do_center_crop': True, 'do_normalize': True, 'do_resize': True,
              'feature_extractor_type': 'PerceiverFeatureExtractor', 'image_mean': [0.485, 0.456, 0.406],
              'image_std': [0.229, 0.224, 0.225], 'resample': 3, 'size': 224}
    (tmp_path / 'preprocessor_config.json').write_text(json.dumps(legacy))
    assert PerceiverImageProcessor.from_pretrained(tmp_path).to_dict() == PerceiverImageProcessor().to_dict()
    hf = transformers.PerceiverImageProcessorPil.from_pretrained(tmp_path)
    img = _image(np.random.default_rng(60), (90, 120))
    with pytest.warns(FutureWarning, match='PerceiverImageProcessor'):
        fe = PerceiverFeatureExtractor.from_pretrained(tmp_path, size=64)
    assert isinstance(fe, PerceiverImageProcessor) and fe.size == {'height': 64, 'width': 64}
    with pytest.warns(FutureWarning): fe = PerceiverFeatureExtractor()
    assert _maxdiff(fe(img, return_tensors='np').pixel_values, hf(img, return_tensors='np')['pixel_values']) <= TOL
    with pytest.raises(FileNotFoundError, match='preprocessor_config.json'): PerceiverImageProcessor.from_pretrained(tmp_path / 'nope')


def test_json_file_api_matches_transformers(tmp_path):
    "to_json_file / from_json_file / to_json_string / to_dict / valid_kwargs, under transformers' names, both ways."
    import inspect
    from perceiver_nb.image_processor import PerceiverImageProcessorKwargs
    ours, theirs = PerceiverImageProcessor(size=(20, 30), crop_size=40, do_normalize=False), _hf(size=(20, 30), crop_size=40, do_normalize=False)
    assert ours.to_json_file(tmp_path / 'ours.json') == tmp_path / 'ours.json'
    theirs.to_json_file(tmp_path / 'theirs.json')
    assert json.loads((tmp_path / 'ours.json').read_text()) == json.loads(ours.to_json_string()) == ours.to_dict()
    assert json.loads((tmp_path / 'ours.json').read_text()) == json.loads((tmp_path / 'theirs.json').read_text())
    assert PerceiverImageProcessor.from_json_file(tmp_path / 'theirs.json').to_dict() == ours.to_dict()
    assert PerceiverImageProcessor.from_json_file(tmp_path / 'theirs.json', size=8).size == {'height': 8, 'width': 8}
    back = transformers.PerceiverImageProcessorPil.from_json_file(tmp_path / 'ours.json')
    img = _image(np.random.default_rng(70), (50, 45))
    assert _maxdiff(ours(img, return_tensors='np').pixel_values, back(img, return_tensors='np')['pixel_values']) <= TOL
    # valid_kwargs: a TypedDict naming exactly what preprocess accepts besides the images, all names transformers knows
    assert PerceiverImageProcessor.valid_kwargs is PerceiverImageProcessorKwargs
    names = list(PerceiverImageProcessor.valid_kwargs.__annotations__)
    assert names == [p for p in inspect.signature(PerceiverImageProcessor.preprocess).parameters if p not in ('self', 'images')]
    assert set(names) <= set(transformers.PerceiverImageProcessorPil.valid_kwargs.__annotations__)
    assert PerceiverImageProcessor.to_json_file.__qualname__ == 'PerceiverImageProcessor.to_json_file'
    (tmp_path / 'bad.json').write_text('[1, 2]')
    with pytest.raises(ValueError, match='bad.json: not a JSON object but a JSON list'): PerceiverImageProcessor.from_json_file(tmp_path / 'bad.json')
    (tmp_path / 'bad.json').write_text('{oops')
    with pytest.raises(ValueError, match='bad.json: not valid JSON'): PerceiverImageProcessor.from_json_file(tmp_path / 'bad.json')
