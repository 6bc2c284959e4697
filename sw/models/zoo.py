"""Layer geometry of a few well-known ImageNet networks (no weights, only shapes).

Each network is a list of :class:`LayerShape`, one per weight-carrying layer (convolutions and
fully-connected layers), in execution order. Pooling, activations, batch-norm and residual
additions carry no weights of interest here and are left out, but the spatial sizes of the
layers that follow them account for them.

The shapes are written out from the published architectures:

``alexnet``
    torchvision's AlexNet (the "one weird trick" variant): 224x224x3 input, convolutions
    64 (11x11/4, pad 2), 192 (5x5, pad 2), 384, 256, 256 (3x3, pad 1), 3x3/2 max pools after
    conv1, conv2 and conv5, adaptive average pool to 6x6, then fc 9216-4096-4096-1000.
``vgg16``
    VGG configuration D: 13 convolutions 3x3 pad 1 in five blocks (64x2, 128x2, 256x3, 512x3,
    512x3), each block followed by a 2x2/2 max pool, then fc 25088-4096-4096-1000.
``resnet50``
    ResNet-50, torchvision v1.5 (stride on the 3x3 convolution of a bottleneck): 7x7/2 conv 64,
    3x3/2 max pool, bottleneck stages of [3, 4, 6, 3] blocks with widths 64/128/256/512 and
    expansion 4, a 1x1 projection shortcut (with the block's stride) in the first block of
    each stage, global average pool, fc 2048-1000.

In terms of the macro's im2col GEMV: a layer is ``positions`` matrix-vector products with an
``out_ch x rows_k`` weight matrix (a dense layer is one position with ``rows_k = in_ch``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LayerShape", "NETWORKS", "total_weights", "total_macs", "total_biases"]


@dataclass(frozen=True)
class LayerShape:
    """One convolution (``kind == "conv"``) or fully-connected layer (``kind == "dense"``).

    For a dense layer ``kh = kw = 1``, ``in_h = in_w = 1``, ``stride = 1``, ``pad = 0``,
    ``in_ch`` is the number of input features and ``out_ch`` the number of outputs.
    """

    name: str
    kind: str
    out_ch: int
    in_ch: int
    kh: int
    kw: int
    stride: int
    pad: int
    in_h: int
    in_w: int

    def __post_init__(self):
        if self.kind not in ("conv", "dense"):
            raise ValueError(f"{self.name}: kind must be 'conv' or 'dense', not {self.kind!r}")
        for field in ("out_ch", "in_ch", "kh", "kw", "stride", "in_h", "in_w"):
            if getattr(self, field) < 1:
                raise ValueError(f"{self.name}: {field} must be >= 1")
        if self.pad < 0:
            raise ValueError(f"{self.name}: pad must be >= 0")
        if self.kind == "dense" and (self.kh, self.kw, self.in_h, self.in_w, self.stride,
                                     self.pad) != (1, 1, 1, 1, 1, 0):
            raise ValueError(f"{self.name}: a dense layer has kh=kw=in_h=in_w=stride=1, pad=0")
        if self.out_h < 1 or self.out_w < 1:
            raise ValueError(f"{self.name}: the kernel does not fit the padded input")

    @property
    def out_h(self) -> int:
        return (self.in_h + 2 * self.pad - self.kh) // self.stride + 1

    @property
    def out_w(self) -> int:
        return (self.in_w + 2 * self.pad - self.kw) // self.stride + 1

    @property
    def weights(self) -> int:
        """Number of weights, biases not included."""
        return self.out_ch * self.in_ch * self.kh * self.kw

    @property
    def rows_k(self) -> int:
        """The inner dimension K of the im2col GEMV: ``in_ch * kh * kw``."""
        return self.in_ch * self.kh * self.kw

    @property
    def positions(self) -> int:
        """Output pixels, i.e. the number of GEMV vectors: ``out_h * out_w``."""
        return self.out_h * self.out_w

    @property
    def macs(self) -> int:
        """Multiply-accumulates of one inference: ``weights * positions``."""
        return self.weights * self.positions


# -- builders --------------------------------------------------------------------------------

def _pool(size: int, k: int, stride: int, pad: int = 0) -> int:
    """Output size of a (max or average) pool, floor mode as in PyTorch's default."""
    return (size + 2 * pad - k) // stride + 1


def _conv(name, out_ch, in_ch, k, stride, pad, h, w=None) -> LayerShape:
    return LayerShape(name, "conv", out_ch, in_ch, k, k, stride, pad, h, h if w is None else w)


def _dense(name, out_features, in_features) -> LayerShape:
    return LayerShape(name, "dense", out_features, in_features, 1, 1, 1, 0, 1, 1)


def _alexnet() -> list[LayerShape]:
    layers = []
    h, c = 224, 3
    for i, (out_ch, k, stride, pad, pool_after) in enumerate(
            [(64, 11, 4, 2, True), (192, 5, 1, 2, True), (384, 3, 1, 1, False),
             (256, 3, 1, 1, False), (256, 3, 1, 1, True)], start=1):
        layer = _conv(f"conv{i}", out_ch, c, k, stride, pad, h)
        layers.append(layer)
        h, c = layer.out_h, out_ch
        if pool_after:
            h = _pool(h, 3, 2)                       # MaxPool2d(3, 2): 55 -> 27 -> 13 -> 6
    assert h == 6                                    # AdaptiveAvgPool2d((6, 6)) is the identity
    layers += [_dense("fc6", 4096, c * 6 * 6), _dense("fc7", 4096, 4096),
               _dense("fc8", 1000, 4096)]
    return layers


def _vgg16() -> list[LayerShape]:
    layers = []
    h, c = 224, 3
    for block, (width, n) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)],
                                       start=1):
        for i in range(1, n + 1):
            layer = _conv(f"conv{block}_{i}", width, c, 3, 1, 1, h)
            layers.append(layer)
            h, c = layer.out_h, width
        h = _pool(h, 2, 2)                           # 224 -> 112 -> 56 -> 28 -> 14 -> 7
    assert h == 7                                    # AdaptiveAvgPool2d((7, 7)) is the identity
    layers += [_dense("fc6", 4096, c * 7 * 7), _dense("fc7", 4096, 4096),
               _dense("fc8", 1000, 4096)]
    return layers


def _resnet50() -> list[LayerShape]:
    layers = [_conv("conv1", 64, 3, 7, 2, 3, 224)]   # 224 -> 112
    h = _pool(layers[0].out_h, 3, 2, 1)              # MaxPool2d(3, 2, padding=1): 112 -> 56
    c = 64
    for stage, (width, blocks, first_stride) in enumerate(
            [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], start=2):
        out_ch = width * 4
        for b in range(blocks):
            stride = first_stride if b == 0 else 1
            p = f"layer{stage - 1}.{b}"
            a = _conv(f"{p}.conv1", width, c, 1, 1, 0, h)
            m = _conv(f"{p}.conv2", width, width, 3, stride, 1, a.out_h)   # v1.5: stride here
            e = _conv(f"{p}.conv3", out_ch, width, 1, 1, 0, m.out_h)
            layers += [a, m, e]
            if b == 0:                               # projection shortcut (channels change)
                d = _conv(f"{p}.downsample", out_ch, c, 1, stride, 0, h)
                assert d.out_h == e.out_h
                layers.append(d)
            h, c = e.out_h, out_ch
    assert (h, c) == (7, 2048)                       # global average pool -> 2048 features
    layers.append(_dense("fc", 1000, c))
    return layers


NETWORKS: dict[str, list[LayerShape]] = {
    "alexnet": _alexnet(),
    "vgg16": _vgg16(),
    "resnet50": _resnet50(),
}


def _layers(name: str) -> list[LayerShape]:
    try:
        return NETWORKS[name]
    except KeyError:
        raise KeyError(f"unknown network {name!r}; known: {', '.join(NETWORKS)}") from None


def total_weights(name: str) -> int:
    """Weights of all convolution and dense layers of ``name`` (biases not included)."""
    return sum(layer.weights for layer in _layers(name))


def total_macs(name: str) -> int:
    """Multiply-accumulates of one inference of ``name`` (convolution and dense layers)."""
    return sum(layer.macs for layer in _layers(name))


def total_biases(name: str) -> int:
    """One bias per output channel of every layer (the count a framework would report if every
    layer had a bias; torchvision's ResNet-50 convolutions have none)."""
    return sum(layer.out_ch for layer in _layers(name))
