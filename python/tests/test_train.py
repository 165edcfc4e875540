"""The trainer from Python: a head-only phase of a registered model on a tiny generated
folder data set; frozen layers stay as they were, the head moves, checkpoints are written."""
import os
import tempfile
import warnings

import numpy as np
import pytest

import kiln

pytest.importorskip("PIL.Image")

from image_folders import write_splits  # noqa: E402


def test_head_only_phase_trains_the_head_alone():
    with tempfile.TemporaryDirectory() as d:
        write_splits(d, 6, 2, seed=0)
        model = kiln.build_model("vgg11", num_classes=2, image_size=32, seed=1)
        spec = kiln.find_model_spec("vgg11")
        before = {k: np.array(t.numpy()) for k, t in model.parameters().items()}
        epochs = []
        result = kiln.train(model, "vgg11", [kiln.Phase("head only", train=[spec.head_scope], lr=0.01, epochs=2,
                                                        momentum=0.9)],
                            os.path.join(d, "train"), os.path.join(d, "val"), os.path.join(d, "run"),
                            batch_size=4, image_size=32, num_workers=1, seed=3, on_epoch=epochs.append)
        assert result["finished"] and result["images"] == 4 and 0.0 <= result["acc"] <= 1.0
        assert [e["epoch"] for e in epochs] == [1, 2] and epochs[0]["phase_name"] == "head only"
        assert os.path.exists(result["last_checkpoint"])
        times = result["times"]  # seconds; the parts are disjoint, the rest is "other"
        assert times["steps"] > 0 and times["evaluation"] > 0 and times["checkpoints"] > 0 and times["other"] >= 0
        parts = ("steps", "evaluation", "checkpoints", "probe", "caches", "other")
        assert abs(sum(times[k] for k in parts) - times["total"]) < 1e-6
        assert times["conv_plans"] == 0  # within the parts, and only on a GPU
        for name, t in model.parameters().items():
            moved = not np.array_equal(before[name], t.numpy())
            assert moved == name.startswith(spec.head_scope), name
        with pytest.raises(kiln.Error):  # a data folder that is not there
            kiln.train(model, "vgg11", [kiln.Phase("p")], os.path.join(d, "nope"), os.path.join(d, "val"),
                       os.path.join(d, "run2"))

        # The run's checkpoint into a new model: the trained weights, and the run's record.
        run = os.path.join(d, "run")
        other = kiln.build_model("vgg11", num_classes=2, image_size=32, seed=7)
        info = kiln.load_checkpoint(other, run)
        assert info["state_path"] == result["last_checkpoint"] and info["epochs_done"] == 2
        assert info["arch"] == "vgg11" and info["classes"] == ["blue", "red"] and info["image_size"] == 32
        assert info["val_acc"] == pytest.approx(result["acc"])
        for name, t in model.parameters().items():
            assert np.array_equal(t.numpy(), other.parameters()[name].numpy()), name
        assert kiln.load_checkpoint(other, run, best=True)["epochs_done"] in (1, 2)
        # A model for other classes: refused on fc8 (the weights file), after the frozen file's
        # layers loaded; the model keeps every value it had.
        three = kiln.build_model("vgg11", num_classes=3, image_size=32, seed=7)
        values = {k: np.array(t.numpy()) for k, t in three.parameters().items()}
        with pytest.raises(kiln.Error, match="fc8"):
            kiln.load_checkpoint(three, run)
        assert all(np.array_equal(values[k], t.numpy()) for k, t in three.parameters().items())
        with pytest.raises(kiln.Error, match=r'holds a vgg11, and this model is a vgg16; build it with '
                                             r'kiln.build_model\("vgg11", num_classes=2, image_size=32\)'):
            kiln.load_checkpoint(kiln.build_model("vgg16", num_classes=2, image_size=32), run)
        with pytest.raises(kiln.Error, match="does not exist"):
            kiln.load_checkpoint(other, os.path.join(d, "nope"))
        # The latest cut short: said, and the one before is used. A state file that does not
        # read hides its validation accuracy, so best=True refuses to guess.
        for suffix in (".weights.h5", ".state.h5"):
            path = info["state_path"].replace(".state.h5", suffix)
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
            with pytest.warns(UserWarning, match="ckpt-000002.* cannot be loaded"):
                assert kiln.load_checkpoint(other, run)["epochs_done"] == 1
        with pytest.warns(UserWarning, match="cannot be loaded"), pytest.raises(kiln.Error, match="best=True: 1 "):
            kiln.load_checkpoint(other, run, best=True)


def test_a_failing_on_epoch_keeps_the_epoch_and_bad_options_are_refused_first():
    with tempfile.TemporaryDirectory() as d:
        write_splits(d, 4, 2, seed=0)
        spec = kiln.find_model_spec("vgg11")

        def run(name, **kw):
            model = kiln.build_model("vgg11", num_classes=2, image_size=32, seed=1)
            return kiln.train(model, "vgg11", [kiln.Phase("head only", train=[spec.head_scope], lr=0.01, epochs=2)],
                              os.path.join(d, "train"), os.path.join(d, "val"), os.path.join(d, name),
                              batch_size=4, image_size=32, num_workers=1, **kw)

        def typo(epoch):
            raise ValueError("a typo in my logging")

        with pytest.raises(ValueError, match="a typo in my logging"):
            run("hook", on_epoch=typo)
        assert any(f.startswith("ckpt-000001") for f in os.listdir(os.path.join(d, "hook")))  # epoch 1 kept
        with pytest.raises(TypeError, match="on_epoch must be a callable"):
            run("five", on_epoch=5)
        with pytest.raises(kiln.Error, match="keep must be 1 or more"):
            run("keep", keep=0)
        with pytest.raises(kiln.Error, match="checkpoint_every must be 0 .off. or positive, got -5"):
            run("every", checkpoint_every=-5)
        model = kiln.build_model("vgg11", num_classes=2, image_size=32, seed=1)
        with pytest.raises(kiln.Error, match="phase 'p' trains 'fc8', which matches no parameter of vgg11"):
            kiln.train(model, "vgg11", [kiln.Phase("p", train=["fc8"], lr=0.01, epochs=1)],
                       os.path.join(d, "train"), os.path.join(d, "val"), os.path.join(d, "pattern"),
                       batch_size=4, image_size=32, num_workers=1)
        for name in ("five", "keep", "every", "pattern"):
            assert not os.path.exists(os.path.join(d, name)), name


def test_precision_policy_reaches_the_trainer_and_the_checkpoint():
    h5py = pytest.importorskip("h5py")
    with tempfile.TemporaryDirectory() as d:
        write_splits(d, 4, 2, seed=1)
        model = kiln.build_model("vgg11", num_classes=2, image_size=32, seed=1)
        spec = kiln.find_model_spec("vgg11")
        run = os.path.join(d, "run")
        args = (model, "vgg11", [kiln.Phase("head only", train=[spec.head_scope], lr=0.01, epochs=1)],
                os.path.join(d, "train"), os.path.join(d, "val"), run)
        result = kiln.train(*args, batch_size=4, image_size=32, num_workers=1, precision="bf16-frozen")
        assert result["finished"]
        with h5py.File(result["last_checkpoint"], "r") as f:
            assert f.attrs["precision"] in ("bf16-frozen", b"bf16-frozen")
        for t in model.parameters().values():  # master weights stay fp32
            assert t.numpy().dtype == np.float32
        with pytest.raises(kiln.Error, match="precision='bf16-frozen'"):  # a resume may not change it
            kiln.train(*args, batch_size=4, image_size=32, num_workers=1, resume=True, precision="fp32")
        with pytest.raises(kiln.Error, match="unknown precision 'fp16'"):
            kiln.train(*args[:5], os.path.join(d, "run2"), batch_size=4, image_size=32, precision="fp16")


def test_cuda_graph_mode_is_taken_and_checked():
    # On a machine without a GPU, cuda_graph='on' trains eagerly: the same weights as 'off'.
    with tempfile.TemporaryDirectory() as d:
        write_splits(d, 4, 2, seed=2)
        spec = kiln.find_model_spec("vgg11")
        weights = []
        for i, mode in enumerate(("off", "on")):
            model = kiln.build_model("vgg11", num_classes=2, image_size=32, seed=1)
            kiln.train(model, "vgg11", [kiln.Phase("head only", train=[spec.head_scope], lr=0.01, epochs=1)],
                       os.path.join(d, "train"), os.path.join(d, "val"), os.path.join(d, f"run{i}"),
                       batch_size=4, image_size=32, num_workers=1, seed=3, cuda_graph=mode)
            weights.append({k: np.array(t.numpy()) for k, t in model.parameters().items()})
        assert weights[0].keys() == weights[1].keys()
        for k in weights[0]:
            assert np.array_equal(weights[0][k], weights[1][k]), k
        with pytest.raises(kiln.Error, match="sometimes"):
            kiln.train(kiln.build_model("vgg11", num_classes=2, image_size=32, seed=1), "vgg11",
                       [kiln.Phase("p", train=[spec.head_scope])], os.path.join(d, "train"),
                       os.path.join(d, "val"), os.path.join(d, "run3"), image_size=32, cuda_graph="sometimes")


def test_checkpoints_written_in_the_background_or_in_place_are_the_same():
    with tempfile.TemporaryDirectory() as d:
        write_splits(d, 4, 2, seed=4)
        spec = kiln.find_model_spec("vgg11")
        weights, results = [], []
        for background in (True, False):
            model = kiln.build_model("vgg11", num_classes=2, image_size=32, seed=1)
            results.append(kiln.train(model, "vgg11", [kiln.Phase("head only", train=[spec.head_scope], lr=0.01,
                                                                   epochs=2)],
                                      os.path.join(d, "train"), os.path.join(d, "val"),
                                      os.path.join(d, f"run{int(background)}"), batch_size=4, image_size=32,
                                      num_workers=1, seed=3, background_checkpoints=background))
            assert os.path.exists(results[-1]["last_checkpoint"])  # on disk when train returns
            other = kiln.build_model("vgg11", num_classes=2, image_size=32, seed=9)
            kiln.load_checkpoint(other, os.path.join(d, f"run{int(background)}"))
            weights.append({k: np.array(t.numpy()) for k, t in other.parameters().items()})
        assert os.path.basename(results[0]["last_checkpoint"]) == os.path.basename(results[1]["last_checkpoint"])
        for k in weights[0]:
            assert np.array_equal(weights[0][k], weights[1][k]), k


def test_on_epoch_sees_the_epochs_checkpoint_on_disk():
    # Checkpoints are written on a thread of their own while training goes on; on_epoch is
    # called once its epoch's is on disk, so a read there loads that one, complete (it used to
    # be called before the write: the read got the epoch before's, or an older one while a
    # write was in flight). Mid-epoch checkpoints (checkpoint_every=1) keep the writer busy.
    with tempfile.TemporaryDirectory() as d:
        write_splits(d, 4, 2, seed=5)
        spec = kiln.find_model_spec("vgg11")
        run = os.path.join(d, "run")
        model = kiln.build_model("vgg11", num_classes=2, image_size=32, seed=1)
        seen = []

        def on_epoch(e):
            reader = kiln.build_model("vgg11", num_classes=2, image_size=32, seed=9)
            info = kiln.load_checkpoint(reader, run)
            seen.append((e["epoch"], e["checkpoint"], info["state_path"], info["epochs_done"], info["batches_done"]))
            for name, t in model.parameters().items():  # the weights the epoch ended with
                assert np.array_equal(t.numpy(), reader.parameters()[name].numpy()), name

        result = kiln.train(model, "vgg11", [kiln.Phase("head only", train=[spec.head_scope], lr=0.01, epochs=3)],
                            os.path.join(d, "train"), os.path.join(d, "val"), run, batch_size=4, image_size=32,
                            num_workers=1, seed=3, checkpoint_every=1, on_epoch=on_epoch)
        assert [s[0] for s in seen] == [1, 2, 3]
        for epoch, checkpoint, state_path, epochs_done, batches_done in seen:
            assert checkpoint == state_path and os.path.basename(state_path) == f"ckpt-{epoch:06d}.state.h5"
            assert (epochs_done, batches_done) == (epoch, 0)
        assert seen[-1][1] == result["last_checkpoint"]


def test_freezing_in_on_epoch_says_to_use_a_later_phase():
    # What trains is the phase's: unfreezing in on_epoch used to end in the optimizer's "make a
    # new optimizer" (kiln.train owns it), and freezing trained on silently, unlike a resume.
    with tempfile.TemporaryDirectory() as d:
        write_splits(d, 4, 2, seed=6)
        spec = kiln.find_model_spec("vgg11")
        for name, change, said, phase in (
                ("unfreeze", lambda m: m.unfreeze("vgg11/fc7/"), "unfroze vgg11/fc7/weight, vgg11/fc7/bias",
                 "train=['vgg11/fc7/', 'vgg11/fc8/']"),
                ("freeze", lambda m: m.freeze("vgg11/fc8/weight"), "froze vgg11/fc8/weight",
                 "train=['vgg11/fc8/bias']")):
            model = kiln.build_model("vgg11", num_classes=2, image_size=32, seed=1)
            run = os.path.join(d, name)
            with pytest.raises(kiln.Error) as e:
                kiln.train(model, "vgg11", [kiln.Phase("head only", train=[spec.head_scope], lr=0.01, epochs=2)],
                           os.path.join(d, "train"), os.path.join(d, "val"), run, batch_size=4, image_size=32,
                           num_workers=1, on_epoch=lambda epoch: change(model))
            message = str(e.value)
            assert f"kiln.train: on_epoch {said} in phase 1 'head only' (epoch 1)" in message
            assert "fixed for each phase by its kiln.Phase(train=[...])" in message and f"(here: {phase})" in message
            assert "make a new optimizer" not in message
            # The epoch's checkpoint was written before on_epoch ran; no further epoch was.
            assert sorted(f for f in os.listdir(run) if f.startswith("ckpt-")) == [
                "ckpt-000001.state.h5", "ckpt-000001.weights.h5"], name
        # Changing it and changing it back within the callback is no change.
        model = kiln.build_model("vgg11", num_classes=2, image_size=32, seed=1)

        def peek(epoch):
            model.unfreeze("vgg11/fc7/")
            model.freeze("vgg11/fc7/")

        assert kiln.train(model, "vgg11", [kiln.Phase("head only", train=[spec.head_scope], lr=0.01, epochs=2)],
                          os.path.join(d, "train"), os.path.join(d, "val"), os.path.join(d, "peek"), batch_size=4,
                          image_size=32, num_workers=1, on_epoch=peek)["finished"]


def test_val_missing_a_class_is_scored_by_trains_numbering_and_mismatches_are_refused():
    from PIL import Image
    with tempfile.TemporaryDirectory() as d:
        tr, va = write_splits(d, 4, 2, seed=2)  # blue, red
        # A third train class, "aqua", sorted first: without one class list val's "blue"
        # would be label 0 there, aqua's number in train.
        os.makedirs(os.path.join(tr, "aqua"))
        for i in range(4):
            Image.fromarray(np.full((40, 40, 3), (0, 200, 200), np.uint8)).save(os.path.join(tr, "aqua", f"{i}.png"))
        model = kiln.build_model("vgg11", num_classes=3, image_size=32, seed=1)
        spec = kiln.find_model_spec("vgg11")
        phase = kiln.Phase("probe", train=[spec.head_scope], lr=1e-3, epochs=1, linear_probe=True)
        with pytest.warns(UserWarning, match="val has no image of class 'aqua'"):
            r = kiln.train(model, "vgg11", [phase], tr, va, os.path.join(d, "run"), batch_size=4, image_size=32,
                           num_workers=1, augment=False)
        # Colour separates these classes; scored by the wrong numbers val would read 0%.
        assert r["acc"] >= 0.75, r
        two = kiln.build_model("vgg11", num_classes=2, image_size=32, seed=1)
        with warnings.catch_warnings():  # the same warning as above
            warnings.simplefilter("ignore")
            with pytest.raises(kiln.Error, match="the model is a vgg11 .* but the run names it vgg16; pass 'vgg11'"):
                kiln.train(model, "vgg16", [phase], tr, va, os.path.join(d, "run2"), image_size=32)
            with pytest.raises(kiln.Error, match="has 2 outputs but the training data .* has 3 classes"):
                kiln.train(two, "vgg11", [phase], tr, va, os.path.join(d, "run3"), image_size=32)
        assert not os.path.exists(os.path.join(d, "run2")) and not os.path.exists(os.path.join(d, "run3"))


def test_a_run_with_no_epoch_reports_nothing_made_up():
    with tempfile.TemporaryDirectory() as d:
        write_splits(d, 2, 1, seed=4)
        model = kiln.build_model("vgg11", num_classes=2, image_size=32, seed=1)
        r = kiln.train(model, "vgg11", [kiln.Phase("none", epochs=0)], os.path.join(d, "train"),
                       os.path.join(d, "val"), os.path.join(d, "run"), image_size=32, num_workers=1)
        assert r["loss"] is None and r["acc"] is None and r["last_checkpoint"] is None and r["images"] == 0


def test_a_forgotten_image_size_is_said_and_the_failing_layer_named():
    with tempfile.TemporaryDirectory() as d:
        write_splits(d, 2, 1, seed=5)
        model = kiln.build_model("vgg11", num_classes=2, image_size=32, seed=1)
        with pytest.warns(UserWarning, match="built for image_size=32 but train runs at image_size=64"), \
                pytest.raises(kiln.Error, match="in layer 'vgg11/fc6': linear"):
            kiln.train(model, "vgg11", [kiln.Phase("p", epochs=1)], os.path.join(d, "train"), os.path.join(d, "val"),
                       os.path.join(d, "run"), image_size=64, num_workers=1)


def test_a_refused_resume_says_what_differs():
    with tempfile.TemporaryDirectory() as d:
        write_splits(os.path.join(d, "a"), 2, 1, seed=6)
        model = kiln.build_model("vgg11", num_classes=2, image_size=32, seed=1)
        args = dict(image_size=32, num_workers=1, batch_size=4)
        run = os.path.join(d, "run")
        kiln.train(model, "vgg11", [kiln.Phase("p", epochs=1)], os.path.join(d, "a", "train"),
                   os.path.join(d, "a", "val"), run, **args)
        for split in ("train", "val"):  # the same images under other class names
            os.makedirs(os.path.join(d, "b", split))
            for old, new in (("blue", "ants"), ("red", "bees")):
                os.rename(os.path.join(d, "a", split, old), os.path.join(d, "b", split, new))
        with pytest.raises(kiln.Error, match=r"trained with classes blue, red \(not this run's ants, bees\)"):
            kiln.train(model, "vgg11", [kiln.Phase("p", epochs=2)], os.path.join(d, "b", "train"),
                       os.path.join(d, "b", "val"), run, resume=True, **args)


def test_a_resume_with_a_head_for_other_classes_is_refused_before_loading_and_odd_sizes_checkpoint():
    with tempfile.TemporaryDirectory() as d:
        tr, va = write_splits(d, 2, 1, seed=7)
        run = os.path.join(d, "run")
        kiln.train(kiln.build_model("vgg11", num_classes=2, image_size=32, seed=1), "vgg11", [kiln.Phase("p")],
                   tr, va, run, image_size=32, num_workers=1)
        three = kiln.build_model("vgg11", num_classes=3, image_size=32, seed=1)
        with pytest.raises(kiln.Error, match="has 3 outputs but the training data"):
            kiln.train(three, "vgg11", [kiln.Phase("p", epochs=2)], tr, va, run, image_size=32, num_workers=1,
                       resume=True)
        # A research model at a crop vgg_finetune does not offer (40 px) trains and checkpoints.
        net = kiln.Sequential("net")
        for layer in (kiln.Conv2d("conv", 3, 4, 3, padding=1), kiln.ReLU("relu"), kiln.MaxPool2d("pool"),
                      kiln.Flatten("flat"), kiln.Linear("fc", 20 * 20 * 4, 2)):
            net.add(layer)
        r = kiln.train(net, "vgg11", [kiln.Phase("all", epochs=1)], tr, va, os.path.join(d, "odd"), image_size=40,
                       num_workers=1)
        assert r["finished"] and os.path.exists(r["last_checkpoint"])
