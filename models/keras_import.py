"""A saved Keras 3 model mapped onto the builtin-only layer library, keeping its weights.

:func:`load` reads a ``.keras`` file, :func:`convert` takes a model in memory. The model
is a Sequential, or a Functional with one input and one output, of the layers in
:data:`SUPPORTED` (channels-last, no custom layers). Every layer becomes a
:mod:`models.architecture` spec, its weights are copied under fedge's weight names, and
layers with ``trainable=False`` become frozen (their weights stay in the file and never
travel). The output layer's sigmoid or softmax moves into the loss, as the zoo's output
layers give logits.

Anything else stops the import with a :class:`KerasImportError` naming the layer, its
class, the option and what is supported.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import numpy.typing as npt

from models.architecture import (
    ACTIVATIONS,
    Activation,
    Add,
    ArchitectureError,
    BatchNorm,
    Concatenate,
    Conv1D,
    Conv2D,
    Dense,
    DepthwiseConv2D,
    Dropout,
    Embedding,
    Flatten,
    GlobalPool,
    Graph,
    Layer,
    LayerNorm,
    LeakyReLU,
    Pool,
    Recurrent,
    ReLU,
    Reshape,
    SeparableConv2D,
    place,
    weight_shapes,
)
from models.zoo import ModelSpec

Array = npt.NDArray[Any]

#: loss names accepted by ``--loss`` (and read from a compiled model)
LOSSES = ("binary_crossentropy", "sparse_categorical_crossentropy", "mean_squared_error")
_LOSS_ALIASES = {"mse": "mean_squared_error", "BinaryCrossentropy": "binary_crossentropy",
                 "SparseCategoricalCrossentropy": "sparse_categorical_crossentropy",
                 "MeanSquaredError": "mean_squared_error"}  # fmt: skip


class KerasImportError(ArchitectureError):
    """The Keras model uses a layer, option or loss that fedge cannot train on a device."""


@dataclass(frozen=True)
class Imported:
    """A Keras model as fedge sees it.

    Attributes:
        spec: the layers, wiring, task and frozen layers.
        weights: the travelling weights (trainable and batch-norm statistics) by fedge name.
        constants: the frozen layers' weights by fedge name.
        origin: fedge weight name → (Keras layer name, index in its ``get_weights()``).
        optimizer: "sgd" or "adam" from the compiled model, or None.
        hyperparameters: the compiled optimizer's settings fedge uses (momentum, betas...).
        learning_rate: the compiled optimizer's learning rate, or None.
    """

    spec: ModelSpec
    weights: dict[str, Array]
    constants: dict[str, Array]
    origin: dict[str, tuple[str, int]]
    optimizer: str | None = None
    hyperparameters: dict[str, float] = dataclasses.field(default_factory=dict)
    learning_rate: float | None = None


def load(path: str | Path, *, loss: str | None = None, classes: int | None = None) -> Imported:
    """Load a saved Keras 3 model (``.keras``) and map it; see :func:`convert`.

    Raises:
        KerasImportError: unreadable file, custom layers, or anything :func:`convert` refuses.
    """
    try:
        with warnings.catch_warnings():  # "Skipping variable loading for optimizer": unused
            warnings.simplefilter("ignore", UserWarning)
            model = keras.saving.load_model(path, compile=True)
    except Exception as first:  # a custom loss or optimizer: read the layers alone
        try:
            model = keras.saving.load_model(path, compile=False)
        except Exception as exc:  # Keras raises many types for bad files
            raise KerasImportError(
                f"cannot load {path} as a Keras 3 model (custom layers are not supported): {exc}"
            ) from exc
        if loss is None:
            raise KerasImportError(
                f"{path}: the model's compile config cannot be read ({first}); give --loss"
            ) from first
    return convert(model, loss=loss, classes=classes, name=Path(path).stem)


def convert(
    model: Any, *, loss: str | None = None, classes: int | None = None, name: str | None = None
) -> Imported:
    """Map a Keras model onto fedge's layers, keeping its weights.

    Args:
        model: a built Sequential or single-input, single-output Functional model.
        loss: one of :data:`LOSSES` (aliases "mse" and Keras loss classes accepted);
            None reads the compiled loss.
        classes: checked against the output layer when given.
        name: the model's name in the file's metadata (default: the Keras name).

    Raises:
        KerasImportError: an unsupported layer, option, loss or output layer.
    """
    if not isinstance(model, keras.Model) or len(model.inputs) != 1 or len(model.outputs) != 1:
        raise KerasImportError("need a Sequential or Functional model with one input and output")
    input_shape = tuple(model.inputs[0].shape[1:])
    if any(d is None for d in input_shape):
        raise KerasImportError(f"the input shape {input_shape} must be fully known (no None)")
    layers, inputs, frozen, kept = _graph(model)
    task_loss, from_logits = _loss(model, loss)
    layers, inputs, kept = _strip_head(layers, inputs, kept, task_loss, from_logits)
    graph = Graph(tuple(layers), tuple(inputs), frozenset(frozen & set(range(len(layers)))))
    try:
        placed, out = place(graph, tuple(int(d) for d in input_shape))
    except ArchitectureError as exc:
        raise KerasImportError(f"the model does not fit fedge's layers: {exc}") from None
    found = _classes(task_loss, out)
    if classes is not None and classes != found:
        raise KerasImportError(f"--classes {classes} disagrees with the model's output {out}")
    spec = ModelSpec(name or model.name, tuple(int(d) for d in input_shape), found, graph.layers,
                     graph.inputs, graph.frozen)  # fmt: skip
    weights, constants, origin = _weights(placed, kept)
    return Imported(spec, weights, constants, origin, *_optimizer(model))


def _graph(model: Any) -> tuple[list[Layer], list[tuple[int, ...]], set[int], list[Any]]:
    """The model's layers in order, what each reads, the frozen ones, the Keras layers kept."""
    index: dict[int, int] = {}  # id(keras layer) → fedge index; the input layer is -1
    layers: list[Layer] = []
    inputs: list[tuple[int, ...]] = []
    frozen: set[int] = set()
    kept: list[Any] = []
    sequential = isinstance(model, keras.Sequential)
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            index[id(layer)] = -1
            continue
        if len(layer._inbound_nodes) > 1 and not sequential:
            raise KerasImportError(f"layer {layer.name!r} is used twice; fedge needs each once")
        if sequential:
            sources: tuple[int, ...] = (len(layers) - 1,)
        else:
            parents = [t._keras_history[0] for t in layer._inbound_nodes[0].input_tensors]
            if any(id(p) not in index for p in parents):
                raise KerasImportError(f"layer {layer.name!r} reads a layer not seen before it")
            sources = tuple(index[id(p)] for p in parents)
        index[id(layer)] = len(layers)
        layers.append(_layer(layer))
        inputs.append(sources)
        kept.append(layer)
        if not layer.trainable or not model.trainable:
            frozen.add(len(layers) - 1)
    if not layers:
        raise KerasImportError("the model has no layers")
    if not sequential and model.outputs[0]._keras_history[0] is not kept[-1]:
        raise KerasImportError("the model's output must be its last layer")
    return layers, inputs, frozen, kept


def _loss(model: Any, loss: str | None) -> tuple[str, bool]:
    """The task loss name and whether it takes logits."""
    from_logits = False
    if loss is None:
        compiled = getattr(model, "loss", None)
        if compiled is None:
            raise KerasImportError(f"the model is not compiled; give --loss ({', '.join(LOSSES)})")
        if isinstance(compiled, keras.losses.Loss):
            from_logits = bool(getattr(compiled, "from_logits", False))
            loss = type(compiled).__name__
        elif isinstance(compiled, str):
            loss = compiled
        else:
            raise KerasImportError(f"the model's loss {compiled!r} is not one of {LOSSES}")
    name = _LOSS_ALIASES.get(loss, loss)
    if name not in LOSSES:
        hint = " (labels must be class indices: use sparse_categorical_crossentropy)" if (
            "categorical" in name) else ""
        raise KerasImportError(f"loss {loss!r} is not supported{hint}; supported: "
                               f"{', '.join(LOSSES)}")  # fmt: skip
    return name, from_logits


def _strip_head(layers: list[Layer], inputs: list[tuple[int, ...]], kept: list[Any],
                loss: str, from_logits: bool) -> tuple[list[Layer], list[tuple[int, ...]],
                                                       list[Any]]:  # fmt: skip
    """Move the output layer's sigmoid/softmax into the loss: fedge's last layer gives logits."""
    wanted = {"binary_crossentropy": "sigmoid", "sparse_categorical_crossentropy": "softmax"}
    squash = "linear" if from_logits else wanted.get(loss, "linear")
    last = layers[-1]
    activation = getattr(last, "activation", getattr(last, "name", "linear"))
    if not isinstance(last, (Dense, Conv1D, Conv2D, DepthwiseConv2D, SeparableConv2D,
                             Activation)):  # fmt: skip
        activation = "linear"
    if activation != squash:
        raise KerasImportError(
            f"output layer {kept[-1].name!r} ({type(kept[-1]).__name__}) ends in "
            f"{activation!r}, but loss {loss}{' (from_logits)' if from_logits else ''} needs "
            f"{squash!r} there"
        )
    if squash == "linear":
        return layers, inputs, kept
    if isinstance(last, Activation):
        if inputs[-1][0] == -1:
            raise KerasImportError("the model is only an activation")
        return layers[:-1], inputs[:-1], kept[:-1]
    linear: Layer = dataclasses.replace(last, activation="linear")  # type: ignore[arg-type]
    return [*layers[:-1], linear], inputs, kept


def _classes(loss: str, out: tuple[int, ...]) -> int:
    if len(out) != 1:
        raise KerasImportError(f"the output must be a vector per example, got shape {out}")
    units = out[0]
    if loss == "sparse_categorical_crossentropy":
        if units < 3:
            raise KerasImportError(f"a {units}-unit softmax output: for two classes use "
                                   "Dense(1, activation='sigmoid') and binary_crossentropy")
        return units
    if units != 1:
        raise KerasImportError(f"{loss} needs one output unit, the model has {units}")
    return 2 if loss == "binary_crossentropy" else 0


def _weights(placed: list[Any], kept: list[Any]
             ) -> tuple[dict[str, Array], dict[str, Array], dict[str, tuple[str, int]]]:
    weights: dict[str, Array] = {}
    constants: dict[str, Array] = {}
    origin: dict[str, tuple[str, int]] = {}
    for named, layer in zip(placed, kept, strict=False):
        values = layer.get_weights()
        expected = weight_shapes(named.layer, named.input_shape)
        if [tuple(v.shape) for v in values] != [shape for _, shape in expected]:
            raise KerasImportError(
                f"layer {layer.name!r} ({type(layer).__name__}) has weights "
                f"{[v.shape for v in values]}, expected {[s for _, s in expected]}"
            )
        target = constants if named.frozen else weights
        for i, (name, value) in enumerate(zip(named.weight_names, values, strict=True)):
            target[name] = np.asarray(value, np.float32)
            origin[name] = (layer.name, i)
    return weights, constants, origin


def _optimizer(model: Any) -> tuple[str | None, dict[str, float], float | None]:
    optimizer = getattr(model, "optimizer", None)
    kind = type(optimizer).__name__
    if optimizer is None or kind not in ("SGD", "Adam"):
        return None, {}, None
    config = optimizer.get_config()
    rate = config.get("learning_rate")
    # Keras keeps the rate as float32: its shortest decimal is the rate the user wrote.
    rate = float(str(np.float32(rate))) if isinstance(rate, (int, float)) else None
    if kind == "SGD":
        return "sgd", {"momentum": float(config.get("momentum", 0.0))}, rate
    keys = ("beta_1", "beta_2", "epsilon")
    return "adam", {k: float(config[k]) for k in keys if k in config}, rate


# --- layers ------------------------------------------------------------------------------

def _refuse(layer: Any, option: str, value: Any, supported: str) -> KerasImportError:
    return KerasImportError(
        f"layer {layer.name!r} ({type(layer).__name__}): {option}={value!r} is not supported; "
        f"supported: {supported}"
    )


def _require(layer: Any, config: Mapping[str, Any], option: str, allowed: tuple[Any, ...],
             supported: str | None = None) -> None:  # fmt: skip
    value = config.get(option, allowed[0])
    if isinstance(value, list):
        value = tuple(value)
    if value not in allowed:
        raise _refuse(layer, option, value, supported or " or ".join(map(repr, allowed)))


def _activation(layer: Any, config: Mapping[str, Any], key: str = "activation") -> str:
    value = config.get(key, "linear")
    if isinstance(value, dict):
        value = value.get("config", {}).get("name", value.get("class_name"))
    if value not in ACTIVATIONS:
        raise _refuse(layer, key, value, ", ".join(ACTIVATIONS))
    return str(value)


def _l2(layer: Any, config: Mapping[str, Any], *keys: str) -> float:
    """The L2 factor of the kernel regulariser(s) ``keys`` (0 for none); others must be None."""
    for other in ("bias_regularizer", "activity_regularizer", "kernel_constraint",
                  "bias_constraint", "beta_regularizer", "gamma_regularizer",
                  "embeddings_regularizer", "embeddings_constraint"):  # fmt: skip
        if config.get(other) is not None:
            raise _refuse(layer, other, config[other], "None (only kernel L2 regularisers)")
    rates = set()
    for key in keys:
        regulariser = config.get(key)
        if regulariser is None:
            rates.add(0.0)
            continue
        kind = regulariser.get("class_name") if isinstance(regulariser, dict) else regulariser
        settings = regulariser.get("config", {}) if isinstance(regulariser, dict) else {}
        if kind not in ("L2", "l2") or set(settings) - {"l2"}:
            raise _refuse(layer, key, regulariser, "None or L2")
        rates.add(float(settings.get("l2", 0.01)))
    if len(rates) > 1:
        raise _refuse(layer, "/".join(keys), sorted(rates), "one L2 factor for all kernels")
    return rates.pop() if rates else 0.0


def _conv_common(layer: Any, config: Mapping[str, Any], rank: int) -> None:
    _require(layer, config, "data_format", ("channels_last",))
    _require(layer, config, "dilation_rate", ((1,) * rank, 1))
    _require(layer, config, "groups", (1,))
    _require(layer, config, "padding", ("valid", "same"))


def _conv1d(layer: Any, c: Mapping[str, Any]) -> Layer:
    _conv_common(layer, c, 1)
    return Conv1D(c["filters"], c["kernel_size"][0], c["strides"][0], c["padding"],
                  _activation(layer, c), c["use_bias"], _l2(layer, c, "kernel_regularizer"))


def _conv2d(layer: Any, c: Mapping[str, Any]) -> Layer:
    _conv_common(layer, c, 2)
    return Conv2D(c["filters"], tuple(c["kernel_size"]), tuple(c["strides"]), c["padding"],
                  _activation(layer, c), c["use_bias"], _l2(layer, c, "kernel_regularizer"))


def _depthwise(layer: Any, c: Mapping[str, Any]) -> Layer:
    _conv_common(layer, c, 2)
    return DepthwiseConv2D(tuple(c["kernel_size"]), tuple(c["strides"]), c["padding"],
                           c["depth_multiplier"], _activation(layer, c), c["use_bias"],
                           _l2(layer, c, "depthwise_regularizer"))  # fmt: skip


def _separable(layer: Any, c: Mapping[str, Any]) -> Layer:
    _conv_common(layer, c, 2)
    for other in ("depthwise_constraint", "pointwise_constraint"):
        _require(layer, c, other, (None,))
    return SeparableConv2D(c["filters"], tuple(c["kernel_size"]), tuple(c["strides"]),
                           c["padding"], c["depth_multiplier"], _activation(layer, c),
                           c["use_bias"],
                           _l2(layer, c, "depthwise_regularizer", "pointwise_regularizer"))


def _dense(layer: Any, c: Mapping[str, Any]) -> Layer:
    _require(layer, c, "lora_rank", (None,))
    return Dense(c["units"], _activation(layer, c), c["use_bias"],
                 _l2(layer, c, "kernel_regularizer"))  # fmt: skip


def _pool(op: str, rank: int) -> Callable[[Any, Mapping[str, Any]], Layer]:
    def build(layer: Any, c: Mapping[str, Any]) -> Layer:
        _require(layer, c, "data_format", ("channels_last",))
        _require(layer, c, "padding", ("valid", "same"))
        pool = tuple(c["pool_size"])
        strides = tuple(c["strides"]) if c.get("strides") is not None else None
        return Pool(op, rank, pool, strides, c["padding"])  # type: ignore[arg-type]

    return build


def _global(op: str) -> Callable[[Any, Mapping[str, Any]], Layer]:
    def build(layer: Any, c: Mapping[str, Any]) -> Layer:
        _require(layer, c, "data_format", ("channels_last",))
        _require(layer, c, "keepdims", (False,))
        return GlobalPool(op)  # type: ignore[arg-type]

    return build


def _relu(layer: Any, c: Mapping[str, Any]) -> Layer:
    _require(layer, c, "max_value", (None,))
    _require(layer, c, "threshold", (0.0, 0))
    slope = float(c.get("negative_slope", 0.0))
    return LeakyReLU(slope) if slope else ReLU()


def _batch_norm(layer: Any, c: Mapping[str, Any]) -> Layer:
    _require(layer, c, "axis", (-1, len(layer.input.shape) - 1), "-1 (the channels)")
    _require(layer, c, "synchronized", (False,))
    _require(layer, c, "renorm", (False,))
    _l2(layer, c)
    for other in ("moving_mean_constraint", "moving_variance_constraint"):
        _require(layer, c, other, (None,))
    return BatchNorm(float(c["momentum"]), float(c["epsilon"]), c["center"], c["scale"])


def _layer_norm(layer: Any, c: Mapping[str, Any]) -> Layer:
    axis = c.get("axis", -1)
    axis = tuple(axis) if isinstance(axis, list) else (axis,)
    if axis not in ((-1,), (len(layer.input.shape) - 1,)):
        raise _refuse(layer, "axis", c.get("axis"), "-1 (the last axis)")
    _require(layer, c, "rms_scaling", (False,))
    _l2(layer, c)
    return LayerNorm(float(c["epsilon"]), c["center"], c["scale"])


def _embedding(layer: Any, c: Mapping[str, Any]) -> Layer:
    _require(layer, c, "mask_zero", (False,))
    _require(layer, c, "lora_rank", (None,))
    _l2(layer, c)
    return Embedding(c["input_dim"], c["output_dim"])


def _reshape(layer: Any, c: Mapping[str, Any]) -> Layer:
    target = list(c["target_shape"])
    if -1 in target:
        known = int(np.prod([d for d in target if d != -1]))
        target[target.index(-1)] = int(np.prod(layer.input.shape[1:])) // known
    return Reshape(tuple(int(d) for d in target))


def _dropout(layer: Any, c: Mapping[str, Any]) -> Layer:
    _require(layer, c, "noise_shape", (None,))
    return Dropout(float(c["rate"]))


def _concatenate(layer: Any, c: Mapping[str, Any]) -> Layer:
    _require(layer, c, "axis", (-1, len(layer.output.shape) - 1), "-1 (the last axis)")
    return Concatenate()


def _recurrent(cell: str) -> Callable[[Any, Mapping[str, Any]], Layer]:
    def build(layer: Any, c: Mapping[str, Any]) -> Layer:
        _require(layer, c, "activation", ("tanh",))
        _require(layer, c, "recurrent_activation", ("sigmoid",))
        _require(layer, c, "use_bias", (True,))
        for option in ("return_state", "go_backwards", "stateful"):
            _require(layer, c, option, (False,))
        for option in ("dropout", "recurrent_dropout"):
            _require(layer, c, option, (0.0, 0))
        for option in ("kernel_regularizer", "recurrent_regularizer", "recurrent_constraint"):
            _require(layer, c, option, (None,))
        if cell == "gru":
            _require(layer, c, "reset_after", (True,))
        _l2(layer, c)
        return Recurrent(cell, c["units"], bool(c.get("return_sequences", False)))  # type: ignore[arg-type]

    return build


def _softmax(layer: Any, c: Mapping[str, Any]) -> Layer:
    _require(layer, c, "axis", (-1,))
    return Activation("softmax")


#: Keras class name → how it becomes a fedge layer
SUPPORTED: dict[str, Callable[[Any, Mapping[str, Any]], Layer]] = {
    "Dense": _dense,
    "Activation": lambda layer, c: Activation(_activation(layer, c)),
    "ReLU": _relu,
    "LeakyReLU": lambda layer, c: LeakyReLU(float(c.get("negative_slope", 0.3))),
    "Softmax": _softmax,
    "Conv1D": _conv1d,
    "Conv2D": _conv2d,
    "DepthwiseConv2D": _depthwise,
    "SeparableConv2D": _separable,
    "MaxPooling1D": _pool("max", 1),
    "MaxPooling2D": _pool("max", 2),
    "AveragePooling1D": _pool("avg", 1),
    "AveragePooling2D": _pool("avg", 2),
    "GlobalAveragePooling1D": _global("avg"),
    "GlobalAveragePooling2D": _global("avg"),
    "GlobalMaxPooling1D": _global("max"),
    "GlobalMaxPooling2D": _global("max"),
    "Flatten": lambda layer, c: Flatten(),
    "Reshape": _reshape,
    "Dropout": _dropout,
    "BatchNormalization": _batch_norm,
    "LayerNormalization": _layer_norm,
    "Embedding": _embedding,
    "LSTM": _recurrent("lstm"),
    "GRU": _recurrent("gru"),
    "Add": lambda layer, c: Add(),
    "Concatenate": _concatenate,
}


def _layer(layer: Any) -> Layer:
    kind = type(layer).__name__
    if kind not in SUPPORTED:
        raise KerasImportError(
            f"layer {layer.name!r} ({kind}) is not supported; supported layers: "
            f"{', '.join(SUPPORTED)}"
        )
    return SUPPORTED[kind](layer, layer.get_config())
