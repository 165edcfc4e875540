"""Every kiln class shows itself as what it is, not as <kiln._kiln.X object at 0x...>: the few
fields that tell one from another, read from what it holds (no device sync, no batch waited for)."""
import os
import tempfile

import pytest

import kiln


def test_no_kiln_class_keeps_pythons_default_repr():
    classes = [getattr(kiln, n) for n in dir(kiln) if isinstance(getattr(kiln, n), type)]
    default = [c.__name__ for c in classes if not issubclass(c, BaseException) and c.__repr__ is object.__repr__]
    assert default == []
    assert len(classes) >= 15  # Tensor, the modules, Phase, Loader, LoaderPass, Profiler, no_grad, ...


def test_no_grad_says_whether_it_is_entered():
    ng = kiln.no_grad()
    assert repr(ng) == "kiln.no_grad()"
    with ng:
        assert repr(ng) == "kiln.no_grad(entered)"
        with ng:
            assert repr(ng) == "kiln.no_grad(entered 2 times)"
    assert repr(ng) == "kiln.no_grad()"


def test_profiler_says_its_mode_and_what_it_holds():
    with kiln.Profiler() as p:
        kiln.add(kiln.ones([3]), kiln.ones([3]))
        assert repr(p).startswith("kiln.Profiler(by_shape=False, timing, ")
    rows, calls = len(p.rows()), sum(r["calls"] for r in p.rows())
    assert rows >= 1 and repr(p) == f"kiln.Profiler(by_shape=False, stopped, {rows} rows of {calls} calls)"
    q = kiln.Profiler(by_shape=True)
    assert repr(q) == "kiln.Profiler(by_shape=True, timing, 0 rows of 0 calls)"
    q.stop()
    assert repr(q) == "kiln.Profiler(by_shape=True, stopped, 0 rows of 0 calls)"


def test_loader_and_its_passes_say_where_they_stand():
    pytest.importorskip("PIL.Image")
    from image_folders import write_splits
    with tempfile.TemporaryDirectory() as d:
        train, _ = write_splits(d, 5, 1, seed=0)
        loader = kiln.Loader(train, batch_size=4, image_size=32, num_workers=1)
        head = f"kiln.Loader({train!r}, 10 images in 2 classes, batch_size=4, image_size=32, "
        assert repr(loader) == head + "epoch 0)"
        first = iter(loader)
        assert repr(first) == "kiln.LoaderPass(epoch 0, 0 of 3 batches served)"
        next(first)
        assert repr(first) == "kiln.LoaderPass(epoch 0, 1 of 3 batches served)"
        assert sum(1 for _ in first) == 2
        assert repr(first) == "kiln.LoaderPass(epoch 0, ended)" and repr(loader) == head + "epoch 1)"
        second = iter(loader)
        next(second)
        third = iter(loader)  # ends the second pass, which stopped early
        assert repr(second) == "kiln.LoaderPass(epoch 1, ended: a newer pass took over)"
        assert repr(third) == "kiln.LoaderPass(epoch 2, 0 of 3 batches served)" and loader.epoch == 2
        del first, second, third, loader


def test_import_report_is_one_line_and_str_the_full_report():
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "w.h5")
        kiln.export_weights(kiln.build_model("vgg11", num_classes=2, image_size=32), path)
        report = kiln.import_weights(kiln.build_model("vgg11", num_classes=3, image_size=32), path,
                                     skip_mismatched=True)
        assert repr(report) == (f"kiln.ImportReport({path!r}, kiln, 20 loaded, 2 skipped (2 shaped unlike the "
                                "model's), 0 unmapped, 0 missing)")
        assert str(report).startswith(f"weights '{path}' (kiln, model 'vgg11'") and "\n  skipped: " in str(report)


def test_the_other_reprs_name_the_thing():
    spec = kiln.find_model_spec("vgg11")
    assert repr(spec) == "kiln.ModelSpec('vgg11')"
    assert repr(kiln.Phase("p", train=[spec.head_scope])) == ("kiln.Phase('p', train=['vgg11/fc8/'], lr=0.001, "
                                                              "epochs=1, momentum=0.0, weight_decay=0.0)")
    model = kiln.build_model("vgg11", num_classes=2, image_size=32)
    assert repr(kiln.SGD(model)).startswith("kiln.SGD(lr=0.01, momentum=0.0")
