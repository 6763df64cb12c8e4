"""One optimizer step of a tiny PerceiverForMaskedLM with `perceiver_nb.training.train`, for tests/test_training.py.

Run as one process it trains on the whole fixed batch; launched by `torchrun --nproc_per_node=2` each process takes
half of it (DDP, gloo on the CPU). Rank 0 (or the single process) writes the weights after the step, as safetensors,
to the path given as the first argument. Every row of the batch has the same number of labelled bytes, so the mean
loss over the batch equals the mean of the two halves' mean losses, which is what DDP's gradient averaging assumes.
"""
import os, sys
import torch
from safetensors.torch import save_file

from perceiver_nb.config import PerceiverConfig
from perceiver_nb.core import set_seed
from perceiver_nb.tasks.text import PerceiverForMaskedLM
from perceiver_nb.training import TrainConfig, train
from perceiver_nb.weights import unique_state_dict


def fixed_batch(rows: int = 4, length: int = 24) -> dict:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(6, 262, (rows, length), generator=g)
    labels = torch.full_like(ids, -100)
    for r in range(rows):  # three labelled positions per row, at different places
        pos = torch.randperm(length, generator=g)[:3]
        labels[r, pos] = ids[r, pos]
    return dict(inputs=ids.masked_fill(labels != -100, 3), attention_mask=torch.ones_like(ids), labels=labels)


def tiny_model() -> PerceiverForMaskedLM:
    set_seed(0)
    return PerceiverForMaskedLM(PerceiverConfig(num_latents=8, d_latents=32, d_model=16, num_self_attends_per_block=1,
        num_self_attention_heads=2, num_cross_attention_heads=2, max_position_embeddings=24,
        attention_probs_dropout_prob=0.0))


def one_step() -> PerceiverForMaskedLM:
    model = tiny_model()
    train(model, [fixed_batch()], TrainConfig(lr=1e-2, total_steps=1, warmup_steps=1, progress=False))
    return model


if __name__ == '__main__':
    torch.set_num_threads(1)
    model = one_step()
    if int(os.environ.get('RANK', '0')) == 0:
        save_file({k: v.contiguous() for k, v in unique_state_dict(model.state_dict()).items()}, sys.argv[1])
