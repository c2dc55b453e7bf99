"""Long signals in overlapping chunks, joined again by cross-fades.

A signal too long to process in one piece is cut into chunks of ``chunk``
samples that overlap by ``overlap`` samples (:func:`chunk_layout`). The
chunks are processed in groups of at most ``max_batch``; each processed
chunk is weighted by fade-in and fade-out ramps (:func:`chunk_windows`,
:func:`crossfade_windows`) and the chunks are summed back in place
(:func:`overlap_add`). :func:`process_in_chunks` runs the whole loop with
memory bounded by one group: the joined signal is handed on piece by piece
as soon as no later chunk overlaps it.

Nothing here knows about enhancement: the processing is a callback.
:class:`speechbrain_elbo.inference.DiffusionEnhancement` uses it for long
tensors and files.

Example
-------
>>> signal = torch.randn(1000)
>>> pieces = []
>>> process_in_chunks(TensorReader(signal), lambda c, lengths, first: c,
...                   pieces.append, chunk=400, overlap=100)
3
>>> torch.allclose(torch.cat(pieces), signal, atol=1e-6)
True
"""

import math

import torch

__all__ = [
    "CROSSFADES",
    "crossfade_windows",
    "chunk_windows",
    "overlap_add",
    "check_chunking",
    "chunk_sizes",
    "chunk_layout",
    "chunk_groups",
    "process_in_chunks",
    "TensorReader",
]

#: Cross-fade shapes accepted by :func:`crossfade_windows`.
CROSSFADES = ("raised_cosine", "linear", "equal_power")


def crossfade_windows(overlap, kind="raised_cosine", device=None):
    """Fade-in and fade-out ramps of ``overlap`` samples.

    - ``"raised_cosine"`` (default): ``sin^2`` / ``cos^2`` half-period
      ramps. They sum to exactly one, so two identical overlapping signals
      join into the signal itself, and the ramps have zero slope at both
      ends: no seam in level or in slope.
    - ``"linear"``: straight ramps; they also sum to one, with a slope
      discontinuity at the ends.
    - ``"equal_power"``: ``sin`` / ``cos``; their *squares* sum to one,
      which keeps the power of two *uncorrelated* signals constant but
      raises correlated ones by up to sqrt(2) (3 dB) mid-fade. Chunks
      enhanced from overlapping audio are strongly correlated, so this
      option creates a level bump (see the tests); it is offered for
      comparison only.

    Arguments
    ---------
    overlap : int
        Number of samples of the fade (>= 1).
    kind : str
        One of ``"raised_cosine"``, ``"linear"``, ``"equal_power"``.
    device : torch.device, optional
        Device of the ramps.

    Returns
    -------
    fade_in, fade_out : torch.Tensor
        Float32 ramps of shape (overlap,); ``fade_out`` is ``fade_in``
        reversed.

    Example
    -------
    >>> fade_in, fade_out = crossfade_windows(4)
    >>> fade_in
    tensor([0.0381, 0.3087, 0.6913, 0.9619])
    >>> fade_in + fade_out
    tensor([1., 1., 1., 1.])
    """
    if overlap < 1:
        raise ValueError(f"overlap must be >= 1 sample, got {overlap}.")
    if kind not in CROSSFADES:
        raise ValueError(
            f"Unknown cross-fade {kind!r}; choose from {CROSSFADES}."
        )
    # sample centres, so that the ramp is symmetric and never exactly 0 or 1
    position = (torch.arange(overlap, device=device) + 0.5) / overlap
    if kind == "raised_cosine":
        fade_in = torch.sin(0.5 * math.pi * position) ** 2
    elif kind == "linear":
        fade_in = position
    else:
        fade_in = torch.sin(0.5 * math.pi * position)
    fade_in = fade_in.float()
    return fade_in, fade_in.flip(0)


def chunk_windows(
    num_chunks, chunk, overlap, first, last, kind="raised_cosine"
):
    """Per-chunk weights for an overlap-add join, shape (num_chunks, chunk).

    Each chunk fades in over its first ``overlap`` samples and out over its
    last ones, except the very first chunk of the signal (no fade-in) and
    the very last (no fade-out).

    Arguments
    ---------
    num_chunks : int
        Number of chunks in this group.
    chunk : int
        Chunk length in samples: >= 2 overlap, except for a group that is
        only the signal's last chunk (> overlap).
    overlap : int
        Overlap between consecutive chunks in samples.
    first, last : bool
        Whether the group's first (last) chunk is the signal's first (last).
    kind : str
        Cross-fade shape, see :func:`crossfade_windows`.

    Example
    -------
    >>> chunk_windows(2, 4, 2, True, True, "linear")
    tensor([[1.0000, 1.0000, 0.7500, 0.2500],
            [0.2500, 0.7500, 1.0000, 1.0000]])
    >>> chunk_windows(1, 3, 2, False, True, "linear")  # a short last chunk
    tensor([[0.2500, 0.7500, 1.0000]])
    """
    windows = torch.ones(num_chunks, chunk)
    if overlap == 0:
        return windows
    fade_in, fade_out = crossfade_windows(overlap, kind)
    # Only the fades that exist are written: a final chunk shorter than two
    # overlaps keeps its whole fade-in.
    windows[int(first) :, :overlap] = fade_in
    windows[: num_chunks - int(last), chunk - overlap :] = fade_out
    return windows


def overlap_add(chunks, hop):
    """Sum chunks placed ``hop`` samples apart (vectorised, via ``fold``).

    Arguments
    ---------
    chunks : torch.Tensor
        Shape (N, C): N chunks of C samples (already windowed).
    hop : int
        Distance between chunk starts (<= C).

    Returns
    -------
    torch.Tensor
        Shape ((N - 1) hop + C,).

    Example
    -------
    >>> overlap_add(torch.ones(3, 4), hop=2)
    tensor([1., 1., 2., 2., 2., 2., 1., 1.])
    """
    count, size = chunks.shape
    if hop < 1 or hop > size:
        raise ValueError(f"hop must lie in [1, {size}], got {hop}.")
    length = (count - 1) * hop + size
    folded = torch.nn.functional.fold(
        chunks.t().unsqueeze(0),
        output_size=(1, length),
        kernel_size=(1, size),
        stride=(1, hop),
    )
    return folded.reshape(length)


def check_chunking(chunk_seconds, overlap_seconds):
    """Raise a ValueError unless the chunk settings are usable.

    Example
    -------
    >>> check_chunking(10.0, 1.0)
    >>> check_chunking(1.0, 0.75)
    Traceback (most recent call last):
    ...
    ValueError: overlap_seconds (0.75) must be at most half of chunk_seconds...
    """
    if chunk_seconds <= 0 or overlap_seconds < 0:
        raise ValueError(
            "chunk_seconds must be > 0 and overlap_seconds >= 0, got "
            f"{chunk_seconds} and {overlap_seconds}."
        )
    if 2 * overlap_seconds > chunk_seconds:
        raise ValueError(
            f"overlap_seconds ({overlap_seconds}) must be at most half "
            f"of chunk_seconds ({chunk_seconds})."
        )


def chunk_sizes(chunk_seconds, overlap_seconds, sample_rate, hop, min_samples):
    """Chunk and overlap lengths in samples, in whole hops of ``hop``.

    Rounded to whole STFT hops, every chunk starts on the frame grid of the
    whole signal, so a chunk's inner frames are the whole signal's frames;
    the overlap is at most half a chunk.

    Arguments
    ---------
    chunk_seconds, overlap_seconds : float
        Requested lengths (checked by :func:`check_chunking`).
    sample_rate : int
        Sample rate of the signal, in Hz.
    hop : int
        The STFT hop, in samples.
    min_samples : int
        Shortest chunk allowed.

    Returns
    -------
    chunk, overlap : int

    Example
    -------
    >>> chunk_sizes(1.0, 0.25, 16000, 128, 510)
    (16000, 3968)
    """
    check_chunking(chunk_seconds, overlap_seconds)
    chunk = hop * max(1, round(chunk_seconds * sample_rate / hop))
    overlap = hop * round(overlap_seconds * sample_rate / hop)
    overlap = min(overlap, chunk // (2 * hop) * hop)
    if chunk < min_samples:
        raise ValueError(
            f"chunk_seconds={chunk_seconds} is shorter than the model's "
            f"minimum input of {min_samples} samples."
        )
    return chunk, overlap


def chunk_layout(num_samples, chunk, overlap):
    """How a signal is cut into overlapping chunks.

    A signal no longer than ``chunk`` is one chunk of its own length.
    Otherwise chunks of ``chunk`` samples start every ``chunk - overlap``
    samples; the last one is zero-padded past the end of the signal.

    Returns
    -------
    count : int
        Number of chunks.
    size : int
        Chunk length in samples.
    hop : int
        Distance between chunk starts.

    Example
    -------
    >>> chunk_layout(100, 40, 10)
    (3, 40, 30)
    >>> chunk_layout(30, 40, 10)
    (1, 30, 30)
    """
    if num_samples <= chunk:
        return 1, num_samples, num_samples
    hop = chunk - overlap
    count = math.ceil((num_samples - overlap) / hop)
    return count, chunk, hop


def chunk_groups(count, max_batch):
    """Consecutive (first, last) chunk ranges of at most ``max_batch``.

    Example
    -------
    >>> chunk_groups(5, 2)
    [(0, 2), (2, 4), (4, 5)]
    """
    return [
        (first, min(first + max_batch, count))
        for first in range(0, count, max_batch)
    ]


class TensorReader:
    """Reads spans of a 1-D tensor, zero-padded past its end.

    The reader interface of :func:`process_in_chunks`: ``num_samples`` and
    ``read(start, stop)``.

    Arguments
    ---------
    waveform : torch.Tensor
        Shape (L,).

    Example
    -------
    >>> TensorReader(torch.arange(1.0, 4.0)).read(2, 5)
    tensor([3., 0., 0.])
    """

    def __init__(self, waveform):
        self.waveform = waveform
        self.num_samples = waveform.shape[-1]

    def read(self, start, stop):
        """Samples ``start`` to ``stop`` (exclusive), zeros past the end."""
        block = self.waveform[start:stop]
        if block.shape[0] < stop - start:
            block = torch.nn.functional.pad(
                block, (0, stop - start - len(block))
            )
        return block


def process_in_chunks(
    reader,
    process,
    write,
    chunk,
    overlap,
    max_batch=1,
    crossfade="raised_cosine",
    min_samples=1,
    progress=False,
):
    """Process a signal in overlapping chunks, emitting the joined result.

    The signal is cut as :func:`chunk_layout` says; chunks are processed in
    groups of at most ``max_batch`` and joined with cross-fades. Memory is
    bounded by one group: only the group being processed and the
    ``overlap`` samples waiting for the next group's fade-in are held. The
    final chunk, when it is shorter than the others but at least
    ``min_samples`` long, is processed on its own at its true length (not
    zero-padded), so that the end of the signal sees the same boundary as
    when the signal is processed whole.

    Arguments
    ---------
    reader : object
        Has ``num_samples`` and ``read(start, stop)``, which returns the
        samples in that range as a (stop - start,) CPU tensor, zero past the
        end of the signal (e.g. :class:`TensorReader`).
    process : callable
        ``process(chunks, lengths, first)`` gets a group of chunks (N, W),
        their relative lengths (N,) (the part inside the signal) and the
        index of the group's first chunk; it returns the processed chunks
        (N, W) on the CPU.
    write : callable
        Called with consecutive pieces (1-D tensors) of the joined output;
        together they are as long as the signal.
    chunk, overlap : int
        Chunk length and overlap in samples (overlap <= chunk / 2).
    max_batch : int
        Chunks processed together.
    crossfade : str
        Cross-fade shape, see :func:`crossfade_windows`.
    min_samples : int
        Shortest chunk ``process`` accepts.
    progress : bool
        Show a progress bar over the groups.

    Returns
    -------
    int
        The number of chunks.

    Example
    -------
    >>> groups = []
    >>> def double(chunks, lengths, first):
    ...     groups.append((first, tuple(chunks.shape)))
    ...     return 2 * chunks
    >>> out = []
    >>> process_in_chunks(TensorReader(torch.ones(9)), double, out.append,
    ...                   chunk=4, overlap=2, max_batch=2)
    4
    >>> groups  # the final chunk alone, at its true length
    [(0, (2, 4)), (2, (1, 4)), (3, (1, 3))]
    >>> torch.allclose(torch.cat(out), torch.full((9,), 2.0))
    True
    """
    total = reader.num_samples
    count, size, hop = chunk_layout(total, chunk, overlap)
    overlap = size - hop if count > 1 else 0
    groups = chunk_groups(count, max_batch)
    tail = total - (count - 1) * hop  # samples of the final chunk
    if count > 1 and tail < size and tail >= min_samples:
        if groups[-1][1] - groups[-1][0] > 1:
            first, last = groups.pop()
            groups += [(first, last - 1), (last - 1, last)]
    if progress:
        from tqdm.auto import tqdm

        groups = tqdm(groups, desc="Enhancing chunks", unit="group")
    carry = None
    emitted = 0
    for first, last in groups:
        width = size
        if last == count and last - first == 1 and tail >= min_samples:
            width = min(size, tail)  # the final chunk, unpadded
        span = reader.read(first * hop, (last - 1) * hop + width)
        chunks = span.unfold(0, width, hop) if last - first > 1 else span[None]
        valid = (total - torch.arange(first, last) * hop).clamp(max=width)
        processed = process(chunks, valid.float() / width, first)
        windows = chunk_windows(
            last - first, width, overlap, first == 0, last == count, crossfade
        )
        joined = overlap_add(processed * windows, min(hop, width))
        if carry is not None:
            joined[:overlap] += carry
        if last == count:
            piece = joined[: total - emitted]
        else:
            cut = joined.shape[0] - overlap
            piece, carry = joined[:cut], joined[cut:].clone()
            carry = carry if overlap else None
        write(piece)
        emitted += piece.shape[0]
    return count
