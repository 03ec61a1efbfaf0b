"""Structured pruning that rebuilds smaller layers: masks (torch.nn.utils.prune) save no compute."""

from __future__ import annotations

import copy
from typing import cast

import torch
from torch import nn

_Weighted = nn.Linear | nn.Conv2d


def _keep_count(n: int, amount: float) -> int:
    return max(1, round(n * (1.0 - amount)))


def _conv_geometry(layer: nn.Conv2d) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """kernel, stride, padding of a 2-D conv (our models use numeric padding only)."""
    if isinstance(layer.padding, str):
        raise ValueError("string padding is not supported by structured pruning")
    pair = tuple[int, int]
    return cast(pair, layer.kernel_size), cast(pair, layer.stride), cast(pair, layer.padding)


def _slice_out(layer: _Weighted, keep: torch.Tensor) -> _Weighted:
    w = layer.weight.detach()[keep].clone()
    b = layer.bias.detach()[keep].clone() if layer.bias is not None else None
    new: _Weighted
    if isinstance(layer, nn.Linear):
        new = nn.Linear(layer.in_features, len(keep), bias=b is not None)
    else:
        new = nn.Conv2d(layer.in_channels, len(keep), *_conv_geometry(layer), bias=b is not None)
    new = new.to(device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None and new.bias is not None:
            new.bias.copy_(b)
    return new


def _slice_in(layer: _Weighted, keep: torch.Tensor, block: int) -> _Weighted:
    """Drop the inputs fed by removed units; `block` > 1 when a Flatten sits between conv and linear."""
    if block > 1:
        keep = (keep[:, None] * block + torch.arange(block, device=keep.device)[None, :]).reshape(-1)
    w = layer.weight.detach()[:, keep].clone()
    b = layer.bias.detach().clone() if layer.bias is not None else None
    new: _Weighted
    if isinstance(layer, nn.Linear):
        new = nn.Linear(len(keep), layer.out_features, bias=b is not None)
    else:
        new = nn.Conv2d(len(keep), layer.out_channels, *_conv_geometry(layer), bias=b is not None)
    new = new.to(device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None and new.bias is not None:
            new.bias.copy_(b)
    return new


def prune_structured(model: nn.Sequential, amount: float) -> nn.Sequential:
    """Remove the `amount` fraction of hidden units/channels of smallest L1 weight norm (Li et al. 2017).

    Every hidden Linear/Conv2d loses output units and its successor the matching inputs; the output
    layer keeps all classes. The result is a new, genuinely smaller Sequential.
    """
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"pruning amount must be in [0, 1), got {amount}")
    layers = [copy.deepcopy(m) for m in model]
    weighted = [i for i, m in enumerate(layers) if isinstance(m, _Weighted)]
    for pos, i in enumerate(weighted[:-1]):
        layer = layers[i]
        assert isinstance(layer, _Weighted)
        n_out = layer.weight.shape[0]
        importance = layer.weight.detach().abs().reshape(n_out, -1).sum(dim=1)
        keep = torch.topk(importance, _keep_count(n_out, amount)).indices.sort().values
        layers[i] = _slice_out(layer, keep)
        j = weighted[pos + 1]
        nxt = layers[j]
        assert isinstance(nxt, _Weighted)
        block = 1
        if isinstance(layer, nn.Conv2d) and isinstance(nxt, nn.Linear):
            block = nxt.in_features // n_out
        layers[j] = _slice_in(nxt, keep, block)
    return nn.Sequential(*layers)


def sparsity(original_params: int, current_params: int) -> float:
    """Fraction of parameters removed; with structured pruning this is real, not masked, sparsity."""
    if original_params <= 0:
        return 0.0
    return max(0.0, 1.0 - current_params / original_params)
