"""The human-readable model card (NAME.md) written beside every zoo model.

The machine-readable card lives inside the ONNX file; this page is for people: what the model is,
how to feed it, how well it does, how it was made and how to make it again.
"""

from __future__ import annotations

from pathlib import Path

from foolbench.fileio import sha256_file


def render_card_md(path: Path, built, seconds: float) -> str:
    """Markdown for the model at `path`, from the builder's card, summary and notes on how it was built."""
    card = built.card
    lines = [
        f"# {card.name}",
        "",
        built.summary,
        "",
        "| | |",
        "|---|---|",
        f"| file | `{path.name}` ({path.stat().st_size / 1e6:.1f} MB, sha256 `{sha256_file(path)}`) |",
        f"| dataset | {card.dataset} |",
        f"| classes | {len(card.labels)}: {_preview(card.labels)} |",
        f"| input | {card.channels} x {card.input_size[0]} x {card.input_size[1]}, {card.layout}, any batch size |",
        f"| preprocessing | {_preprocessing(card)} |",
        f"| output | {card.output} (ONNX output `output`, input `input`) |",
        f"| held-out top-1 accuracy | {_accuracy(card)} |",
        "",
        "## How it was built",
        "",
        *[f"- {item}" for item in built.how],
        f"- Exported to ONNX with `torch.onnx.export(dynamo=True)`; the file's probabilities match PyTorch's "
        f"within 1e-4. Build time {seconds:.0f} s.",
        "- The machine-readable card is embedded in the file (ONNX metadata `foolbench.card`).",
        "",
        "## Rebuild",
        "",
        "```",
        card.extra["rebuild"],
        "```",
        "",
        "It writes to `$FOOLBENCH_ZOO` or `./zoo`; add `--out DIR` to write elsewhere.",
        "",
    ]
    return "\n".join(lines)


def _preview(labels: list[str]) -> str:
    shown = ", ".join(labels[:10])
    return shown if len(labels) <= 10 else f"{shown}, ..."


def _preprocessing(card) -> str:
    steps = [f"resize the shorter side to {card.resize}, centre crop"] if card.resize else []
    steps.append(f"pixels in [0, 1], minus mean {_numbers(card.mean)}, divided by std {_numbers(card.std)}")
    return "; ".join(steps)


def _numbers(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def _accuracy(card) -> str:
    if card.accuracy is not None:
        return f"{card.accuracy:.2%} (measured on {card.extra['test_size']:,} held-out images)"
    reported = card.extra.get("reported_top1")
    if reported is None:
        return "unknown (unverified weights)"
    return f"not measured here; {reported:.1%} reported by {card.extra['reported_by']}"
