"""kiln.Loader: an image folder as (images, labels) batches of kiln tensors, one epoch per pass,
shared with PyTorch without copies; and a kiln backbone's features feeding a PyTorch head."""
import tempfile

import numpy as np
import pytest

import kiln

pytest.importorskip("PIL.Image")

from image_folders import write_folder  # noqa: E402


def epoch(loader):
    return [(np.array(x.numpy()), np.array(y.numpy())) for x, y in loader]


def test_one_pass_is_one_epoch_of_every_image():
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        write_folder(d, "train", 5, rng)
        loader = kiln.Loader(f"{d}/train", batch_size=4, image_size=32, seed=7, num_workers=1)
        assert loader.classes == ["blue", "red"] and loader.num_images == 10 and len(loader) == 3
        first = epoch(loader)
        assert [x.shape for x, _ in first] == [(4, 32, 32, 3), (4, 32, 32, 3), (2, 32, 32, 3)]
        assert all(x.dtype == np.float32 and y.dtype == np.int64 for x, y in first)
        labels = np.concatenate([y for _, y in first])
        assert sorted(labels.tolist()) == [0] * 5 + [1] * 5  # every image once
        assert loader.epoch == 1
        second = epoch(loader)  # the next pass is the next epoch, in its own order
        assert loader.epoch == 2 and loader.epoch_order(0) != loader.epoch_order(1)
        assert sorted(np.concatenate([y for _, y in second]).tolist()) == sorted(labels.tolist())
        # The same seed serves the same batches, bit for bit.
        again = epoch(kiln.Loader(f"{d}/train", batch_size=4, image_size=32, seed=7, num_workers=2))
        assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(first, again))
        with pytest.raises(kiln.Error):
            kiln.Loader(f"{d}/nope")


def test_kiln_features_feed_a_pytorch_head_without_copies():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as d:
        write_folder(d, "train", 8, rng)
        loader = kiln.Loader(f"{d}/train", batch_size=8, image_size=32, seed=1, num_workers=1)
        backbone = kiln.build_model("vgg11", num_classes=2, image_size=32, seed=1, head="avg")
        backbone.eval()
        torch.manual_seed(0)
        head = torch.nn.Linear(2, 2)
        opt = torch.optim.SGD(head.parameters(), lr=0.1)
        losses = []
        for _ in range(5):
            for x, y in loader:
                with kiln.no_grad():
                    f = backbone(x)  # kiln's frozen network
                ft, yt = torch.from_dlpack(f), torch.from_dlpack(y)
                assert ft.data_ptr() == f.data_ptr and yt.data_ptr() == y.data_ptr  # shared, not copied
                loss = torch.nn.functional.cross_entropy(head(ft), yt)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
        assert losses[-1] < losses[0]


def test_a_pass_stopped_early_still_leaves_the_next_pass_a_whole_epoch():
    rng = np.random.default_rng(3)
    with tempfile.TemporaryDirectory() as d:
        write_folder(d, "train", 6, rng)  # 12 images: 3 batches of 4
        loader = kiln.Loader(f"{d}/train", batch_size=4, image_size=32, seed=2, num_workers=1)
        it = iter(loader)
        _, first_labels = next(it)  # a peek
        rest = [y for _, y in it]  # the same pass goes on: the epoch's other 2 batches
        assert len(rest) == 2 and loader.epoch == 1
        for _ in loader:  # a pass left after one batch
            break
        assert len(epoch(loader)) == 3 and loader.epoch == 3  # the next pass is a whole epoch
        stale = iter(loader)
        fresh = iter(loader)  # a newer pass takes the loader over: the old iterator ends
        assert list(stale) == [] and len(list(fresh)) == 3


def test_one_pass_drained_by_two_threads_serves_its_epoch_once():
    import threading
    rng = np.random.default_rng(4)
    with tempfile.TemporaryDirectory() as d:
        write_folder(d, "train", 5, rng)  # 10 images, batches of 1
        loader = kiln.Loader(f"{d}/train", batch_size=1, image_size=32, shuffle=False, num_workers=2)
        it = iter(loader)
        got, lock = [], threading.Lock()

        def drain():
            for _, y in it:
                with lock:
                    got.append(int(y.numpy()[0]))

        threads = [threading.Thread(target=drain) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(got) == [0] * 5 + [1] * 5 and loader.epoch == 1  # not 11 batches, not epoch 2
        assert len(epoch(loader)) == 10 and loader.epoch == 2  # the next pass is a whole epoch


def test_a_batch_of_only_undecodable_files_is_not_served():
    rng = np.random.default_rng(8)
    with tempfile.TemporaryDirectory() as d:
        write_folder(d, "train", 1, rng)  # blue/0.png, red/0.png
        with open(f"{d}/train/red/0.png", "wb") as f:
            f.write(b"not a png")
        loader = kiln.Loader(f"{d}/train", batch_size=1, image_size=32, shuffle=False, num_workers=1)
        got = [y.tolist() for _, y in loader]
        assert len(loader) == 2 and got == [[0.0]]  # the broken red image's batch is skipped
