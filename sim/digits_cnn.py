"""A small CNN on scikit-learn's ``load_digits``, trained in NumPy, run in int8 on the golden
models of direct and Winograd convolution.

Network: conv3x3(1 -> 8) + ReLU, conv3x3(8 -> 16) + ReLU (stride 1, padding 1, 8x8 maps),
2x2 average pooling, dense 256 -> 10. Training: plain NumPy backpropagation, Adam, fixed seed,
a few seconds. Quantization (TFLite style): int8 symmetric activations (zero point 0; the input
pixels 0..16 and the ReLU outputs are non-negative), int8 symmetric per-output-channel weights,
int32 bias, ReLU fused into the requantizer's ``act_min = 0``. The two convolutions run on
``sim.golden`` integer models; pooling and the dense layer run in float on the dequantized int8
features (they are not what this benchmark compares).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .golden.gemm import quantize_multiplier, requantize
from .golden.winograd import calibrate_tap_shifts, conv2d_direct, conv2d_winograd

__all__ = ["Digits", "FloatCNN", "load", "train", "QuantCNN", "quantize_cnn"]

CHANNELS = (1, 8, 16)


@dataclass
class Digits:
    x_train: np.ndarray     # N, 1, 8, 8 float in [0, 1]
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load(seed: int = 0) -> Digits:
    """``load_digits`` (bundled, offline), pixels / 16, a fixed stratified 75/25 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    x = (digits.images / 16.0).reshape(-1, 1, 8, 8)
    x_tr, x_te, y_tr, y_te = train_test_split(x, digits.target, test_size=0.25,
                                              random_state=seed, stratify=digits.target)
    return Digits(x_tr, y_tr, x_te, y_te)


def _im2col(x: np.ndarray) -> np.ndarray:
    """N, C, H, W -> N, H, W, C*9 patches of a 3x3 window with zero padding 1."""
    n, c, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.stack([padded[:, :, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)],
                    axis=-1)                                   # N, C, H, W, 9
    return cols.transpose(0, 2, 3, 1, 4).reshape(n, h, w, c * 9)


@dataclass
class FloatCNN:
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    wd: np.ndarray
    bd: np.ndarray

    def params(self) -> list[np.ndarray]:
        return [self.w1, self.b1, self.w2, self.b2, self.wd, self.bd]

    def forward(self, x: np.ndarray, cache: dict | None = None) -> np.ndarray:
        c1 = _im2col(x)
        a1 = np.maximum(c1 @ self.w1.reshape(self.w1.shape[0], -1).T + self.b1, 0)
        a1 = a1.transpose(0, 3, 1, 2)                         # N, 8, 8, 8
        c2 = _im2col(a1)
        a2 = np.maximum(c2 @ self.w2.reshape(self.w2.shape[0], -1).T + self.b2, 0)
        a2 = a2.transpose(0, 3, 1, 2)                         # N, 16, 8, 8
        logits = head(a2, self.wd, self.bd)
        if cache is not None:
            cache.update(c1=c1, a1=a1, c2=c2, a2=a2)
        return logits


def head(a2: np.ndarray, wd: np.ndarray, bd: np.ndarray) -> np.ndarray:
    """2x2 average pooling, flatten, dense."""
    n = a2.shape[0]
    pooled = a2.reshape(n, a2.shape[1], 4, 2, 4, 2).mean(axis=(3, 5))
    return pooled.reshape(n, -1) @ wd + bd


def train(data: Digits, *, epochs: int = 8, seed: int = 0) -> FloatCNN:
    """Softmax cross-entropy, Adam (lr 5e-3), batch 64, float32; deterministic for a seed."""
    rng = np.random.default_rng(seed)

    def he(shape, fan_in):
        return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape).astype(np.float32)

    zeros = lambda k: np.zeros(k, dtype=np.float32)  # noqa: E731
    model = FloatCNN(he((8, 1, 3, 3), 9), zeros(8), he((16, 8, 3, 3), 72), zeros(16),
                     he((256, 10), 256), zeros(10))
    x_train = data.x_train.astype(np.float32)
    params = model.params()
    m1 = [np.zeros_like(p) for p in params]
    m2 = [np.zeros_like(p) for p in params]
    step = 0
    for _ in range(epochs):
        order = rng.permutation(len(data.x_train))
        for start in range(0, len(order), 64):
            idx = order[start:start + 64]
            x, y = x_train[idx], data.y_train[idx]
            cache = {}
            logits = model.forward(x, cache)
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(len(y)), y] -= 1
            dlogits = (p / len(y)).astype(np.float32)
            grads = _backward(model, cache, dlogits)
            step += 1
            for i, (param, grad) in enumerate(zip(params, grads)):
                m1[i] = 0.9 * m1[i] + 0.1 * grad
                m2[i] = 0.999 * m2[i] + 0.001 * grad * grad
                hat1 = m1[i] / (1 - 0.9 ** step)
                hat2 = m2[i] / (1 - 0.999 ** step)
                param -= (5e-3 * hat1 / (np.sqrt(hat2) + 1e-8)).astype(np.float32)
    return model


def _backward(model: FloatCNN, cache: dict, dlogits: np.ndarray) -> list[np.ndarray]:
    n = dlogits.shape[0]
    a2 = cache["a2"]
    pooled = a2.reshape(n, 16, 4, 2, 4, 2).mean(axis=(3, 5)).reshape(n, -1)
    dwd = pooled.T @ dlogits
    dbd = dlogits.sum(axis=0)
    dpooled = (dlogits @ model.wd.T).reshape(n, 16, 4, 1, 4, 1)
    da2 = np.broadcast_to(dpooled / 4, (n, 16, 4, 2, 4, 2)).reshape(n, 16, 8, 8)
    dz2 = (da2 * (a2 > 0)).transpose(0, 2, 3, 1)            # N, H, W, 16
    dw2 = (dz2.reshape(-1, 16).T @ cache["c2"].reshape(-1, 72)).reshape(model.w2.shape)
    db2 = dz2.sum(axis=(0, 1, 2))
    dc2 = dz2 @ model.w2.reshape(16, -1)                     # N, H, W, 72
    da1 = _col2im(dc2, 8)
    dz1 = (da1 * (cache["a1"] > 0)).transpose(0, 2, 3, 1)
    dw1 = (dz1.reshape(-1, 8).T @ cache["c1"].reshape(-1, 9)).reshape(model.w1.shape)
    db1 = dz1.sum(axis=(0, 1, 2))
    return [dw1, db1, dw2, db2, dwd, dbd]


def _col2im(cols: np.ndarray, channels: int) -> np.ndarray:
    n, h, w, _ = cols.shape
    cols = cols.reshape(n, h, w, channels, 9)
    out = np.zeros((n, channels, h + 2, w + 2))
    for k in range(9):
        dy, dx = divmod(k, 3)
        out[:, :, dy:dy + h, dx:dx + w] += cols[..., k].transpose(0, 3, 1, 2)
    return out[:, :, 1:-1, 1:-1]


# ---- int8 -----------------------------------------------------------------------------------

ConvFn = Callable[..., np.ndarray]


@dataclass
class QuantLayer:
    w: np.ndarray           # K, C, 3, 3 int8
    bias: np.ndarray        # K int32
    multiplier: np.ndarray  # K
    shift: np.ndarray       # K
    out_scale: float


@dataclass
class QuantCNN:
    in_scale: float
    layers: list[QuantLayer]
    wd: np.ndarray
    bd: np.ndarray

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        return np.clip(np.round(x / self.in_scale), -128, 127).astype(np.int64)

    def forward(self, x: np.ndarray, conv: ConvFn) -> np.ndarray:
        """Logits with every convolution done by ``conv(q, layer_index, layer) -> int8``."""
        q = self.quantize_input(x)
        for index, layer in enumerate(self.layers):
            q = conv(q, index, layer)
        return head(q * self.layers[-1].out_scale, self.wd, self.bd)

    def activations(self, x: np.ndarray) -> list[np.ndarray]:
        """int8 inputs of each convolution layer under direct convolution (for calibration)."""
        q = self.quantize_input(x)
        out = []
        for layer in self.layers:
            out.append(q)
            q = direct_conv(q, 0, layer)
        return out


def _requant(acc: np.ndarray, layer: QuantLayer) -> np.ndarray:
    return requantize(acc, layer.multiplier[None, :, None, None], layer.shift[None, :, None, None],
                      act_min=0, act_max=127)


def direct_conv(q: np.ndarray, index: int, layer: QuantLayer) -> np.ndarray:
    return _requant(conv2d_direct(q, layer.w, padding=1, bias=layer.bias), layer)


def winograd_conv(m: int, mode: str, shifts: list | None = None) -> ConvFn:
    """A ``conv`` for ``QuantCNN.forward`` running the Winograd unit's golden model."""
    def conv(q, index, layer):
        acc = conv2d_winograd(q, layer.w, m=m, mode=mode, padding=1, bias=layer.bias,
                              tap_shifts=None if shifts is None else shifts[index])
        return _requant(acc, layer)
    return conv


def quantize_cnn(model: FloatCNN, calibration: np.ndarray) -> QuantCNN:
    """Per-channel int8 weights, per-tensor int8 activations from calibration maxima."""
    cache = {}
    model.forward(calibration, cache)
    in_scale = 1.0 / 127                      # pixels are in [0, 1]
    act_scales = [cache["a1"].max() / 127, cache["a2"].max() / 127]
    layers, scale = [], in_scale
    for (w, b), out_scale in zip(((model.w1, model.b1), (model.w2, model.b2)), act_scales):
        w_scale = np.abs(w).reshape(w.shape[0], -1).max(axis=1) / 127
        wq = np.clip(np.round(w / w_scale[:, None, None, None]), -127, 127).astype(np.int64)
        acc_scale = scale * w_scale
        bias = np.round(b / acc_scale).astype(np.int64)
        ms = [quantize_multiplier(s / out_scale) for s in acc_scale]
        layers.append(QuantLayer(wq, bias, np.array([p[0] for p in ms]),
                                 np.array([p[1] for p in ms]), float(out_scale)))
        scale = out_scale
    return QuantCNN(in_scale, layers, model.wd, model.bd)


def calibrate(qmodel: QuantCNN, x: np.ndarray, *, m: int, per_tensor: bool) -> list:
    """Tap shifts per layer from the int8 activations of ``x`` (direct convolution)."""
    return [calibrate_tap_shifts(a, layer.w, m=m, padding=1, per_tensor=per_tensor)
            for a, layer in zip(qmodel.activations(x), qmodel.layers)]
