"""Map the tensors of an sgmse checkpoint onto our NCSN++ backbone.

sgmse keeps its U-Net's modules in one flat list ``all_modules`` and
its attention as four ``NIN`` layers; ours are named modules with one
``qkv`` convolution (:class:`~speechbrain_elbo.lobes.ncsnpp.NCSNpp`).
:func:`backbone_tensors` takes the backbone's tensors out of a checkpoint
(the EMA weights or the raw ones) and :func:`map_ncsnpp_state` renames and
reshapes every one of them into a complete state_dict for
:class:`~speechbrain_elbo.interop.sgmse_network.SGMSENCSNpp`, refusing a
missing, misshapen or unused tensor with one line naming it.

Example
-------
>>> import torch
>>> from speechbrain_elbo.interop.sgmse_network import SGMSENCSNpp
>>> net = SGMSENCSNpp(nf=4, ch_mult=[1, 2], num_res_blocks=1,
...                   attn_resolutions=[], num_freqs=64)
>>> _ncsnpp_pairs(net)[:2]  # (ours, sgmse's, kind), in sgmse's order
[('fourier', 'all_modules.0', 'fourier'),
 ('emb_0', 'all_modules.1', 'plain')]
"""

import torch

from speechbrain_elbo.interop.checkpoint import CheckpointError

__all__ = ["map_ncsnpp_state", "backbone_tensors"]

#: Our ResNet block's layers -> sgmse's names for them.
_RES_NAMES = {
    "norm_0": "GroupNorm_0",
    "conv_0": "Conv_0",
    "dense": "Dense_0",
    "norm_1": "GroupNorm_1",
    "conv_1": "Conv_1",
    "shortcut": "Conv_2",
}


def _ncsnpp_pairs(net):
    """(our module path, sgmse module path, kind) in sgmse's module order.

    sgmse keeps the U-Net's modules in one flat list ``all_modules`` in
    forward order; ours are named. Walking both in forward order pairs them.
    """
    index = iter(range(10**6))

    def nxt():
        return f"all_modules.{next(index)}"

    pairs = [("fourier", nxt(), "fourier")]
    pairs += [("emb_0", nxt(), "plain"), ("emb_1", nxt(), "plain")]
    pairs.append(("input_conv", nxt(), "plain"))
    for level in range(net.num_levels):
        attns = net.down_attn[level]
        for i in range(len(net.down_blocks[level])):
            pairs.append((f"down_blocks.{level}.{i}", nxt(), "res"))
            if len(attns):
                pairs.append((f"down_attn.{level}.{i}", nxt(), "attn"))
        if level < net.num_levels - 1:
            pairs.append((f"down_resample.{level}", nxt(), "res"))
            if net.progressive_input == "input_skip":
                pairs.append((f"down_pyramid.{level}", nxt(), "combine"))
    pairs.append(("mid_block_0", nxt(), "res"))
    pairs.append(("mid_attn", nxt(), "attn"))
    pairs.append(("mid_block_1", nxt(), "res"))
    for step in range(net.num_levels):
        for i in range(len(net.up_blocks[step])):
            pairs.append((f"up_blocks.{step}.{i}", nxt(), "res"))
        for i in range(len(net.up_attn[step])):
            pairs.append((f"up_attn.{step}.{i}", nxt(), "attn"))
        if net.progressive == "output_skip":
            pairs.append((f"up_pyramid.{step}.0", nxt(), "plain"))
            pairs.append((f"up_pyramid.{step}.2", nxt(), "plain"))
        if step < net.num_levels - 1:
            pairs.append((f"up_resample.{step}", nxt(), "res"))
    if net.progressive != "output_skip":
        pairs.append(("final.0", nxt(), "plain"))
        pairs.append(("final.2", nxt(), "plain"))
    pairs.append(("output_layer", "output_layer", "plain"))
    return pairs


def map_ncsnpp_state(state, net):
    """Our state_dict for ``net`` from an sgmse ``ncsnpp`` state_dict.

    Arguments
    ---------
    state : dict
        sgmse backbone tensors, keys without the ``dnn.`` prefix.
    net : speechbrain_elbo.interop.sgmse_network.SGMSENCSNpp
        The network the tensors are for (its shapes are checked).

    Returns
    -------
    dict
        A complete state_dict for ``net``.

    Raises
    ------
    CheckpointError
        A missing tensor, a tensor of the wrong shape, or a tensor of the
        checkpoint that the mapping does not use (named).

    Example
    -------
    >>> from speechbrain_elbo.interop.sgmse_network import SGMSENCSNpp
    >>> net = SGMSENCSNpp(nf=4, ch_mult=[1, 2], num_res_blocks=1,
    ...                   attn_resolutions=[], num_freqs=64)
    >>> map_ncsnpp_state({"output_layer.weight": torch.zeros(2, 4, 1, 1)},
    ...                  net)
    Traceback (most recent call last):
    ...
    speechbrain_elbo.interop.checkpoint.CheckpointError: the checkpoint lacks
    the tensor dnn.all_modules.0.W ...
    """
    ours = net.state_dict()
    out, used = {}, set()

    def take(key):
        if key not in state:
            raise CheckpointError(
                f"the checkpoint lacks the tensor dnn.{key} that the "
                "configuration in its hyper_parameters needs; the checkpoint "
                "and its settings do not match."
            )
        used.add(key)
        return state[key]

    def put(key, value):
        if key not in ours or tuple(ours[key].shape) != tuple(value.shape):
            want = tuple(ours[key].shape) if key in ours else "no such tensor"
            raise CheckpointError(
                f"tensor for {key} has shape {tuple(value.shape)}, expected "
                f"{want}: the weights do not match the settings."
            )
        out[key] = value

    def copy(dst, src):
        for name in ("weight", "bias"):
            put(f"{dst}.{name}", take(f"{src}.{name}"))

    for dst, src, kind in _ncsnpp_pairs(net):
        if kind == "fourier":
            put(f"{dst}.W", take(f"{src}.W"))
        elif kind == "plain":
            copy(dst, src)
        elif kind == "combine":
            copy(f"{dst}.conv", f"{src}.Conv_0")
        elif kind == "res":
            for name, theirs in _RES_NAMES.items():
                if name != "shortcut" or f"{dst}.shortcut.weight" in ours:
                    copy(f"{dst}.{name}", f"{src}.{theirs}")
        elif kind == "attn":
            # sgmse's NIN_0..2 (q, k, v) are our qkv, NIN_3 our proj; NIN
            # weights are (in, out) matrices, ours 1x1 convolutions
            copy(f"{dst}.norm", f"{src}.GroupNorm_0")
            nin = [
                (take(f"{src}.NIN_{i}.W").t(), take(f"{src}.NIN_{i}.b"))
                for i in range(4)
            ]
            weights, biases = zip(*nin[:3], strict=True)
            put(f"{dst}.qkv.weight", torch.cat(weights)[:, :, None, None])
            put(f"{dst}.qkv.bias", torch.cat(biases))
            put(f"{dst}.proj.weight", nin[3][0][:, :, None, None])
            put(f"{dst}.proj.bias", nin[3][1])
    _check_complete(state, used, ours, out)
    return {k: v.detach().to(torch.float32).clone() for k, v in out.items()}


def _check_complete(state, used, ours, out):
    """Refuse unused checkpoint tensors and unset tensors of ours."""
    unused = sorted(set(state) - used)
    if unused:
        shown = ", ".join(f"dnn.{k}" for k in unused[:5])
        more = f" and {len(unused) - 5} more" if len(unused) > 5 else ""
        raise CheckpointError(
            f"{len(unused)} tensor(s) of the checkpoint are not used by the "
            f"configuration in its hyper_parameters: {shown}{more}; refusing "
            "a partial import."
        )
    missing = sorted(set(ours) - set(out))
    if missing:
        raise CheckpointError(
            f"the mapping left {missing[:5]} unset (a bug of the importer)."
        )


def backbone_tensors(checkpoint, use_ema=True):
    """The sgmse backbone's tensors of a checkpoint: EMA or raw.

    Arguments
    ---------
    checkpoint : dict
        A checkpoint read by
        :func:`~speechbrain_elbo.interop.checkpoint.read_checkpoint`.
    use_ema : bool
        The EMA weights (torch_ema's ``ema.shadow_params``) or the raw
        ``state_dict``.

    Returns
    -------
    tensors : dict
        Keys of the ``state_dict`` without the ``dnn.`` prefix.
    description : str
        Which weights these are, for the model card.

    Raises
    ------
    CheckpointError
        No state_dict, tensors outside the backbone, or no EMA weights or
        EMA weights that do not match the state_dict.

    Example
    -------
    >>> checkpoint = {"state_dict": {"dnn.w": torch.ones(2)},
    ...               "ema": {"shadow_params": [torch.zeros(2)],
    ...                       "decay": 0.999, "num_updates": 10}}
    >>> backbone_tensors(checkpoint)
    ({'w': tensor([0., 0.])}, 'EMA (decay 0.999, 10 updates)')
    >>> backbone_tensors(checkpoint, use_ema=False)
    ({'w': tensor([1., 1.])}, 'raw (--no-ema)')
    """
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict) or not state:
        raise CheckpointError(
            "the checkpoint has no state_dict: it is not an sgmse "
            "(Lightning) checkpoint."
        )
    foreign = sorted(k for k in state if not k.startswith("dnn."))
    if foreign:
        raise CheckpointError(
            f"the state_dict holds tensors outside the backbone "
            f"({foreign[:5]}); refusing a partial import."
        )
    raw = {k.removeprefix("dnn."): v for k, v in state.items()}
    if not use_ema:
        return raw, "raw (--no-ema)"
    ema = checkpoint.get("ema")
    shadow = ema.get("shadow_params") if isinstance(ema, dict) else None
    if shadow is None:
        raise CheckpointError(
            "the checkpoint has no EMA weights (ema.shadow_params); import "
            "the raw weights with --no-ema."
        )
    if len(shadow) != len(raw):
        raise CheckpointError(
            f"the EMA holds {len(shadow)} tensors but the backbone has "
            f"{len(raw)}: they cannot be matched; use --no-ema."
        )
    # torch_ema keeps the parameters in registration order, the order of
    # the state_dict (the sgmse backbone has no buffers).
    weights = {}
    for (key, value), avg in zip(raw.items(), shadow, strict=True):
        if tuple(avg.shape) != tuple(value.shape):
            raise CheckpointError(
                f"EMA tensor for dnn.{key} has shape {tuple(avg.shape)}, the "
                f"weight {tuple(value.shape)}: the EMA does not match; use "
                "--no-ema."
            )
        weights[key] = avg
    decay, updates = ema.get("decay"), ema.get("num_updates")
    return weights, f"EMA (decay {decay}, {updates} updates)"
