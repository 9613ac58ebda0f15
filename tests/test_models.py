"""The model adapter: every source gives the same probabilities, and bad models fail in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import export, tiny

from foolbench.errors import FoolbenchError
from foolbench.models import ModelCard, ModelOptions, load_model
from foolbench.models.ensemble import Ensemble
from foolbench.resolve import load_models


def images(n=5, c=1, size=28, seed=0):
    return np.random.default_rng(seed).random((n, c, size, size), dtype=np.float32)


def torch_probs(net, x):
    with torch.no_grad():
        return net(torch.from_numpy(x)).softmax(1).double().numpy()


def test_onnx_equals_pytorch_module(tmp_path):
    net = tiny()
    path = export(net, tmp_path / "m.onnx", (1, 1, 28, 28))
    model = load_model(str(path))
    x = images(7)
    assert model.num_classes == 10 and model.output_kind == "logits"
    assert np.abs(model.probs(x) - torch_probs(net, x)).max() < 1e-4
    np.testing.assert_allclose(model.probs(x).sum(1), 1.0, atol=1e-9)


def test_nhwc_model_is_detected_and_fed_nhwc(tmp_path):
    net = tiny(nhwc=True)
    model = load_model(str(export(net, tmp_path / "nhwc.onnx", (1, 28, 28, 1))))
    assert model.spec.layout == "NHWC"
    x = images(4)
    expected = torch_probs(net, x.transpose(0, 2, 3, 1).copy())
    assert np.abs(model.probs(x) - expected).max() < 1e-4


def test_probability_output_is_detected(tmp_path):
    net = tiny(softmax=True)
    model = load_model(str(export(net, tmp_path / "p.onnx", (1, 1, 28, 28))))
    assert model.output_kind == "probs"
    x = images(3)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).double().numpy()
    assert np.abs(model.probs(x) - expected).max() < 1e-5


def test_fixed_batch_of_one_is_fed_in_chunks(tmp_path):
    net = tiny()
    model = load_model(str(export(net, tmp_path / "b1.onnx", (1, 1, 28, 28), dynamic=False)))
    assert model.spec.fixed_batch == 1
    x = images(6)
    assert np.abs(model.probs(x) - torch_probs(net, x)).max() < 1e-4


def test_resize_and_channels_are_the_adapters_job(tmp_path):
    """Colour 56x56 images into a grey 28x28 model: the adapter converts, the caller never knows."""
    from PIL import Image

    net = tiny()
    model = load_model(str(export(net, tmp_path / "m.onnx", (1, 1, 28, 28))))
    grey = images(2, c=1, size=28)
    np.testing.assert_allclose(model.probs(np.repeat(grey, 3, axis=1)), model.probs(grey), atol=1e-6)
    big = images(2, c=1, size=56)
    by_pil = np.stack(
        [
            np.asarray(Image.fromarray(b[0]).resize((28, 28), Image.BILINEAR), dtype=np.float32)[None]
            for b in big
        ]
    )
    assert np.abs(model.probs(big) - model.probs(by_pil)).max() < 2e-3


def test_card_and_mean_std_are_applied(tmp_path):
    net = tiny(channels=3, size=32)
    card = ModelCard(labels=[f"c{i}" for i in range(10)], mean=[0.5, 0.4, 0.3], std=[0.2, 0.2, 0.2])
    model = load_model(str(export(net, tmp_path / "m.onnx", (1, 3, 32, 32), card=card)))
    x = images(3, c=3, size=32)
    mean = np.array([0.5, 0.4, 0.3], dtype=np.float32).reshape(1, 3, 1, 1)
    expected = torch_probs(net, ((x - mean) / 0.2).astype(np.float32))
    assert model.labels[3] == "c3"
    assert np.abs(model.probs(x) - expected).max() < 1e-4


def test_ten_crop_averages_ten_views(tmp_path):
    net = tiny(channels=3, size=24)
    path = export(net, tmp_path / "m.onnx", (1, 3, 24, 24))
    center = load_model(str(path), ModelOptions(card={"resize": 32}))
    ten = load_model(str(path), ModelOptions(card={"resize": 32, "crop": "ten"}))
    x = images(2, c=3, size=32)
    views = [x[:, :, t : t + 24, s : s + 24] for t, s in [(0, 0), (0, 8), (8, 0), (8, 8), (4, 4)]]
    views += [v[..., ::-1] for v in views]
    expected = np.mean([torch_probs(net, np.ascontiguousarray(v)) for v in views], axis=0)
    assert np.abs(ten.probs(x) - expected).max() < 1e-4
    assert np.abs(center.probs(x) - torch_probs(net, np.ascontiguousarray(views[4]))).max() < 1e-4


def test_ten_crop_without_a_resize_feeds_the_whole_image(tmp_path):
    """An ImageNet preset's ten crops on a model whose card sets no resize (a digit CNN, a user's CIFAR
    model) cannot crop anything: each image is one view, resized to the input, and one row comes back."""
    net = tiny(channels=3, size=24)
    path = export(net, tmp_path / "m.onnx", (1, 3, 24, 24))
    ten = load_model(str(path), ModelOptions(card={"crop": "ten"}))
    x = images(3, c=3, size=24)
    assert ten.spec.views == 1 and ten.probs(x).shape == (3, 10)
    np.testing.assert_allclose(ten.probs(x), torch_probs(net, x), atol=1e-4)


def test_with_options_is_a_new_adapter_as_if_loaded_with_them(tmp_path):
    path = export(tiny(channels=3, size=24), tmp_path / "m.onnx", (1, 3, 24, 24))
    center = load_model(str(path), ModelOptions(card={"resize": 32}))
    ten = center.with_options(crop="ten", batch_size=7)
    loaded = load_model(str(path), ModelOptions(card={"resize": 32, "crop": "ten"}))
    x = images(3, c=3, size=32)
    np.testing.assert_array_equal(ten.probs(x), loaded.probs(x))
    assert ten.describe() == loaded.describe() and ten.batch_size == 7
    assert center.spec.crop == "center" and center.describe()["input"]["crop"] == "center"  # untouched
    assert not np.array_equal(center.probs(x), ten.probs(x))
    with pytest.raises(ValueError, match="labels"):
        center.with_options(labels=["a"])


@pytest.mark.parametrize("softmax", [False, True])
def test_torch_module_gives_probabilities_or_logits(tmp_path, softmax):
    net = tiny(softmax=softmax)
    model = load_model(str(export(net, tmp_path / "m.onnx", (1, 1, 28, 28))))
    x = images(4)
    with torch.no_grad():
        probs = model.torch_module().eval()(torch.from_numpy(x)).numpy()
        logits = model.torch_module(output="logits").eval()(torch.from_numpy(x)).numpy()
        raw = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(probs, model.probs(x), atol=1e-5)
    if softmax:  # a model that outputs probabilities: their log, a logit up to a per-image constant
        np.testing.assert_allclose(logits, np.log(raw), atol=1e-4)
    else:
        np.testing.assert_allclose(logits, raw, atol=1e-4)
    with pytest.raises(ValueError, match="output"):
        model.torch_module(output="loss")


def test_model_options_survive_a_manifest():
    options = ModelOptions(arch="a.b:c", labels="/x/labels.txt", card={"crop": "ten"}, batch_size=8)
    assert ModelOptions.from_json(options.to_json()) == options
    assert ModelOptions().to_json() == {}
    old = {"arch": None, "labels": None, "overrides": {}}  # how manifests of 0.1.0 record no options
    assert ModelOptions.from_json(old) == ModelOptions()
    assert options.portable() == ModelOptions(card={"crop": "ten"}, batch_size=8)


def test_sidecar_toml_card_is_read(tmp_path):
    path = export(tiny(), tmp_path / "m.onnx", (1, 1, 28, 28))
    (tmp_path / "m.toml").write_text(
        'labels = ["zero","one","two","three","four","five","six","seven","eight","nine"]\n'
    )
    assert load_model(str(path)).labels[2] == "two"


def test_torchscript_and_state_dict_and_factory_agree(tmp_path, monkeypatch):
    net = tiny()
    x = images(3)
    card = "input_size = [28, 28]\nchannels = 1\n"
    scripted = tmp_path / "m.pt"
    torch.jit.trace(net, torch.zeros(1, 1, 28, 28)).save(str(scripted))
    (tmp_path / "m.toml").write_text(card)
    weights = tmp_path / "w.pth"
    torch.save(net.state_dict(), weights)
    (tmp_path / "w.toml").write_text(card)
    tests_dir = str(Path(__file__).parent)
    (tmp_path / "userarch.py").write_text(
        f"import sys\nsys.path.insert(0, {tests_dir!r})\nfrom conftest import tiny\n\ndef make():\n    return tiny()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    expected = torch_probs(net, x)
    for model in (
        load_model(str(scripted)),
        load_model(str(weights), ModelOptions(arch="userarch:make")),
        load_model("userarch:make", ModelOptions(card={"input_size": [28, 28], "channels": 1})),
    ):
        assert np.abs(model.probs(x) - expected).max() < 1e-5


def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pth"
    torch.save({"w": Evil()}, path)
    (tmp_path / "evil.toml").write_text("input_size = [28, 28]\nchannels = 1\n")
    with pytest.raises(FoolbenchError, match="refusing to load"):
        load_model(str(path), ModelOptions(arch="conftest:tiny"))
    assert not marker.exists()


def test_ensemble_is_the_mean_of_its_members(tmp_path):
    a = export(tiny(), tmp_path / "a.onnx", (1, 1, 28, 28))
    net_b = tiny()
    torch.nn.init.normal_(net_b.body[0].weight, std=0.3)
    b = export(net_b, tmp_path / "b.onnx", (1, 1, 28, 28))
    ens = load_models([str(a), str(b)])
    assert isinstance(ens, Ensemble)
    x = images(4)
    np.testing.assert_allclose(ens.probs(x), (load_model(str(a)).probs(x) + load_model(str(b)).probs(x)) / 2)


def test_ensemble_of_different_label_sets_is_refused(tmp_path):
    a = export(tiny(), tmp_path / "a.onnx", (1, 1, 28, 28))
    b = export(tiny(classes=5), tmp_path / "b.onnx", (1, 1, 28, 28))
    with pytest.raises(FoolbenchError, match="disagree on their classes"):
        load_models([str(a), str(b)])


# -- bad input: one clear error each -----------------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(FoolbenchError, match="not found"):
        load_model(str(tmp_path / "nope.onnx"))


def test_not_onnx_and_truncated_onnx(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a model at all" * 10)
    with pytest.raises(FoolbenchError, match="ONNX"):
        load_model(str(junk))
    good = export(tiny(), tmp_path / "good.onnx", (1, 1, 28, 28))
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(FoolbenchError, match="ONNX|onnxruntime"):
        load_model(str(cut))


def test_input_of_unusable_rank(tmp_path):
    class Rank3(torch.nn.Module):
        def forward(self, x):
            return x.sum(-1)

    path = export(Rank3(), tmp_path / "r3.onnx", (1, 28, 28))
    with pytest.raises(FoolbenchError, match="rank 3"):
        load_model(str(path))


def test_output_that_is_not_batch_by_classes(tmp_path):
    class Map(torch.nn.Module):
        def forward(self, x):
            return x * 2

    path = export(Map(), tmp_path / "map.onnx", (1, 1, 28, 28))
    with pytest.raises(FoolbenchError, match=r"\[batch, classes\]"):
        load_model(str(path))


def test_labels_whose_count_differs(tmp_path):
    path = export(tiny(), tmp_path / "m.onnx", (1, 1, 28, 28))
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n")
    with pytest.raises(FoolbenchError, match="3 labels given but the model outputs 10"):
        load_model(str(path), ModelOptions(labels=str(labels)))


def test_unknown_zoo_name_and_bad_arch(tmp_path):
    from foolbench.resolve import load_model as load_spec

    with pytest.raises(FoolbenchError, match="not found"):
        load_spec("no-such-zoo-model")
    weights = tmp_path / "w.pth"
    torch.save(tiny().state_dict(), weights)
    with pytest.raises(FoolbenchError, match="cannot import"):
        load_model(str(weights), ModelOptions(arch="no_such_module:make"))


def test_onnx_external_data_outside_its_folder_is_refused(tmp_path):
    import onnx

    path = export(tiny(), tmp_path / "m.onnx", (1, 1, 28, 28))
    proto = onnx.load(str(path))
    tensor = proto.graph.initializer[0]
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.ClearField("raw_data")
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../../etc/passwd"
    evil = tmp_path / "models" / "evil.onnx"
    evil.parent.mkdir()
    evil.write_bytes(proto.SerializeToString())
    with pytest.raises(FoolbenchError, match="outside the model's folder"):
        load_model(str(evil))
