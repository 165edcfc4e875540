"""vgg_finetune train's seed recipe written in Python from kiln's generic pieces (build_model,
Phase, train) gives the app's weights bit for bit: the same generators (weights from --seed,
dropout from seed + 1, the loader from seed + 2), phases (the head alone, then every layer),
loader and trainer options; with --weights too (the app then draws only what the file lacks).
Runs the built app ($KILN_VGG_FINETUNE, set by ctest); ~10 s."""
import os
import subprocess
import tempfile

import numpy as np
import pytest

import kiln

APP = os.environ.get("KILN_VGG_FINETUNE", "")

# The flags both runs use; the Python run below spells out what they mean.
SEED, SIZE, BATCH = 7, 32, 4
LR1, LR2, MOMENTUM, DECAY, KEEP = 0.01, 0.001, 0.9, 5e-4, 0.5


def run_app(*args):
    # The app with this process's thread count: oneDNN's convolution gradients depend on it
    # (and `import torch` in an earlier test may have lowered it here).
    env = dict(os.environ, OMP_NUM_THREADS=str(kiln.get_num_threads()))
    r = subprocess.run([APP, *args], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, f"vgg_finetune {args[0]} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r.stdout


def seed_recipe_in_python(data, model_dir, weights=None, start_from_weights=False):
    """vgg_finetune train --model vgg16 [--weights FILE, a file with every layer] as a researcher
    would write it: build, then import over the draws, or (start_from_weights) build_model(weights=)."""
    spec = kiln.find_model_spec("vgg16")
    model = kiln.build_model("vgg16", num_classes=2, image_size=SIZE, keep_prob=KEEP, head="fc", seed=SEED,
                             weights=weights if start_from_weights else None)
    if weights and not start_from_weights:  # every layer below the head from the file; the head as the seed drew it
        report = kiln.import_weights(model, weights, skip=[spec.head_scope])
        assert not report.missing
    # Phase 1 trains the head alone (named as the app names it), phase 2 every layer.
    head = spec.head_scope.rstrip("/").split("/")[-1]
    phases = [kiln.Phase(f"{head} only", train=[spec.head_scope], lr=LR1, epochs=1, momentum=MOMENTUM,
                         weight_decay=DECAY),
              kiln.Phase("all layers", lr=LR2, epochs=1, momentum=MOMENTUM, weight_decay=DECAY)]
    result = kiln.train(model, "vgg16", phases, os.path.join(data, "train"), os.path.join(data, "val"), model_dir,
                        batch_size=BATCH, image_size=SIZE, num_workers=2, seed=SEED + 2, augment=True,
                        convention="torchvision_rgb", feature_cache=True, calibrate_batch_norm=not weights)
    assert result["finished"]
    return model


needs_app = pytest.mark.skipif(not os.path.isfile(APP), reason="KILN_VGG_FINETUNE names no vgg_finetune binary "
                                                                "(ctest sets it when the app is built)")


def toy_data(d):
    data = os.path.join(d, "data")
    run_app("_toy-data", data, "--classes", "2", "--train", "4", "--val", "2", "--size", "40")
    return data


def app_recipe(data, d, *extra):
    """vgg_finetune train with the flags above (and `extra`) into d/app; returns its export."""
    run_app("train", "--train-dir", os.path.join(data, "train"), "--val-dir", os.path.join(data, "val"),
            "--model-dir", os.path.join(d, "app"), "--image-size", str(SIZE), "--phase1-epochs", "1",
            "--phase2-epochs", "1", "--phase1-lr", str(LR1), "--phase2-lr", str(LR2), "--momentum",
            str(MOMENTUM), "--weight-decay", str(DECAY), "--keep-prob", str(KEEP), "--batch", str(BATCH),
            "--seed", str(SEED), "--device", "cpu", *extra)
    exported = os.path.join(d, "app.h5")
    run_app("export", "--model-dir", os.path.join(d, "app"), "--out", exported)
    return exported


def exported_weights(exported):
    app = kiln.build_model("vgg16", num_classes=2, image_size=SIZE, seed=SEED + 100)
    report = kiln.import_weights(app, exported)
    assert not report.missing and not report.skipped
    return app.parameters()


@needs_app
def test_seed_recipe_from_python_equals_vgg_finetune_train():
    with tempfile.TemporaryDirectory() as d:
        data = toy_data(d)
        want = exported_weights(app_recipe(data, d))
        got = seed_recipe_in_python(data, os.path.join(d, "py")).parameters()
        untrained = kiln.build_model("vgg16", num_classes=2, image_size=SIZE, seed=SEED).parameters()
        assert list(got) == list(want)
        for name in got:
            a, b = got[name].numpy(), want[name].numpy()
            assert a.dtype == b.dtype and a.shape == b.shape, name
            # Bit for bit (array_equal on float32 would let -0.0 equal 0.0).
            assert a.tobytes() == b.tobytes(), f"{name}: max |python - app| {np.abs(a - b).max()}"
            # Not trivially equal: both runs moved every layer away from the seed's initialisation.
            assert not np.array_equal(a, untrained[name].numpy()), f"{name} did not train"


@needs_app
def test_seed_recipe_with_weights_from_python_equals_vgg_finetune_train():
    # With --weights the app draws only what the file does not set (fc8 here), after the import,
    # from the offsets its build reserved (init::DeferredDraws); Python draws everything, then
    # imports over it. The same bits either way.
    with tempfile.TemporaryDirectory() as d:
        data = toy_data(d)
        start = os.path.join(d, "start.h5")  # "pretrained": another seed, another class count
        kiln.export_weights(kiln.build_model("vgg16", num_classes=5, image_size=SIZE, seed=SEED + 50), start)
        want = exported_weights(app_recipe(data, d, "--weights", start))
        got = seed_recipe_in_python(data, os.path.join(d, "py"), weights=start).parameters()
        assert list(got) == list(want)
        for name in got:
            assert got[name].numpy().tobytes() == want[name].numpy().tobytes(), name
        # build_model(weights=) starts it as the app does (the same function): the same bits.
        started = seed_recipe_in_python(data, os.path.join(d, "py2"), weights=start, start_from_weights=True)
        for name, t in started.parameters().items():
            assert t.numpy().tobytes() == want[name].numpy().tobytes(), name


def test_num_threads_round_trip():
    n = kiln.get_num_threads()
    try:
        kiln.set_num_threads(1)
        assert kiln.get_num_threads() == 1
        with pytest.raises(kiln.Error):
            kiln.set_num_threads(0)
    finally:
        kiln.set_num_threads(n)
    assert kiln.get_num_threads() == n
