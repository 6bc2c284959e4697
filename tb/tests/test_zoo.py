"""Tests of the layer geometry of pim_macro.sw.models.zoo against the published figures of AlexNet,
VGG-16 and ResNet-50.

Published parameter counts include biases (and, for ResNet-50, batch-norm); pim_macro.sw.models.zoo
counts weights only, so the tests subtract the biases / batch-norm parameters, counted from the
shapes themselves (one bias per output channel; two trainable batch-norm parameters, gamma and
beta, per output channel of every ResNet-50 convolution)."""

import dataclasses

import pytest

from pim_macro.sw.models.zoo import NETWORKS, LayerShape, total_biases, total_macs, total_weights


def by_name(net):
    return {layer.name: layer for layer in NETWORKS[net]}


# -- LayerShape ------------------------------------------------------------------------------

def test_layer_shape_properties():
    conv = LayerShape("c", "conv", out_ch=8, in_ch=3, kh=3, kw=5, stride=2, pad=1, in_h=10,
                      in_w=12)
    assert (conv.out_h, conv.out_w) == ((10 + 2 - 3) // 2 + 1, (12 + 2 - 5) // 2 + 1) == (5, 5)
    assert conv.weights == 8 * 3 * 3 * 5
    assert conv.rows_k == 3 * 3 * 5
    assert conv.positions == 25
    assert conv.macs == conv.weights * 25
    dense = LayerShape("d", "dense", 10, 64, 1, 1, 1, 0, 1, 1)
    assert (dense.out_h, dense.out_w, dense.positions) == (1, 1, 1)
    assert dense.weights == dense.macs == 640
    assert dense.rows_k == 64


def test_layer_shape_is_frozen():
    layer = NETWORKS["alexnet"][0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        layer.out_ch = 1
    assert hash(layer) == hash(dataclasses.replace(layer))


@pytest.mark.parametrize("kwargs", [
    dict(kind="pool"),
    dict(kind="dense", kh=3),
    dict(in_h=2, in_w=2, pad=0),                 # 3x3 kernel larger than the input
    dict(stride=0),
    dict(pad=-1),
])
def test_layer_shape_rejects_bad_geometry(kwargs):
    base = dict(name="x", kind="conv", out_ch=4, in_ch=4, kh=3, kw=3, stride=1, pad=1, in_h=8,
                in_w=8)
    with pytest.raises(ValueError):
        LayerShape(**(base | kwargs))


def test_unknown_network():
    with pytest.raises(KeyError, match="resnet50"):
        total_weights("resnet18")


# -- consistency of every network ------------------------------------------------------------

@pytest.mark.parametrize("net", sorted(NETWORKS))
def test_network_consistency(net):
    layers = NETWORKS[net]
    assert len({layer.name for layer in layers}) == len(layers)
    assert all(layer.kind in ("conv", "dense") for layer in layers)
    assert all(layer.in_h == layer.in_w for layer in layers)
    assert layers[0].in_ch == 3 and layers[0].in_h == 224
    assert layers[-1].kind == "dense" and layers[-1].out_ch == 1000
    for layer in layers:
        assert layer.rows_k * layer.out_ch == layer.weights
        assert layer.macs == layer.weights * layer.positions
    # dense layers chain on their features
    dense = [layer for layer in layers if layer.kind == "dense"]
    for a, b in zip(dense, dense[1:]):
        assert b.in_ch == a.out_ch
    assert total_weights(net) == sum(layer.weights for layer in layers)
    assert total_macs(net) == sum(layer.macs for layer in layers)


@pytest.mark.parametrize("net", ["alexnet", "vgg16"])
def test_plain_networks_chain(net):
    """Without branches, each convolution takes the previous one's channels, and the first
    dense layer takes the last convolution's (pooled) output flattened."""
    convs = [layer for layer in NETWORKS[net] if layer.kind == "conv"]
    for a, b in zip(convs, convs[1:]):
        assert b.in_ch == a.out_ch
        assert b.in_h in (a.out_h, (a.out_h - 3) // 2 + 1, a.out_h // 2)   # same, or pooled
    fc = next(layer for layer in NETWORKS[net] if layer.kind == "dense")
    side = {"alexnet": 6, "vgg16": 7}[net]
    assert fc.in_ch == convs[-1].out_ch * side * side


# -- AlexNet (torchvision) -------------------------------------------------------------------

def test_alexnet_shapes():
    layers = NETWORKS["alexnet"]
    assert [(l.kind, l.out_ch) for l in layers] == [
        ("conv", 64), ("conv", 192), ("conv", 384), ("conv", 256), ("conv", 256),
        ("dense", 4096), ("dense", 4096), ("dense", 1000)]
    L = by_name("alexnet")
    assert (L["conv1"].kh, L["conv1"].stride, L["conv1"].pad, L["conv1"].out_h) == (11, 4, 2, 55)
    assert L["conv2"].in_h == 27 and L["conv2"].out_h == 27
    assert L["conv3"].in_h == 13
    assert (L["conv5"].out_h, L["conv5"].out_w) == (13, 13)
    assert L["fc6"].in_ch == 9216


def test_alexnet_totals():
    # torchvision's AlexNet: 61,100,840 parameters, biases included (one per output).
    assert total_biases("alexnet") == 64 + 192 + 384 + 256 + 256 + 4096 + 4096 + 1000 == 10_344
    assert total_weights("alexnet") == 61_100_840 - total_biases("alexnet") == 61_090_496
    # ~0.714 GMAC (convolutions 655.6 M, fully-connected 58.6 M)
    assert total_macs("alexnet") == pytest.approx(0.714e9, rel=0.02)
    assert total_macs("alexnet") == 714_188_480


# -- VGG-16 (configuration D) ----------------------------------------------------------------

def test_vgg16_shapes():
    layers = NETWORKS["vgg16"]
    convs = [l for l in layers if l.kind == "conv"]
    assert len(convs) == 13 and len(layers) == 16
    assert all((l.kh, l.kw, l.stride, l.pad) == (3, 3, 1, 1) for l in convs)
    assert [l.out_ch for l in convs] == [64] * 2 + [128] * 2 + [256] * 3 + [512] * 6
    assert [l.in_h for l in convs] == [224] * 2 + [112] * 2 + [56] * 3 + [28] * 3 + [14] * 3
    L = by_name("vgg16")
    assert (L["conv5_3"].out_h, L["conv5_3"].out_w) == (14, 14)   # before the last pool
    assert [l.in_ch for l in layers if l.kind == "dense"] == [25088, 4096, 4096]


def test_vgg16_totals():
    # VGG-16: 138,357,544 parameters, biases included.
    assert total_biases("vgg16") == 13_416
    assert total_weights("vgg16") == 138_357_544 - total_biases("vgg16") == 138_344_128
    # ~15.47 GMAC (convolutions 15.35 G, fully-connected 0.12 G)
    assert total_macs("vgg16") == pytest.approx(15.47e9, rel=0.01)
    assert total_macs("vgg16") == 15_470_264_320


# -- ResNet-50 (torchvision, v1.5) -----------------------------------------------------------

def test_resnet50_shapes():
    layers = NETWORKS["resnet50"]
    convs = [l for l in layers if l.kind == "conv"]
    assert len(convs) == 1 + 3 * (3 + 4 + 6 + 3) + 4 == 53
    assert len(layers) == 54
    L = by_name("resnet50")
    assert (L["conv1"].kh, L["conv1"].stride, L["conv1"].pad, L["conv1"].out_h) == (7, 2, 3, 112)
    assert L["layer1.0.conv1"].in_h == 56                 # after the 3x3/2 max pool
    # stage outputs
    for stage, (blocks, side, ch) in enumerate([(3, 56, 256), (4, 28, 512), (6, 14, 1024),
                                                (3, 7, 2048)], start=1):
        last = L[f"layer{stage}.{blocks - 1}.conv3"]
        assert (last.out_h, last.out_w, last.out_ch) == (side, side, ch)
        assert f"layer{stage}.{blocks}.conv1" not in L
        # v1.5: the stride is on the 3x3 convolution, and on the projection shortcut
        first = L[f"layer{stage}.0.conv2"]
        stride = 1 if stage == 1 else 2
        assert (first.kh, first.stride) == (3, stride)
        assert L[f"layer{stage}.0.conv1"].stride == 1
        down = L[f"layer{stage}.0.downsample"]
        assert (down.kh, down.stride, down.out_ch, down.out_h) == (1, stride, ch, side)
        assert down.in_ch == (64 if stage == 1 else ch // 2)
    assert sum(".downsample" in l.name for l in layers) == 4
    assert (L["fc"].in_ch, L["fc"].out_ch) == (2048, 1000)


def test_resnet50_totals():
    # torchvision ResNet-50: 25,557,032 parameters = conv + fc weights + fc bias (1000)
    # + batch-norm gamma and beta (2 per output channel of each of the 53 convolutions).
    convs = [l for l in NETWORKS["resnet50"] if l.kind == "conv"]
    bn = 2 * sum(l.out_ch for l in convs)
    assert bn == 53_120
    assert total_weights("resnet50") == 25_557_032 - 1000 - bn == 25_502_912
    # ~4.09 GMAC for convolutions + fc (the often-quoted "4.1 G" / "4.09 G" figure; tools that
    # also count batch-norm, ReLU and pooling report ~4.12 G)
    assert total_macs("resnet50") == pytest.approx(4.09e9, rel=0.02)
    assert total_macs("resnet50") == 4_089_184_256


def test_int8_megabytes():
    """At one byte per int8 weight: the on-chip storage the weights alone would take."""
    assert total_weights("alexnet") / 1e6 == pytest.approx(61.09, abs=0.01)
    assert total_weights("vgg16") / 1e6 == pytest.approx(138.34, abs=0.01)
    assert total_weights("resnet50") / 1e6 == pytest.approx(25.50, abs=0.01)
