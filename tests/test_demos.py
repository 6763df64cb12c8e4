"""Every training demo of the notebooks reaches its page's threshold for other seeds and thread counts, with margin.

The pages run each demo once (seed 0, one thread) and assert a threshold; a threshold met by a hair on one CPU is
missed on another (float sums round differently), so here each demo reruns for seeds 1-4 on one thread and for
seed 0 on two threads, and must clear the page's threshold on every run. The comments give what was measured.
"""
import pytest
import torch

from perceiver_nb.tasks.text import DEMO_SENTENCES, train_tiny_mlm, fill_in, train_digit_classifier
from perceiver_nb.core import set_seed
from perceiver_nb.tasks.image import train_shapes_classifier, attention_entropy, PerceiverForImageClassificationConvProcessing
from perceiver_nb.tokenizer import PerceiverTokenizer

RUNS = [(1, 1), (2, 1), (3, 1), (4, 1), (0, 2)]  # (seed, threads); the page runs (0, 1)
ids = lambda r: f'seed{r[0]}-threads{r[1]}'


def _span(text, word):
    i = text.encode().index(word.encode())
    return (i, i + len(word.encode()))


@pytest.mark.parametrize('run', RUNS, ids=ids)
def test_tiny_mlm(run):
    seed, threads = run
    before = torch.get_num_threads()
    model, losses = train_tiny_mlm(DEMO_SENTENCES, seed=seed, threads=threads, progress=False)
    assert torch.get_num_threads() == before  # the thread count is restored
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.05 * first, (first, last)  # measured: 5.4-5.9 -> 0.002
    tok = PerceiverTokenizer()
    cases = [(t, [_span(t, w)]) for t, w in zip(DEMO_SENTENCES, ['Latents', 'mixes', 'decode', 'embedded',
                                                                 'scales', 'linearly', 'handles', 'filled'])]
    recovered = [fill_in(model, tok, text, spans)[2] for text, spans in cases]
    assert sum(recovered) / len(recovered) >= 0.8, recovered  # measured: 1.0


@pytest.mark.parametrize('run', RUNS, ids=ids)
def test_digit_classifier(run):
    seed, threads = run
    _, accuracy, _ = train_digit_classifier(seed=seed, threads=threads, progress=False)
    assert accuracy[-1] >= 0.9, accuracy  # measured for seeds 0-9: 0.992-1.0


@pytest.mark.parametrize('run', RUNS, ids=ids)
def test_shapes_classifier(run):
    seed, threads = run
    model, _, accuracies, (x_val, _) = train_shapes_classifier(seed=seed, threads=threads, progress=False)
    assert accuracies[0][1] < 0.5 and accuracies[-1][1] >= 0.95, accuracies  # measured: 0.997-1.0
    # 32's figure of how the latents specialise: every layer attends more sharply than at the initial weights
    set_seed(seed)
    untrained = PerceiverForImageClassificationConvProcessing(model.config).eval()
    means = {}
    for name, m in (('before', untrained), ('trained', model)):
        with torch.no_grad(): o = m(x_val[:64], output_attentions=True)
        maps = [o.cross_attentions[0], *o.attentions, o.cross_attentions[1]]
        means[name] = [attention_entropy(a).mean().item() for a in maps]
    assert all(t < u for t, u in zip(means['trained'], means['before'])), means
    assert means['trained'][0] < means['before'][0] - 0.1, means  # measured seeds 0-2: cross 0.29-0.34 vs 0.51-0.56
