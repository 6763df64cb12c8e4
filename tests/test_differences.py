"""Differences from transformers listed in the appendix (`nbs/95_differences.ipynb`) that no other test file shows:
each test checks transformers' behaviour and ours side by side, so a transformers release that changes either side
is noticed."""
import numpy as np
import PIL.Image
import pytest
import torch
import transformers
import transformers.models.perceiver.modeling_perceiver as hf

from perceiver_nb.outputs import PerceiverClassifierOutput
from perceiver_nb.tokenizer import PerceiverTokenizer
from perceiver_nb.image_processor import PerceiverImageProcessor


def test_output_keys_follow_the_fields_not_the_insertion_order():
    logits = torch.randn(2, 3)
    theirs, ours = hf.PerceiverClassifierOutput(logits=logits), PerceiverClassifierOutput(logits=logits)
    theirs.loss = ours.loss = torch.tensor(0.7)
    assert list(theirs.keys()) == ['logits', 'loss'] and list(ours.keys()) == ['loss', 'logits']
    assert theirs[0] is logits and ours[0] is ours.loss  # positions follow the keys
    theirs.loss = ours.loss = None
    assert 'loss' not in ours and ours.to_tuple() == (logits,)


def test_output_reads_a_positional_argument_as_the_first_field():
    logits = torch.randn(2, 3)
    assert hf.PerceiverClassifierOutput([('logits', logits)]).logits is logits  # an iterable of (name, value) pairs
    assert PerceiverClassifierOutput([('logits', logits)]).logits is None  # a dataclass: the first field, `loss`


def test_unknown_token_is_refused():
    theirs, ours = transformers.PerceiverTokenizer(), PerceiverTokenizer()
    got = theirs.convert_tokens_to_ids('汉')
    assert got is None or got >= len(ours)  # no valid id: None, or one past the 262-entry vocabulary
    with pytest.raises(ValueError, match='`tokens` must hold special tokens'): ours.convert_tokens_to_ids('汉')


def test_cmyk_image_is_refused_with_the_fix():
    cmyk = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)).convert('CMYK')
    theirs = transformers.PerceiverImageProcessorPil(size={'height': 8, 'width': 8}, crop_size={'height': 8, 'width': 8})
    with pytest.raises(ValueError, match='mean must have 4 elements'): theirs(cmyk)  # from deep inside normalize
    with pytest.raises(ValueError, match="mode 'CMYK', expected 'RGB'"): PerceiverImageProcessor()(cmyk)
    assert PerceiverImageProcessor(size=8, crop_size=8)(cmyk, do_convert_rgb=True, return_tensors='np').pixel_values.shape == (1, 3, 8, 8)
