"""Comparison helpers shared by the equivalence tests against transformers."""
import torch


def assert_outputs_close(ours, theirs, what: str, tol: float = 1e-4):
    "Logits, and every hidden state and attention map that either output carries, agree within `tol` (absolute)."
    assert ours.logits.shape == theirs.logits.shape, (what, ours.logits.shape, theirs.logits.shape)
    gap = (ours.logits - theirs.logits).abs().max().item()
    assert gap <= tol, f'{what}: logits differ by {gap}'
    for field in ('hidden_states', 'attentions', 'cross_attentions'):
        a, b = getattr(ours, field), getattr(theirs, field)
        assert (a is None) == (b is None), (what, field)
        if a is None: continue
        assert len(a) == len(b), (what, field, len(a), len(b))
        for i, (x, y) in enumerate(zip(a, b)):
            assert x.shape == y.shape, (what, field, i, x.shape, y.shape)
            assert torch.allclose(x, y, atol=tol, rtol=0), f'{what}: {field}[{i}] differs by {(x - y).abs().max()}'
