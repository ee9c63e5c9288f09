"""A PyTorch rebuild of a Keras functional model from the model configuration stored in its ``.h5`` file.

Used for the eyesegpy layer networks (``oct_wsss.io.eyesegpy`` converts their weights). Only the layer types
those configurations use are supported, each with Keras's inference semantics: ``Conv2D`` (stride 1, "same" or
"valid", any dilation, linear / relu / swish / sigmoid activation), ``Activation``, ``BatchNormalization`` (moving
statistics), ``Dropout`` / ``SpatialDropout2D`` (identity), ``Add``, ``Multiply``, ``AveragePooling2D`` ("valid"),
``Reshape`` and the ``TensorFlowOpLayer`` ops ``AddV2``, ``Mul``, ``Minimum``, ``Maximum``, ``Pack`` and the
``StridedSlice`` that picks one channel (``x[..., i]``). Anything else raises ``KerasGraphError`` when the module is
built, never at run time.

Inputs and outputs are channels-last (N, H, W, C) as in Keras; inside, 4-D tensors are kept (N, C, H, W) (PyTorch's
fast convolution layout) and the ops that name an axis are translated: Keras's last axis of a 4-D tensor is dim 1
(``StridedSlice``), ``Pack`` on the last axis of 3-D tensors stacks on dim 1, and ``Reshape`` and the per-layer outputs
(``keep``) are permuted back to channels-last. Weights are the Keras arrays as stored (kernels (kh, kw, in,
out)), keyed ``<layer name>/<weight name>`` (e.g. ``conv2d/kernel``); they are converted on load.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SUPPORTED = ("InputLayer", "Conv2D", "Activation", "BatchNormalization", "Dropout", "SpatialDropout2D", "Add",
             "Multiply", "AveragePooling2D", "Reshape", "TensorFlowOpLayer")
TF_OPS = ("AddV2", "Mul", "Minimum", "Maximum", "Pack", "StridedSlice")


class KerasGraphError(ValueError):
    """A Keras model configuration (or its weights) this rebuild does not support."""


def activation_name(spec: Any) -> str:
    """The activation's name from a Keras config value (a string, or a serialised ``Activation`` layer)."""
    while isinstance(spec, dict):
        spec = spec.get("config", {}).get("activation", spec.get("class_name"))
    if spec not in ("linear", "relu", "swish", "sigmoid"):
        raise KerasGraphError(f"unsupported activation {spec!r}")
    return str(spec)


def activate(x: Tensor, name: str) -> Tensor:
    """Keras activation ``name`` applied to ``x``."""
    if name == "relu":
        return torch.relu(x)
    if name == "swish":
        return x * torch.sigmoid(x)
    if name == "sigmoid":
        return torch.sigmoid(x)
    return x


def _inbound(layer: dict[str, Any]) -> list[str]:
    nodes = layer.get("inbound_nodes") or []
    if len(nodes) > 1:
        raise KerasGraphError(f"layer {layer['name']!r} is called more than once (shared layers are not supported)")
    names = []
    for entry in nodes[0] if nodes else []:
        if entry[1] != 0 or entry[2] != 0:
            raise KerasGraphError(f"layer {layer['name']!r} reads a non-first node or tensor of {entry[0]!r}")
        names.append(entry[0])
    return names


class KerasGraph(nn.Module):
    """Runs a Keras functional model's layer list (``model_config['config']``) on (N, H, W, C) inputs."""

    def __init__(self, config: dict[str, Any], weights: dict[str, Tensor]) -> None:
        super().__init__()
        self.layers: list[dict[str, Any]] = list(config["layers"])
        self.inputs = [entry[0] for entry in config["input_layers"]]
        self.outputs = [entry[0] for entry in config["output_layers"]]
        if len(self.inputs) != 1:
            raise KerasGraphError(f"expected one input layer, got {self.inputs}")
        self.build_shape = tuple(self.layers[0]["config"].get("batch_input_shape") or ())
        self.params = nn.ParameterDict()
        #: layer name -> index of the last layer reading its output (its tensor is freed after that)
        self.last_use: dict[str, int] = {}
        for i, layer in enumerate(self.layers):
            self._check(layer)
            self._load(layer, weights)
            self.last_use.update({name: i for name in _inbound(layer)})

    def _check(self, layer: dict[str, Any]) -> None:
        kind, cfg = layer["class_name"], layer["config"]
        if kind not in SUPPORTED:
            raise KerasGraphError(f"layer {layer['name']!r}: type {kind} is not supported")
        if kind == "TensorFlowOpLayer" and cfg["node_def"]["op"] not in TF_OPS:
            raise KerasGraphError(f"layer {layer['name']!r}: TensorFlow op {cfg['node_def']['op']} is not supported")
        if kind == "Conv2D" and (tuple(cfg["strides"]) != (1, 1) or cfg["data_format"] != "channels_last"):
            raise KerasGraphError(f"layer {layer['name']!r}: only stride-1 channels-last convolutions are supported")
        if kind == "Conv2D":
            activation_name(cfg["activation"])
        if kind == "Activation":
            activation_name(cfg["activation"])
        if kind == "AveragePooling2D" and cfg["padding"] != "valid":
            raise KerasGraphError(f"layer {layer['name']!r}: only 'valid' average pooling is supported")
        if kind == "BatchNormalization" and list(cfg["axis"]) not in ([3], [-1]):
            raise KerasGraphError(f"layer {layer['name']!r}: batch normalisation over axis {cfg['axis']}")

    def _load(self, layer: dict[str, Any], weights: dict[str, Tensor]) -> None:
        kind, name, cfg = layer["class_name"], layer["name"], layer["config"]

        def take(key: str) -> Tensor:
            full = f"{name}/{key}"
            if full not in weights:
                raise KerasGraphError(f"weight {full!r} is missing")
            return torch.as_tensor(weights[full], dtype=torch.float32)

        if kind == "Conv2D":
            kernel = take("kernel")
            kh, kw = cfg["kernel_size"]
            if tuple(kernel.shape[:2]) != (kh, kw) or kernel.shape[3] != cfg["filters"]:
                raise KerasGraphError(f"weight {name}/kernel has shape {tuple(kernel.shape)}")
            self.params[_key(name, "w")] = nn.Parameter(kernel.permute(3, 2, 0, 1).contiguous(), requires_grad=False)
            if cfg["use_bias"]:
                self.params[_key(name, "b")] = nn.Parameter(take("bias"), requires_grad=False)
        elif kind == "BatchNormalization":
            mean, var = take("moving_mean"), take("moving_variance")
            scale = take("gamma") if cfg["scale"] else torch.ones_like(mean)
            shift = take("beta") if cfg["center"] else torch.zeros_like(mean)
            mult = scale / torch.sqrt(var + cfg["epsilon"])
            self.params[_key(name, "mult")] = nn.Parameter(mult, requires_grad=False)
            self.params[_key(name, "add")] = nn.Parameter(shift - mean * mult, requires_grad=False)

    def forward(self, x: Tensor, keep: bool = False) -> Tensor | dict[str, Tensor]:
        """(N, H, W, C) input -> the output layer's tensor, or with ``keep`` every layer's output by name (all
        channels-last, as Keras gives them)."""
        values: dict[str, Tensor] = {}
        for i, layer in enumerate(self.layers):
            names = _inbound(layer)
            args = [values[n] for n in names]
            values[layer["name"]] = _nchw(x) if layer["class_name"] == "InputLayer" else self._run(layer, args)
            if not keep:  # free what no later layer reads (a 512 x 512 x 64 map is 64 MB)
                for n in set(names):
                    if self.last_use[n] == i and n not in self.outputs:
                        del values[n]
            del args
        if keep:
            return {name: _nhwc(v) for name, v in values.items()}
        return _nhwc(values[self.outputs[0]])

    def _run(self, layer: dict[str, Any], args: list[Tensor]) -> Tensor:
        kind, name, cfg = layer["class_name"], layer["name"], layer["config"]
        if kind == "Conv2D":
            return self._conv(name, cfg, args[0])
        if kind == "Activation":
            return activate(args[0], activation_name(cfg["activation"]))
        if kind == "BatchNormalization":
            shape = (1, -1, 1, 1) if args[0].ndim == 4 else (-1,)
            return args[0] * self.params[_key(name, "mult")].view(shape) + self.params[_key(name, "add")].view(shape)
        if kind in ("Dropout", "SpatialDropout2D"):
            return args[0]
        if kind == "Add":
            return torch.stack(args).sum(0)
        if kind == "Multiply":
            return math.prod(args[1:], start=args[0])
        if kind == "AveragePooling2D":
            return F.avg_pool2d(args[0], tuple(cfg["pool_size"]), tuple(cfg["strides"]))
        if kind == "Reshape":
            return self._reshape(cfg, args[0])
        return self._tf_op(name, cfg, args)

    def _conv(self, name: str, cfg: dict[str, Any], x: Tensor) -> Tensor:
        w = self.params[_key(name, "w")]
        b = self.params[_key(name, "b")] if cfg["use_bias"] else None
        dil = tuple(cfg["dilation_rate"])
        y = x
        if cfg["padding"] == "same":
            # TensorFlow pads (effective kernel - 1) in total, the smaller half first
            pads = []
            for k, d in zip(reversed(cfg["kernel_size"]), reversed(dil), strict=True):
                total = d * (k - 1)
                pads += [total // 2, total - total // 2]
            y = F.pad(y, pads)
        y = F.conv2d(y, w, b, dilation=dil)
        return activate(y, activation_name(cfg["activation"]))

    def _reshape(self, cfg: dict[str, Any], x: Tensor) -> Tensor:
        x = _nhwc(x)
        target = list(cfg["target_shape"])
        if math.prod(target) != x[0].numel():
            # the stored shape names the build-time width; a fully convolutional model runs on any width
            width = self.build_shape[2] if len(self.build_shape) == 4 else None
            target = [-1 if t == width else t for t in target]
        return x.reshape(x.shape[0], *target)

    def _tf_op(self, name: str, cfg: dict[str, Any], args: list[Tensor]) -> Tensor:
        node, const = cfg["node_def"], cfg.get("constants", {})
        op, attr = node["op"], node.get("attr", {})
        if op in ("AddV2", "Mul", "Minimum", "Maximum"):
            a = args[0]
            b = args[1] if len(args) > 1 else torch.tensor(float(const["1"]), dtype=a.dtype, device=a.device)
            fn = {"AddV2": torch.add, "Mul": torch.mul, "Minimum": torch.minimum, "Maximum": torch.maximum}[op]
            return fn(a, b)
        if op == "Pack":
            axis = int(attr.get("axis", {}).get("i", 0))
            if args[0].ndim != 3 or axis not in (-1, 3):
                raise KerasGraphError(f"layer {name!r}: only Pack on the last axis of 3-D tensors is supported")
            return torch.stack(args, dim=1)  # (N, H, W) each -> (N, C, H, W), Keras's (N, H, W, C)
        return _strided_slice(name, attr, const, args[0])


def _strided_slice(name: str, attr: dict[str, Any], const: dict[str, Any], x: Tensor) -> Tensor:
    """``x[..., i]``: the one StridedSlice form the eyesegpy heads use (ellipsis first, last axis shrunk)."""
    masks = {k: int(attr.get(k, {}).get("i", 0)) for k in ("ellipsis_mask", "shrink_axis_mask", "begin_mask",
                                                            "end_mask", "new_axis_mask")}
    begin, end, strides = const.get("1"), const.get("2"), const.get("3")
    simple = (masks["ellipsis_mask"] == 1 and masks["shrink_axis_mask"] == 2 and masks["new_axis_mask"] == 0
              and strides == [1, 1] and begin is not None and end is not None and len(begin) == 2)
    if not simple:
        raise KerasGraphError(f"layer {name!r}: only the StridedSlice x[..., i] is supported")
    return x[:, int(begin[1])] if x.ndim == 4 else x[..., int(begin[1])]


def _nchw(x: Tensor) -> Tensor:
    """Channels-last 4-D -> (N, C, H, W); other ranks unchanged."""
    return x.permute(0, 3, 1, 2) if x.ndim == 4 else x


def _nhwc(x: Tensor) -> Tensor:
    """(N, C, H, W) -> channels-last; other ranks unchanged."""
    return x.permute(0, 2, 3, 1) if x.ndim == 4 else x


def _key(layer: str, part: str) -> str:
    """ParameterDict key of a layer's tensor (dots and slashes are not allowed there)."""
    return f"{layer}__{part}".replace(".", "_").replace("/", "_")
