"""Batched scoring: probability of "malicious" from logits, in large batches, no autograd.

The LSTM scores names sorted by length, so each batch is cut to its own longest name and the
packed sequence needs no sorting: this is what makes >= 100k names/s possible on two cores.
"""

from __future__ import annotations

import copy
import math
import weakref

import numpy as np
import torch
from torch import nn

# Measured on 2 cores: batches that keep activations in cache beat huge ones on CPU
CPU_LSTM_BATCH = 512  # ~2.5x faster than 65536 names per batch
CPU_DENSE_BATCH = 16384  # ~1.5x faster than 65536 rows per batch


BF16_GUARD = 1.0  # bf16 scores this close to the threshold, in logits, are scored in float32
_BF16_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (state, copy)


def malicious_proba(logits: torch.Tensor) -> torch.Tensor:  # (B, 2) -> (B,)
    """softmax(logits)[:, 1] written as a sigmoid of the logit difference (one op, stable)."""
    return torch.sigmoid(logits[:, 1] - logits[:, 0])


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def score_unigrams(model: nn.Module, unigrams, batch_size: int = 65536, fn=None) -> np.ndarray:
    """Apply `fn(model, x)` (default: malicious probability) to (N, dim) unigrams in batches."""
    fn = fn or (lambda m, x: malicious_proba(m(x)))
    device = _device(model)
    if device.type == "cpu":
        batch_size = min(batch_size, CPU_DENSE_BATCH)
    x = torch.as_tensor(unigrams)
    out = torch.empty(len(x), dtype=torch.float32)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            batch = x[start : start + batch_size].to(device, non_blocking=True)
            out[start : start + batch_size] = fn(model, batch).float().cpu()
    return out.numpy()


def score_qnames(  # noqa: ANN001
    model: nn.Module, qname_bytes, qname_len, batch_size: int = 65536, side=None
) -> np.ndarray:
    """Malicious probability from the LSTM over names (and `side` context columns, if the
    network reads them), batched in order of decreasing length."""
    device = _device(model)
    if device.type == "cpu":  # the per-step gate tensors must stay in cache: small CPU batches
        batch_size = min(batch_size, CPU_LSTM_BATCH)
    qb = torch.as_tensor(qname_bytes)
    ql = torch.as_tensor(qname_len).long().clamp(1, min(qb.shape[1], model.max_len))
    order = torch.argsort(ql, descending=True, stable=True)
    columns = None if side is None or not getattr(model, "side", 0) else torch.as_tensor(side)
    out = torch.empty(len(ql), dtype=torch.float32)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(ql), batch_size):
            pick = order[start : start + batch_size]
            lengths = ql[pick]
            batch = qb[pick, : int(lengths[0])].to(device, non_blocking=True)  # (B, T_batch)
            extra = None if columns is None else columns[pick].to(device)
            logits = model(batch, lengths, extra, sorted_=True)
            out[pick] = malicious_proba(logits).float().cpu()
    return out.numpy()


def reconstruction_errors(model: nn.Module, unigrams, batch_size: int = 65536) -> np.ndarray:
    """Per-packet MSE of the (frozen) autoencoder inside an AEClassifier: the anomaly score."""
    return score_unigrams(model, unigrams, batch_size, lambda m, x: m.reconstruction_error(x))


def score_unigrams_bf16(
    model: nn.Module, unigrams: np.ndarray, threshold: float, batch_size: int = 65536
) -> np.ndarray:
    """score_unigrams with the network in bfloat16 (about twice as fast where the CPU has
    AVX512-BF16 or AMX, or on a GPU), its verdicts those of float32: every packet whose bf16
    logit is within BF16_GUARD of the threshold's is scored again in float32 (bf16 moved logits
    by up to 0.27 on the demo's test capture, scores by up to 0.06). The guard is applied to
    logits, before float32's sigmoid saturates; a threshold within 1e-6 of 0 or 1 (where it
    would be the saturation that decides) is float32 throughout. The other scores differ from
    the float32 ones by that rounding."""
    if not 1e-6 < threshold < 1 - 1e-6:
        return score_unigrams(model, unigrams, batch_size)
    low = _bf16_copy(model)
    logits = score_unigrams(low, unigrams, batch_size, _bf16_logit)
    cut = math.log(threshold) - math.log1p(-threshold)
    scores = torch.sigmoid(torch.from_numpy(logits)).numpy()
    near = np.flatnonzero(np.abs(logits.astype(np.float64) - cut) < BF16_GUARD)
    if len(near):
        scores[near] = score_unigrams(model, np.ascontiguousarray(unigrams[near]), batch_size)
    return scores


def _bf16_logit(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """logit(malicious) = the logit difference, from a bf16 network, in float32."""
    logits = model(x.to(torch.bfloat16)).float()
    return logits[:, 1] - logits[:, 0]


def _bf16_copy(model: nn.Module) -> nn.Module:
    """The model's bf16 twin, made again whenever a weight or the device changed since."""
    state = tuple((p.device, p.data_ptr(), p._version) for p in model.parameters())
    cached = _BF16_COPIES.get(model)
    if cached is None or cached[0] != state:
        cached = _BF16_COPIES[model] = (state, copy.deepcopy(model).to(torch.bfloat16))
    return cached[1]
