"""onnx2torch for the graphs torch exports today.

onnx2torch 1.5 lists converters only up to the operator versions of opset 17, so graphs exported
by torch 2.14 (opset 18-20) fail on operators whose semantics it already converts. This module
registers those newer versions onto the existing converters; it never replaces one.
"""

from __future__ import annotations

import torch

# -- onnx2torch: opset versions newer than it knows -------------------------------------------------
# ONNX bumped these operators' versions only to allow more element types (bfloat16, float8, int4):
# the converter of the older version is exact for the float graphs foolbench converts.
_TYPE_ONLY_BUMPS = {
    "Flatten": (21,),
    "Transpose": (21,),
    "Unsqueeze": (21,),
    "Identity": (19, 21),
    "Shape": (19, 21),
    "Constant": (19, 21),
    "ConstantOfShape": (20, 21),
    "Cast": (19, 21),
    "Equal": (19,),
    "GreaterOrEqual": (16,),
    "LessOrEqual": (16,),
    "IsInf": (20,),
    "IsNaN": (20,),
    "Conv": (22,),
    "ConvTranspose": (22,),
    "MaxPool": (22,),
    "GlobalAveragePool": (22,),
    "Dropout": (22,),
    "Elu": (22,),
    "Selu": (22,),
    "HardSigmoid": (22,),
    "HardSwish": (22,),
    "Softplus": (22,),
    "Softsign": (22,),
    "InstanceNormalization": (22,),
    "Round": (22,),
    "Sin": (22,),
    "Cos": (22,),
    "Tan": (22,),
    "Asin": (22,),
    "Acos": (22,),
    "Atan": (22,),
}
# Opset 18 moved `axes` of these reductions from an attribute to an optional input.
_REDUCTIONS_18 = (
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSumSquare",
)
_registered = False


def register_onnx_opsets() -> None:
    """Teach onnx2torch the operator versions of recent opsets (torch exports opset 20) that it does
    not list although their semantics are ones it converts. Idempotent; never replaces a converter."""
    global _registered
    if _registered:
        return
    try:
        from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription
    except ImportError:  # no onnx2torch: torch_module() says how to install it
        return
    known: dict[str, list[int]] = {}
    for d in _CONVERTER_REGISTRY:
        if d.domain == "":
            known.setdefault(d.operation_type, []).append(d.version)

    def add(op: str, version: int, converter) -> None:
        key = OperationDescription(domain="", operation_type=op, version=version)
        _CONVERTER_REGISTRY.setdefault(key, converter)

    for op, versions in _TYPE_ONLY_BUMPS.items():
        if op not in known:
            continue
        base = _CONVERTER_REGISTRY[OperationDescription("", op, max(known[op]))]
        for v in versions:
            add(op, v, base)
    add("Reshape", 19, _convert_reshape)
    add("Reshape", 21, _convert_reshape)
    for op in _REDUCTIONS_18:
        add(op, 18, _convert_reduce_18)
        if op in ("ReduceMax", "ReduceMin"):
            add(op, 20, _convert_reduce_18)  # opset 20 added boolean inputs only
    add("Gelu", 20, _convert_gelu)
    _registered = True


def _convert_gelu(node, graph):
    """Gelu, an operator since opset 20 (torch exports nn.GELU as it; airnet-cifar10 has it), which
    onnx2torch 1.5 does not know: torch's GELU with the same approximation ('none' or 'tanh')."""
    from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node

    approximate = node.attributes.get("approximate", "none")
    if isinstance(approximate, bytes):
        approximate = approximate.decode()
    return OperationConverterResult(
        torch_module=torch.nn.GELU(approximate=approximate), onnx_mapping=onnx_mapping_from_node(node)
    )


def _convert_reshape(node, graph):
    """Reshape 19/21 (new element types only). torch exports allowzero=1, which differs from the
    default only where the target shape holds a 0: with a constant shape free of zeros it is plain."""
    from onnx2torch.node_converters.reshape import OnnxReshape
    from onnx2torch.utils.common import OperationConverterResult, get_const_value, onnx_mapping_from_node

    if node.attributes.get("allowzero", 0) == 1:
        try:
            shape = torch.as_tensor(get_const_value(node.input_values[1], graph))
        except KeyError:
            raise NotImplementedError("Reshape with allowzero=1 and a shape computed at run time") from None
        if bool((shape == 0).any()):
            raise NotImplementedError("Reshape with allowzero=1 to a shape holding 0")
    return OperationConverterResult(torch_module=OnnxReshape(), onnx_mapping=onnx_mapping_from_node(node))


def _convert_reduce_18(node, graph):
    """Reduce* of opset 18: axes from a constant second input (or none: all axes)."""
    from onnx2torch.node_converters.reduce import OnnxReduceStaticAxes
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, get_const_value

    keepdims = node.attributes.get("keepdims", 1)
    noop = node.attributes.get("noop_with_empty_axes", 0)
    axes = None
    if len(node.input_values) > 1 and node.input_values[1]:
        try:
            axes = get_const_value(node.input_values[1], graph)
        except KeyError:
            raise NotImplementedError(f"{node.operation_type} with axes computed at run time") from None
        axes = [int(a) for a in torch.as_tensor(axes).reshape(-1).tolist()]
    mapping = OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values)
    if not axes and noop:
        return OperationConverterResult(torch_module=torch.nn.Identity(), onnx_mapping=mapping)
    module = OnnxReduceStaticAxes(operation_type=node.operation_type, axes=axes or None, keepdims=keepdims)
    return OperationConverterResult(torch_module=module, onnx_mapping=mapping)
