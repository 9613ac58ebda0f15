"""The paper's experiments beyond a single run: transfer between models and the real-image baseline.

`transfer` re-scores saved champion PNGs on other models (`foolbench transfer`, `foolbench experiment
transfer-seeds|transfer-arch`); `baseline` measures confidence on real images and whether it separates
them from fooling images (`foolbench baseline`). Both only read run directories; neither changes them.
"""
