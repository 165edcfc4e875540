"""kiln.fit_linear_probe, and the PyTorch recipe twin's copy of it (benchmarks/torch_recipe.py,
--head-init probe), which must fit the same classifier on the same features: then the GPU
comparison's accuracies differ by framework, not by algorithm."""
import os
import sys

import numpy as np
import pytest

import kiln

try:
    import torch
    import torchvision  # noqa: F401  (torch_recipe.py imports it)
except ImportError:
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch and torchvision are not installed")

BENCHMARKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "benchmarks")


def features(n, d, classes, seed):
    """Rows whose class moves a few features, a constant feature and one that almost never
    varies (the standardisation's two special cases), ReLU-like non-negative like fc7's."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    rng.shuffle(labels)
    x = rng.standard_normal((n, d))
    x[np.arange(n), labels] += 2.0
    x = np.maximum(x, 0.0)
    x[:, d - 1] = 3.0
    x[:, d - 2] = 0.0
    x[0, d - 2] = 1e-3
    return x.astype(np.float32), labels


def test_probe_separates_classes_and_reports_its_choice():
    x, y = features(90, 40, 3, seed=1)
    p = kiln.fit_linear_probe(kiln.from_dlpack(x), y.tolist(), 3)
    scores = x @ p["weight"].numpy().T + p["bias"].numpy()
    assert p["weight"].shape == (3, 40) and p["bias"].shape == (3,)
    assert (scores.argmax(1) == y).mean() == pytest.approx(p["train_acc"])
    assert p["train_acc"] > 0.9 and 0 < p["holdout_acc"] <= 1
    assert p["lambda_"] / 40 in (3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1, 3) and p["scale"] >= 1
    with pytest.raises(kiln.Error, match="label 3 outside"):
        kiln.fit_linear_probe(kiln.from_dlpack(x), [3] * 90, 3)
    # Labels as a Loader yields them, a kiln int64 tensor, give the same fit.
    q = kiln.fit_linear_probe(kiln.from_dlpack(x), kiln.from_dlpack(y.astype(np.int64)), 3)
    assert q["weight"].tolist() == p["weight"].tolist()
    with pytest.raises(kiln.Error, match="labels must be integers"):
        kiln.fit_linear_probe(kiln.from_dlpack(x), kiln.from_dlpack(y.astype(np.float32)), 3)


@needs_torch
@pytest.mark.parametrize("n, d", [(90, 120), (200, 30)])  # the dual (n <= d) and the primal system
def test_recipe_twin_fits_kilns_probe(n, d):
    sys.path.insert(0, BENCHMARKS)
    try:
        from torch_recipe import linear_probe
    finally:
        sys.path.remove(BENCHMARKS)
    x, y = features(n, d, 4, seed=n)
    p = kiln.fit_linear_probe(kiln.from_dlpack(x), y.tolist(), 4)
    w, b, mult, held = linear_probe(torch.from_numpy(x), torch.from_numpy(y), 4)
    assert mult == pytest.approx(p["lambda_"] / d) and held == pytest.approx(p["holdout_acc"])
    kw, kb = p["weight"].numpy(), p["bias"].numpy()
    scale = np.abs(kw).max()
    np.testing.assert_allclose(w.numpy(), kw, rtol=0, atol=1e-5 * scale)  # kiln rounds to float32
    np.testing.assert_allclose(b.numpy(), kb, rtol=0, atol=1e-5 * max(scale, np.abs(kb).max()))
