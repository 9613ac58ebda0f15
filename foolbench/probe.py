"""`foolbench models inspect`: show what the adapter understood of a model, and test it on a probe.

The probe is a real image of the model's kind (an MNIST digit for grey models, skimage's cat photo
for colour ones), so a wrong mean/std or layout shows at once as a nonsense top-3.
"""

from __future__ import annotations

import numpy as np


def probe_image(channels: int) -> tuple[str, np.ndarray]:
    """A labelled real image: [1, C, H, W] float32 in [0,1] at its natural size."""
    if channels == 1:
        from foolbench.data.mnist import load_mnist

        data = load_mnist()
        return f"MNIST test digit (a {int(data.test_y[0])})", data.test_x[:1, None].astype(np.float32) / 255
    from skimage import data

    return "skimage chelsea (a cat photo)", (data.chelsea().astype(np.float32) / 255).transpose(2, 0, 1)[None]


def inspect_model(spec: str, options) -> str:
    from foolbench.resolve import load_model

    model = load_model(spec, options)
    d = model.describe()
    inp = d["input"]
    lines = [
        f"model      {d['name']}  ({d['backend']}, provider {d['provider']})",
        f"device     {device_line(model)}",
        f"file       {d['path'] or '-'}",
        f"input      {inp['channels']} channel(s), {inp['size'][0]}x{inp['size'][1]}, {inp['layout']}"
        + (f", fixed batch {inp['fixed_batch']}" if inp["fixed_batch"] else ""),
        f"preprocess resize {inp['resize'] or '-'}, crop {inp['crop']}, mean {inp['mean'] or '-'}, std {inp['std'] or '-'}",
        f"output     {d['output']}, {d['classes']} classes: {', '.join(model.labels[:5])}"
        + (", ..." if d["classes"] > 5 else ""),
        f"dataset    {d['dataset'] or '-'}   held-out accuracy {_pct(d['accuracy'])}",
    ]
    name, image = probe_image(model.spec.channels)
    p = model.probs(image)[0]
    top = np.argsort(-p)[:3]
    lines.append(f"probe      {name}: " + "; ".join(f"{model.labels[i]} {p[i]:.2%}" for i in top))
    return "\n".join(lines)


def device_line(model) -> str:
    """Where the model scores and where its gradients run, as obtained (not as asked): a session
    that asked for CUDA and got the CPU shows the CPU."""
    from foolbench.models.device import placement, requested

    p = placement(model)
    scores = "GPU" if "CUDA" in str(p["provider"]) or p["provider"] == "torch-cuda" else "CPU"
    gpu = f" ({p['gpu']})" if p["gpu"] else ""
    return f"scores on the {scores}{gpu}, gradients on {p['torch_device']}; asked: --device {requested()}"


def _pct(x) -> str:
    return "-" if x is None else f"{x:.2%}"
