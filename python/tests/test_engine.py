"""Modules, freezing by pattern, model specs, weights export/import, and the errors that
cross the boundary as kiln.Error with kiln's message."""
import gc
import os
import tempfile

import numpy as np
import pytest

import kiln


def small_net():
    net = kiln.Sequential("net")
    net.add(kiln.Conv2d("conv", 3, 4, 3, padding=1, seed=1))
    net.add(kiln.ReLU("relu"))
    net.add(kiln.Flatten("flat"))
    net.add(kiln.Linear("fc", 4 * 4 * 4, 2, seed=2))
    return net


def test_model_specs_and_build_by_name():
    names = [s.name for s in kiln.model_specs()]
    assert "vgg16" in names and "resnet50" in names
    spec = kiln.find_model_spec("vgg11")
    assert spec.head_scope == "vgg11/fc8/" and spec.default_image_size == 224
    model = kiln.build_model("vgg11", num_classes=3, image_size=32, seed=5)
    assert "vgg11/fc8/weight" in model.parameters()
    assert model.parameters()["vgg11/fc8/weight"].shape[0] == 3
    n = model.freeze("vgg11/conv*")
    assert n > 0 and all(not k.startswith("vgg11/conv") for k in model.trainable_parameters())
    model.eval()
    with kiln.no_grad():
        y = model(kiln.zeros([1, 32, 32, 3]))
    assert y.shape == (1, 3)
    with pytest.raises(kiln.Error, match="vgg16"):  # the message lists the known names
        kiln.find_model_spec("vgg17")


def test_module_outlives_python_references():
    fc = kiln.Linear("fc", 3, 2)
    w = fc.parameters()["fc/weight"]
    opt = kiln.Adam(fc, lr=0.01)  # keeps fc alive
    del fc
    gc.collect()
    assert opt.lr == pytest.approx(0.01) and w.shape == (2, 3)
    opt.step()  # no gradients yet: nothing to do, nothing to crash


def test_sequential_layers_by_position_name_and_slice():
    model = kiln.build_model("vgg11", num_classes=3, image_size=32, seed=5)
    names = [layer.name for layer in model]  # iterates the layers in order
    assert len(model) == len(names) and names[-1] == "fc8" and model[-1].name == "fc8"
    assert model["fc7"].name == "fc7" and names[model.index("fc7")] == "fc7"
    assert isinstance(model["fc8"], kiln.Linear)
    with pytest.raises(IndexError, match="has %d layers; index 99" % len(names)):
        model[99]
    with pytest.raises(KeyError, match="no layer 'fc9'; its layers: conv1_1,"):
        model["fc9"]
    with pytest.raises(ValueError, match="step 2 is not 1"):
        model[::2]
    # A slice added back into its model: refused (its layers would run twice, and the two would
    # keep each other alive for good).
    with pytest.raises(kiln.Error, match="its layer 'conv1_1' is in vgg11 already"):
        model.add(model[:1])
    assert names == [layer.name for layer in model]

    # The backbone without fc8: its output is what fc8 sees, and fc8 of it is the model's logits.
    backbone = model[:model.index("fc8")]
    assert len(backbone) == len(model) - 1 and isinstance(backbone, kiln.Sequential)
    assert set(backbone.parameters()) == set(model.parameters()) - {"vgg11/fc8/weight", "vgg11/fc8/bias"}
    backbone.eval()  # its layers' modes, shared: the model's own flag stays "training"
    assert model.training and not model["drop6"].training
    x = kiln.from_dlpack(np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32))
    with kiln.no_grad():
        feats = backbone(x)
        assert feats.shape == (2, 4096)
        assert np.array_equal(np.from_dlpack(model["fc8"](feats)), np.from_dlpack(model(x)))
    # Taking a slice of the (training) model leaves the shared layers' modes as they are.
    model[:model.index("fc8")]  # again, over drop6
    assert not model["drop6"].training and not backbone["drop6"].training
    # Shared layers: freezing through the slice freezes the model's.
    backbone.freeze("vgg11/fc7/")
    assert "vgg11/fc7/weight" not in model.trainable_parameters()

    # The slice keeps the built model's generators alive: its dropout draws after the model is gone.
    backbone.train()
    del model
    gc.collect()
    y = backbone(x)
    assert y.shape == (2, 4096) and np.isfinite(np.from_dlpack(y)).all()


def test_weights_export_import_round_trip():
    a, b = small_net(), small_net()
    b.parameters()["net/fc/weight"].numpy()[:] = 0.0
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "w.h5")
        kiln.export_weights(a, path)
        report = kiln.import_weights(b, path)
        assert "net/fc/weight" in report.loaded and report.format == "kiln"
        assert "verified" in report.checksums
        with pytest.raises(kiln.Error):
            kiln.import_weights(b, os.path.join(d, "missing.h5"))
    assert len(a.parameters()) == 4
    for name, t in a.parameters().items():
        assert np.array_equal(np.from_dlpack(t), np.from_dlpack(b.parameters()[name]))


def test_misuse_raises_kiln_error_not_a_crash():
    with pytest.raises(kiln.Error) as e:
        kiln.linear(kiln.zeros([2, 3]), kiln.zeros([4, 5]))
    assert isinstance(e.value, RuntimeError) and "linear" in str(e.value) and e.value.location
    with pytest.raises(kiln.Error, match="no parameter matches|match"):
        small_net().freeze("net/nothing*")
    x = kiln.ones([3])
    x.requires_grad = True
    y = kiln.sum(x * x)
    y.backward()
    with pytest.raises(kiln.Error):
        y.backward()  # the graph was freed by the first backward
    with pytest.raises(kiln.Error, match="dtype"):
        kiln.zeros([2], dtype="float64")
    with pytest.raises(kiln.Error, match="device"):
        kiln.zeros([2], device="tpu")
    with pytest.raises(kiln.Error):
        small_net()(kiln.zeros([1, 5, 5, 3]))  # fc expects 64 features
    with pytest.raises(kiln.Error):
        kiln.ones([2]).backward()  # not a scalar, no gradient given
    with pytest.raises(kiln.Error, match="unknown device 'cuda:99999999999'"):  # was std::stoi's IndexError
        kiln.ones([2], device="cuda:99999999999")
    with pytest.raises(kiln.Error, match=r"stride must be an int or a pair \(h, w\) of ints, got \(1.7, 1\)"):
        kiln.conv2d(kiln.ones([1, 3, 3, 1]), kiln.ones([1, 1, 1, 1]), stride=(1.7, 1))  # was std::bad_cast
    with pytest.raises(kiln.Error, match=r"conv2d: padding 9223372036854775808 does not fit int64"):
        kiln.conv2d(kiln.ones([1, 3, 3, 1]), kiln.ones([1, 1, 1, 1]), padding=2**63)  # was std::bad_cast too


def test_an_error_in_backward_names_the_layer():
    # The usual slip: an optimizer step between a retained backward and another one. The weights
    # fc saved for its backward changed, and the error says where in the model that was.
    net = small_net()
    loss = kiln.sum(net(kiln.ones([1, 4, 4, 3])))
    loss.backward(retain_graph=True)
    kiln.SGD(net, lr=0.1).step()
    with pytest.raises(kiln.Error, match=r"^in layer 'net/fc': backward of linear: a tensor it saved.*an optimizer step"):
        loss.backward()


def test_full_holds_an_int64_a_double_would_round():
    big = 2**60  # exactly a double
    assert np.from_dlpack(kiln.full([2], big, dtype="int64")).tolist() == [big, big]
    for value in (2**53 + 1, 2**63 - 1, -2**63 + 1):  # was filled with 2**53, then refused
        assert kiln.full([3], value).tolist() == [value] * 3 and kiln.full([3], value).dtype == "int64"
        assert kiln.full([2, 1], value, dtype="int64").dtype == "int64"
    assert kiln.full([1], 2**53 + 1, dtype="float32").item() == float(2**53)  # a float tensor rounds, as it must
    with pytest.raises(kiln.Error, match="does not fit int64"):
        kiln.full([1], 2**70, dtype="int64")


def test_one_no_grad_object_nests_in_itself():
    ng = kiln.no_grad()
    with ng:
        with ng:
            assert not kiln.grad_enabled()
        assert not kiln.grad_enabled()
    assert kiln.grad_enabled()


def test_type_stubs_ship_with_the_module():
    stub = os.path.join(os.path.dirname(kiln.__file__), "_kiln.pyi")
    with open(stub) as f:
        text = f.read()
    assert "def from_dlpack(" in text and "class Tensor" in text and "def __dlpack__(" in text
    # torch's trailing-underscore names, which stubgen leaves out unless told
    assert "def add_(" in text and "def clip_grad_norm_(" in text and "def requires_grad_(" in text


def test_a_module_cannot_contain_itself_and_layers_cannot_be_subclassed():
    s = kiln.Sequential("s")
    s.add(kiln.Linear("l", 4, 4))
    with pytest.raises(kiln.Error, match="is this Sequential itself"):
        s.add(s)
    outer = kiln.Sequential("outer")
    outer.add(s)
    with pytest.raises(kiln.Error, match="contains this Sequential"):
        s.add(outer)
    assert list(s.parameters()) == ["s/l/weight", "s/l/bias"]  # unchanged, and no endless walk
    with pytest.raises(TypeError):  # its forward would be skipped: refused at class creation
        class Mine(kiln.Sequential):  # noqa: F841
            pass


def test_flatten_keeps_the_feature_size_of_an_empty_batch():
    assert kiln.flatten(kiln.zeros([0, 2, 2, 3]), 1).shape == (0, 12)
    assert kiln.flatten(kiln.zeros([0, 2, 2, 3])).shape == (0,)  # every dimension, as torch.flatten


def test_exported_weights_record_the_preprocessing_the_loader_uses_by_default():
    h5py = pytest.importorskip("h5py")
    m = kiln.Sequential("net")
    m.add(kiln.Linear("fc", 3, 2))
    with tempfile.TemporaryDirectory() as d:
        for conv in (None, "caffe_bgr"):
            path = os.path.join(d, f"{conv}.h5")
            kiln.export_weights(m, path, **({"convention": conv} if conv else {}))
            with h5py.File(path, "r") as f:
                got = f.attrs["input_convention"]
                assert (got.decode() if isinstance(got, bytes) else got) == (conv or "torchvision_rgb")


def test_paths_may_be_pathlib_paths():
    import pathlib
    m = kiln.Sequential("net")
    m.add(kiln.Linear("fc", 3, 2))
    with tempfile.TemporaryDirectory() as d:
        path = pathlib.Path(d) / "w.h5"
        kiln.export_weights(m, path)
        assert sorted(kiln.import_weights(m, path).loaded) == ["net/fc/bias", "net/fc/weight"]
        with pytest.raises(kiln.Error, match="does not exist"):
            kiln.Loader(pathlib.Path(d) / "nope")


def test_build_model_from_weights_draws_only_what_the_file_lacks():
    with tempfile.TemporaryDirectory() as d:
        src = kiln.build_model("vgg11", num_classes=5, image_size=32, seed=3)
        full = os.path.join(d, "vgg11_5.h5")
        kiln.export_weights(src, full)
        # Other classes: every layer below the head loads, the head is the seed's draw, bit for
        # bit what build_model + import_weights (head skipped) gives.
        got = kiln.build_model("vgg11", num_classes=2, image_size=32, seed=8, weights=full)
        want = kiln.build_model("vgg11", num_classes=2, image_size=32, seed=8)
        kiln.import_weights(want, full, skip=["vgg11/fc8/"])
        # A pattern that matches nothing (the scope without its '/') would load what it meant to skip.
        with pytest.raises(kiln.Error, match="skip pattern 'vgg11/fc8' matches no entry"):
            kiln.import_weights(want, full, skip=["vgg11/fc8"])
        g, w = got.parameters(), want.parameters()
        assert g.keys() == w.keys()
        for name in g:
            assert g[name].tolist() == w[name].tolist(), name
        # The same classes: the head loads too.
        same = kiln.build_model("vgg11", num_classes=5, image_size=32, seed=8, weights=full)
        assert same.parameters()["vgg11/fc8/weight"].tolist() == src.parameters()["vgg11/fc8/weight"].tolist()
        # A file lacking layers: said, and those keep the seed's draws.
        part = kiln.Sequential("vgg11")
        part.add(kiln.Conv2d("conv1_1", 3, 64, 3, padding=1, seed=4))
        part_path = os.path.join(d, "conv1_1.h5")
        kiln.export_weights(part, part_path)
        with pytest.warns(UserWarning, match=r"lacks 20 parameter\(s\) of vgg11"):
            lacking = kiln.build_model("vgg11", num_classes=2, image_size=32, seed=8, weights=part_path)
        drawn = kiln.build_model("vgg11", num_classes=2, image_size=32, seed=8).parameters()
        assert lacking.parameters()["vgg11/fc6/weight"].tolist() == drawn["vgg11/fc6/weight"].tolist()
        assert lacking.parameters()["vgg11/conv1_1/weight"].tolist() == part.parameters()["vgg11/conv1_1/weight"].tolist()
        # The default classes against a file of others: said.
        with pytest.warns(UserWarning, match="head is shaped for other classes"):
            kiln.build_model("vgg11", image_size=32, seed=8, weights=full)
        # A 224 px file at 64 px: pool5 is pooled to fc6's 7x7.
        big = os.path.join(d, "vgg11_224.h5")
        kiln.export_weights(kiln.build_model("vgg11", num_classes=5, seed=3), big)
        adapted = kiln.build_model("vgg11", num_classes=2, image_size=64, seed=8, weights=big)
        assert adapted.parameters()["vgg11/fc6/weight"].shape == (4096, 25088)
        assert adapted(kiln.zeros([1, 64, 64, 3])).shape == (1, 2)


def test_a_phase_reprs_as_the_call_that_makes_it():
    p = kiln.Phase("fc8 only", train=["vgg16/fc8/"], lr=1e-3, epochs=10, weight_decay=5e-4, linear_probe=True)
    assert repr(p) == ("kiln.Phase('fc8 only', train=['vgg16/fc8/'], lr=0.001, epochs=10, momentum=0.0, "
                       "weight_decay=0.0005, linear_probe=True)")
    q = eval(repr(p), {"kiln": kiln})
    assert (q.name, q.train, q.lr, q.epochs, q.weight_decay, q.linear_probe) == (
        p.name, p.train, p.lr, p.epochs, p.weight_decay, p.linear_probe)


def test_requires_grad_set_by_hand_on_a_parameter_is_refused_naming_freeze():
    # torch's way to freeze; in kiln the module's flag freezes, and the two disagreed silently.
    s = kiln.Sequential("n")
    s.add(kiln.Linear("l", 3, 2))
    s.parameters()["n/l/bias"].requires_grad = False
    for what in (lambda: s.trainable_parameters(), lambda: s.summary(), lambda: kiln.SGD(s, lr=0.1)):
        with pytest.raises(kiln.Error, match=r"'n/l/bias': its tensor's requires_grad is off .*model\.freeze"):
            what()
    s.freeze("n/l/bias")
    assert list(s.trainable_parameters()) == ["n/l/weight"]
