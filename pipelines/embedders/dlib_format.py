"""A pure-Python reader of dlib's serialisation, enough to read its DNN model files.

dlib writes (see dlib/serialize.h, dlib/float_details.h, dlib/cuda/tensor.h, dlib/dnn/core.h
and dlib/dnn/layers.h):

- integers: a control byte, whose low 4 bits give the number of magnitude bytes and whose
  0x80 bit marks a negative number, then the magnitude, little-endian;
- floats and doubles: an integer mantissa then an integer exponent, value m * 2**e; the
  exponents 32000, 32001 and 32002 encode +inf, -inf and NaN;
- strings: an integer length, then the bytes; bools: the character '1' or '0';
- tensors: version 2, then num_samples, k, nr, nc, then raw little-endian float32;
  alias tensors (views into a layer's parameters): version 1, then the four dimensions.

A network file starts with the loss layer, then one version number per layer from the
outermost to the innermost (2 for a computational layer, 1 for a tag or skip layer, 3 for
the layer that wraps the input), then the input layer, then each computational layer's
details from the innermost to the outermost, each followed by bookkeeping (three bools
and three usually empty tensors; the innermost adds its sample expansion factor). Tag and
skip layers write nothing but their version, so their identity comes from the network
definition, not the file (see dlib_resnet.py).
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.errors import FacewatchError

FLOAT_INF, FLOAT_NINF, FLOAT_NAN = 32000, 32001, 32002


class DlibFormatError(FacewatchError, ValueError):
    """The bytes are not what a dlib model file of the expected kind holds."""

    http_status = 500  # the server's own set-up: not the client's to fix


@dataclass
class Layer:
    """One computational layer's details, as read from the file."""

    kind: str  # "con", "affine", "relu", "max_pool", "avg_pool", "add_prev", "fc"
    version: str  # the version string dlib wrote, e.g. "con_4"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class DlibNet:
    loss: dict[str, Any]
    layer_versions: list[int]  # outermost first
    input: dict[str, Any]
    layers: list[Layer]  # innermost first


class Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DlibFormatError(f"unexpected end of file at byte {self.pos} (wanted {n})")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        control = self._take(1)[0]
        size = control & 0x0F
        if size > 8 or control & 0x70:
            raise DlibFormatError(f"bad integer control byte 0x{control:02x} at {self.pos - 1}")
        value = int.from_bytes(self._take(size), "little")
        return -value if control & 0x80 else value

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        if exponent == FLOAT_INF:
            return float("inf")
        if exponent == FLOAT_NINF:
            return float("-inf")
        if exponent == FLOAT_NAN:
            return float("nan")
        return float(np.ldexp(float(mantissa), exponent))

    def string(self) -> str:
        n = self.int()
        if n < 0 or n > 1 << 20:
            raise DlibFormatError(f"implausible string length {n} at {self.pos}")
        return self._take(n).decode("ascii", errors="strict")

    def bool(self) -> bool:
        c = self._take(1)
        if c not in (b"0", b"1"):
            raise DlibFormatError(f"bad bool byte {c!r} at {self.pos - 1}")
        return c == b"1"

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise DlibFormatError(f"tensor version {version}, expected 2, at {self.pos}")
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        raw = self._take(4 * count)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)

    # builtins.: inside this class, ``int`` and ``bool`` name the reader's methods
    def alias(self) -> tuple[builtins.int, builtins.int, builtins.int, builtins.int]:
        version = self.int()
        if version != 1:
            raise DlibFormatError(f"alias tensor version {version}, expected 1, at {self.pos}")
        return self.int(), self.int(), self.int(), self.int()

    @property
    def done(self) -> builtins.bool:
        return self.pos == len(self.data)


def _split(params: np.ndarray, *shapes: tuple[int, ...]) -> list[np.ndarray]:
    flat, out, at = params.reshape(-1), [], 0
    for shape in shapes:
        n = int(np.prod(shape))
        if at + n > flat.size:
            raise DlibFormatError(f"parameter tensor too small for shapes {shapes}")
        out.append(flat[at : at + n].reshape(shape))
        at += n
    return out


def _read_con(r: Reader, version: str) -> Layer:
    params = r.tensor()
    num_filters, nr, nc = r.int(), r.int(), r.int()
    stride = (r.int(), r.int())
    padding = (r.int(), r.int())
    filters, biases = r.alias(), r.alias()
    for _ in range(4):  # learning-rate and weight-decay multipliers
        r.float()
    use_bias = r.bool() if version == "con_5" else True
    shapes = [filters] + ([(num_filters,)] if use_bias else [])
    parts = _split(params, *shapes)
    return Layer(
        "con",
        version,
        {
            "weight": parts[0],
            "bias": parts[1] if use_bias else None,
            "num_filters": num_filters,
            "kernel": (nr, nc),
            "stride": stride,
            "padding": padding,
            "bias_shape": biases,
        },
    )


def _read_affine(r: Reader, version: str) -> Layer:
    params = r.tensor()
    gamma, beta = r.alias(), r.alias()
    mode = r.int()  # 0: per-channel (CONV_MODE), 1: per-element (FC_MODE)
    gamma_v, beta_v = _split(params, gamma, beta)
    return Layer("affine", version, {"gamma": gamma_v, "beta": beta_v, "mode": mode})


def _read_pool(r: Reader, version: str, kind: str) -> Layer:
    nr, nc = r.int(), r.int()
    stride = (r.int(), r.int())
    padding = (r.int(), r.int())
    return Layer(kind, version, {"kernel": (nr, nc), "stride": stride, "padding": padding})


def _read_fc(r: Reader, version: str) -> Layer:
    num_outputs, num_inputs = r.int(), r.int()
    params = r.tensor()
    weights, biases = r.alias(), r.alias()
    bias_mode = r.int()  # 0: FC_HAS_BIAS, 1: FC_NO_BIAS
    for _ in range(4):
        r.float()
    if version == "fc_3":
        r.bool()  # use_bias flag of newer files; the mode already says
    n_in, n_out = weights[0], weights[1]
    (w,) = _split(params, (n_in, n_out))
    bias = None
    if bias_mode == 0:
        (_, bias) = _split(params, (n_in, n_out), (n_out,))
    return Layer(
        "fc",
        version,
        {
            "weight": w,
            "bias": bias,
            "num_outputs": num_outputs,
            "num_inputs": num_inputs,
            "bias_shape": biases,
        },
    )


def read_layer(r: Reader) -> Layer:
    version = r.string()
    if version in ("con_4", "con_5"):
        return _read_con(r, version)
    if version in ("affine_", "affine_2"):
        return _read_affine(r, version)
    if version in ("relu_", "relu_2"):
        return Layer("relu", version)
    if version in ("max_pool_2",):
        return _read_pool(r, version, "max_pool")
    if version in ("avg_pool_2",):
        return _read_pool(r, version, "avg_pool")
    if version in ("add_prev_",):
        return Layer("add_prev", version)
    if version in ("fc_2", "fc_3"):
        return _read_fc(r, version)
    raise DlibFormatError(f"unsupported layer '{version}' at byte {r.pos}")


def _skip_bookkeeping(r: Reader) -> None:
    for _ in range(3):  # setup called, gradient stale, output/gradient disabled
        r.bool()
    for _ in range(3):  # x_grad, cached_output, params_grad (or grad_final)
        r.tensor()


def parse(data: bytes) -> DlibNet:
    r = Reader(data)
    if r.int() != 1:
        raise DlibFormatError("not a dlib network file (loss layer version is not 1)")
    loss_name = r.string()
    if loss_name != "loss_metric_2":
        raise DlibFormatError(f"expected a loss_metric network, found '{loss_name}'")
    loss = {"name": loss_name, "margin": r.float(), "distance_threshold": r.float()}
    versions = []
    while True:
        v = r.int()
        if v not in (1, 2, 3):
            raise DlibFormatError(f"unexpected layer version {v} at byte {r.pos}")
        versions.append(v)
        if v == 3:
            break
    name = r.string()
    if name != "input_rgb_image_sized":
        raise DlibFormatError(f"expected input_rgb_image_sized, found '{name}'")
    means = [r.float(), r.float(), r.float()]
    inp = {"name": name, "means": means, "nr": r.int(), "nc": r.int()}
    layers = []
    for i in range(sum(v != 1 for v in versions)):
        layers.append(read_layer(r))
        _skip_bookkeeping(r)
        if i == 0:  # the input-wrapping layer also records its sample expansion factor
            inp["sample_expansion_factor"] = r.int()
    if not r.done:
        raise DlibFormatError(f"{len(data) - r.pos} bytes left after the last layer")
    return DlibNet(loss, versions, inp, layers)


def read(path: Path | str) -> DlibNet:
    return parse(Path(path).read_bytes())
