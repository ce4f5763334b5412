import itertools
import uuid

import pytest

from detgn.config import get_cfg
from detgn.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader, build_detection_train_loader, register_coco_instances
from detgn.data.build import MappedDataset
from .shapes import make_shapes_dataset
from detgn.data.samplers import GroupedBatchSampler, InferenceSampler, TrainingSampler


def test_training_sampler_shards_without_overlap():
    a = list(itertools.islice(iter(TrainingSampler(10, seed=3, rank=0, world_size=2)), 5))
    b = list(itertools.islice(iter(TrainingSampler(10, seed=3, rank=1, world_size=2)), 5))
    assert sorted(a + b) == list(range(10))  # the first epoch split between the two ranks
    again = list(itertools.islice(iter(TrainingSampler(10, seed=3, rank=0, world_size=2)), 5))
    assert a == again
    other = list(itertools.islice(iter(TrainingSampler(10, seed=4, rank=0, world_size=2)), 5))
    assert other != a


@pytest.mark.parametrize("size,world", [(10, 2), (7, 2), (5, 3), (1, 2)])
def test_inference_sampler_covers_once(size, world):
    shards = [list(InferenceSampler(size, rank=r, world_size=world)) for r in range(world)]
    flat = [i for s in shards for i in s]
    assert sorted(flat) == list(range(size)) and len(flat) == size


def test_aspect_ratio_groups_are_homogeneous():
    group_ids = [0, 1, 0, 1, 1, 0, 1, 1, 0, 0]
    sampler = TrainingSampler(10, seed=0, rank=0, world_size=1)
    batches = list(itertools.islice(iter(GroupedBatchSampler(sampler, group_ids, 3, seed=0)), 20))
    for b in batches:
        assert len(b) == 3 and len({group_ids[i] for i, _ in b}) == 1
    seeds = [s for b in batches for _, s in b]
    assert len(set(seeds)) == len(seeds)


def _cfg(name, workers=0, batch=2):
    cfg = get_cfg()
    cfg.MODEL.MASK_ON = True
    cfg.DATASETS.TRAIN = (name,)
    cfg.SOLVER.IMS_PER_BATCH = batch
    cfg.INPUT.MIN_SIZE_TRAIN = (64, 80)
    cfg.INPUT.MIN_SIZE_TEST = 64
    cfg.DATALOADER.NUM_WORKERS = workers
    cfg.SEED = 11
    return cfg


@pytest.fixture
def shapes_name(tmp_path):
    json_file, image_root = make_shapes_dataset(str(tmp_path), num_images=8, seed=9, image_size=(64, 96))
    # two portrait images for aspect-ratio grouping
    name = f"shapes_loader_{uuid.uuid4().hex}"
    register_coco_instances(name, {}, json_file, image_root)
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _summary(batch):
    return [(d["image_id"], tuple(d["image"].shape), int(d["image"].sum())) for d in batch]


def test_train_loader_is_deterministic_and_resumable(shapes_name):
    cfg = _cfg(shapes_name, workers=0)
    full = [_summary(b) for b in itertools.islice(build_detection_train_loader(cfg), 6)]
    again = [_summary(b) for b in itertools.islice(build_detection_train_loader(cfg), 6)]
    assert full == again
    resumed = [_summary(b) for b in itertools.islice(build_detection_train_loader(cfg, start_iter=3), 3)]
    assert resumed == full[3:]
    cfg.DATALOADER.NUM_WORKERS = 2
    with_workers = [_summary(b) for b in itertools.islice(build_detection_train_loader(cfg), 6)]
    assert with_workers == full


def test_corrupt_image_is_skipped_in_training(shapes_name, caplog):
    cfg = _cfg(shapes_name)
    dicts = DatasetCatalog.get(shapes_name)
    open(dicts[0]["file_name"], "wb").write(b"garbage")
    ds = MappedDataset(dicts, __import__("detgn.data", fromlist=["DatasetMapper"]).DatasetMapper(cfg, True))
    out = ds[(0, 123)]
    assert out["image_id"] == dicts[1]["image_id"] and ds.num_skipped == 1
    assert "shape_0000.png" in caplog.text
    batches = list(itertools.islice(build_detection_train_loader(cfg), 8))
    assert all(len(b) == 2 for b in batches)


def test_batch_not_divisible_by_world_size(shapes_name, monkeypatch):
    from detgn.utils import comm

    cfg = _cfg(shapes_name, batch=3)
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    with pytest.raises(ValueError, match="divisible"):
        build_detection_train_loader(cfg)


def test_test_loader(shapes_name):
    cfg = _cfg(shapes_name)
    items = list(build_detection_test_loader(cfg, shapes_name))
    assert len(items) == 8 and all(len(b) == 1 for b in items)
    assert [b[0]["image_id"] for b in items] == list(range(1, 9))


def test_repeat_factors_follow_the_formula_and_the_stream_resumes():
    """detectron2/LVIS: r_i = max over the image's categories of max(1, sqrt(t / f_c))."""
    import math

    import numpy as np
    import torch

    from detgn.data.samplers import RepeatFactorTrainingSampler, repeat_factors_from_category_frequency

    # 10 images: category 0 in all, category 1 in 2, category 2 in 1; one image without annotations
    cats = [[0]] * 6 + [[0, 1], [0, 1], [0, 2], []]
    dicts = [{"annotations": [{"category_id": c} for c in cs]} for cs in cats]
    t = 0.5
    f = {0: 9 / 10, 1: 2 / 10, 2: 1 / 10}
    r = {c: max(1.0, math.sqrt(t / fc)) for c, fc in f.items()}
    expected = [max((r[c] for c in cs), default=1.0) for cs in cats]
    factors = repeat_factors_from_category_frequency(dicts, t)
    assert factors.tolist() == pytest.approx(expected) and factors[8] == pytest.approx(math.sqrt(5))
    stream = list(itertools.islice(iter(RepeatFactorTrainingSampler(factors, seed=3, rank=0, world_size=1)), 20000))
    counts = np.bincount(stream, minlength=10) / (20000 / float(factors.sum()))  # per epoch
    assert counts == pytest.approx(factors.numpy(), rel=0.08)  # stochastic rounding: r_i on average
    again = list(itertools.islice(iter(RepeatFactorTrainingSampler(factors, seed=3, rank=0, world_size=1)), 500))
    assert again == stream[:500]  # a pure function of the seed: resuming skips to the same positions
    shards = [list(itertools.islice(iter(RepeatFactorTrainingSampler(factors, seed=3, rank=k, world_size=2)), 250)) for k in (0, 1)]
    assert shards[0] == stream[0:500:2] and shards[1] == stream[1:500:2]
    with pytest.raises(ValueError):
        RepeatFactorTrainingSampler(torch.tensor([1.0, float("nan")]), seed=0, rank=0, world_size=1)


def test_repeat_factor_sampler_in_the_loader(shapes_name):
    cfg = _cfg(shapes_name, workers=0)
    cfg.DATALOADER.SAMPLER_TRAIN = "RepeatFactorTrainingSampler"
    cfg.DATALOADER.REPEAT_THRESHOLD = 0.9
    full = [_summary(b) for b in itertools.islice(build_detection_train_loader(cfg), 4)]
    resumed = [_summary(b) for b in itertools.islice(build_detection_train_loader(cfg, start_iter=2), 2)]
    assert resumed == full[2:]


def test_resume_on_another_number_of_processes_keeps_the_sample_stream():
    """A run checkpointed at iteration k with 4 processes and resumed with 2 (same IMS_PER_BATCH) sees, at every
    later iteration, the same images with the same augmentation seeds (the union over ranks): positions in the
    global stream and the seeds derived from them do not depend on the world size. Holds without aspect-ratio
    grouping; with grouping each rank buffers its own orientations, so the batches can differ."""
    from detgn.data.build import _SkipBatches
    from detgn.data.samplers import GroupedBatchSampler, TrainingSampler

    size, total, k, iters = 37, 4, 5, 12

    def stream(world, start):
        per_rank = []
        for rank in range(world):
            sampler = TrainingSampler(size, seed=7, rank=rank, world_size=world)
            batches = _SkipBatches(GroupedBatchSampler(sampler, [0] * size, total // world, seed=7, rank=rank, world_size=world), start)
            per_rank.append(list(itertools.islice(iter(batches), iters)))
        return [sorted(x for r in range(world) for x in per_rank[r][i]) for i in range(iters)]

    assert stream(2, k) == stream(4, k)  # resumed on 2 processes == continued on 4
    assert stream(1, k) == stream(4, k)
    assert stream(4, k)[0] == stream(4, 0)[k]  # and it is the uninterrupted run's iteration k
