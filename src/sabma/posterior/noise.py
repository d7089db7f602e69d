"""Standard-normal noise for a large posterior on the CPU, drawn on every core.

On the CPU ``Tensor.normal_`` runs on one thread, whatever ``torch.get_num_threads()`` says: a
Mersenne Twister is a serial stream. At d = 1.9·10⁶ a draw takes 7 ms on the 2-core development
VM, more than an SGD step of the network it perturbs (docs/speed.md). A vector of at least
:data:`PARALLEL_NOISE_MIN` entries is therefore cut into :data:`NOISE_CHUNKS` pieces, each filled
from its own generator, seeded from the caller's stream; the pieces are filled by up to that
many threads (``normal_`` releases the GIL). The chunk count is fixed, so the draws depend on the
seed only, not on the number of threads. Smaller vectors, and tensors on an accelerator, take
one ``normal_`` from the caller's generator, as before.
"""

from __future__ import annotations

import itertools
import threading

import torch
from torch import Tensor

#: Vectors with at least this many entries are drawn in pieces (below it a draw costs < 4 ms).
PARALLEL_NOISE_MIN = 1 << 20
#: The number of pieces (and generators) of such a draw: fixed, so the same seed gives the same
#: draws on any number of threads.
NOISE_CHUNKS = 8


def standard_normal_(out: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Fill ``out`` with N(0, 1) draws in place and return it; reproducible from ``generator``
    (default: torch's global generator)."""
    if out.device.type != "cpu" or out.numel() < PARALLEL_NOISE_MIN or not out.is_contiguous():
        return out.normal_(generator=generator)
    seeds = torch.randint(0, 2**62, (NOISE_CHUNKS,), generator=generator).tolist()
    pieces = out.view(-1).chunk(NOISE_CHUNKS)

    order = itertools.count()  # each thread takes the next piece: a slowed thread takes fewer

    def fill() -> None:
        while (i := next(order)) < NOISE_CHUNKS:
            pieces[i].normal_(generator=torch.Generator().manual_seed(seeds[i]))

    threads = [
        threading.Thread(target=fill) for _ in range(min(NOISE_CHUNKS, torch.get_num_threads()) - 1)
    ]
    for thread in threads:
        thread.start()
    fill()
    for thread in threads:
        thread.join()
    return out
