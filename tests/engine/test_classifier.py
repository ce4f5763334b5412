"""tools/train_classifier.py: detgn's ResNet trained as an image classifier on ImageFolder data made from
the bundled nuclei images; exact resume after SIGKILL, evaluation gathered across ranks, and a checkpoint
that loads into the detector (and into torchvision under its names)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from detgn.utils.errors import UserInputError

from tests.util import REPO, tool_module

SMALL = os.path.join(REPO, "configs", "ImageNet", "R_18_GN_nuclei_crops.yaml")
TOOL = os.path.join(REPO, "tools", "train_classifier.py")


@pytest.fixture(scope="module")
def crops(tmp_path_factory):
    """ImageFolder train/val roots: 32x32 crops, nucleus vs background (about 80 train, 24 val images)."""
    from detgn.data import DatasetCatalog
    from detgn.data.datasets.crops import write_crop_folders

    root = tmp_path_factory.mktemp("crops")
    for split, name, per_image in (("train", "nuclei_mini_train", 1), ("val", "nuclei_mini_val", 1)):
        counts = write_crop_folders(
            DatasetCatalog.get(name), ["nucleus"], str(root / split), size=32, per_image=per_image
        )
        assert counts["nucleus"] > 0 and counts["background"] > 0
    return root


def _args(crops, out, *extra):
    return [
        "--config-file",
        SMALL,
        "CLASSIFIER.TRAIN_DIR",
        str(crops / "train"),
        "CLASSIFIER.VAL_DIR",
        str(crops / "val"),
        "CLASSIFIER.EPOCHS",
        "1",
        "CLASSIFIER.TRAIN_CROP",
        "32",
        "CLASSIFIER.TEST_RESIZE",
        "32",
        "CLASSIFIER.TEST_CROP",
        "32",
        "SOLVER.IMS_PER_BATCH",
        "16",
        "SOLVER.WARMUP_ITERS",
        "2",
        "SOLVER.CHECKPOINT_PERIOD",
        "2",
        "TEST.EVAL_PERIOD",
        "0",
        "DATALOADER.NUM_WORKERS",
        "0",
        "LOG_PERIOD",
        "1",
        "OUTPUT_DIR",
        str(out),
        *extra,
    ]


def _side_by_side(runs, timeout=600):
    """Independent train_classifier.py runs [(args, killer)] at the same time (most of each is start-up);
    -> their CompletedProcess results, in order."""
    procs = [
        subprocess.Popen(
            _command(args, killer),
            cwd=REPO,
            env=dict(os.environ, OMP_NUM_THREADS="1"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args, killer in runs
    ]
    out = []
    for p, (args, _) in zip(procs, runs):
        stdout, stderr = p.communicate(timeout=timeout)
        out.append(subprocess.CompletedProcess(args, p.returncode, stdout, stderr))
    return out


def _command(args, killer):
    """train_classifier.py's command line; `killer` = N makes the process SIGKILL itself right after the
    checkpoint of iteration N is on disk (a deterministic point, unlike a timer)."""
    if killer is None:
        cmd = [sys.executable, TOOL] + args
    else:
        code = (
            f"import os, signal, sys; sys.argv = {[TOOL] + args!r}; sys.path.insert(0, {os.path.dirname(TOOL)!r})\n"
            "import train_classifier as t\n"
            "from detgn.engine.train_loop import HookBase\n"
            "class Kill(HookBase):\n"
            f"    def after_step(self):\n        if self.trainer.iter == {killer}: os.kill(os.getpid(), signal.SIGKILL)\n"
            "old = t.ClassifierTrainer.build_hooks\n"
            "t.ClassifierTrainer.build_hooks = lambda self: old(self) + [Kill()]\n"
            "sys.exit(t.cli())\n"
        )
        cmd = [sys.executable, "-c", code]
    return cmd


def _rows(path):
    return [json.loads(line) for line in open(path)]


@pytest.mark.slow  # three short training subprocesses
def test_classifier_trains_resumes_exactly_evaluates_and_fits_the_detector(tmp_path, crops, capsys):
    full, part = tmp_path / "full", tmp_path / "part"
    r, killed = _side_by_side([(_args(crops, full), None), (_args(crops, part), 1)])
    assert r.returncode == 0, r.stderr[-3000:]
    log = open(full / "log.txt").read()
    assert (
        "Schedule: 1 epochs of" in log
        and "Learning rate: SOLVER.BASE_LR 0.4 per 256 images x 16 images per iteration = 0.025" in log
    )
    rows = _rows(full / "metrics.json")
    max_iter = max(r["iteration"] for r in rows if "loss_cls" in r) + 1
    assert max_iter >= 4
    final = [r for r in rows if "classification/top1" in r][-1]
    assert 0 <= final["classification/top1"] <= 100 and final["classification/images"] > 0
    assert "classification/top5" not in final  # 2 classes: top-5 is not reported
    assert (full / "accuracy.png").exists() and (full / "losses.png").exists()

    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (part / "model_0000001.pth").exists() and not (part / "model_final.pth").exists()
    # the resumed run and a two-process evaluation of the full run's weights, side by side
    r, r_eval = _side_by_side(
        [
            (["--resume"] + _args(crops, part), None),
            (
                ["--eval-only", "--num-gpus", "2"]
                + _args(crops, tmp_path / "eval2", "MODEL.WEIGHTS", str(full / "model_final.pth")),
                None,
            ),
        ]
    )
    assert r.returncode == 0, r.stderr[-3000:]
    a = torch.load(full / "model_final.pth", weights_only=True)["model"]
    b = torch.load(part / "model_final.pth", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "resumed run differs"
    losses = lambda rows: [(r["iteration"], r["loss_cls"]) for r in rows if "loss_cls" in r]
    assert losses(_rows(full / "metrics.json")) == losses(_rows(part / "metrics.json"))

    # evaluation sharded over two processes and gathered: the same figures as the one-process run's last evaluation
    assert r_eval.returncode == 0, r_eval.stderr[-3000:]
    last = lambda path: [l for l in open(path).read().splitlines() if "Evaluation on" in l][-1].split("Evaluation on ")[
        1
    ]
    assert last(tmp_path / "eval2" / "log.txt") == last(full / "log.txt")

    # the checkpoint is MODEL.WEIGHTS of a detector with the same ResNet: 0 missing backbone keys, fc unused
    from detgn.checkpoint import DetectionCheckpointer
    from detgn.config import get_cfg
    from detgn.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "nuclei_quickstart.yaml"))
    detector = build_model(cfg)
    ck = DetectionCheckpointer(detector)
    ck.load(str(full / "model_final.pth"), checkpointables=[])
    report = ck.last_report
    assert [k for k in report["missing"] if k.startswith("backbone.bottom_up.")] == []
    assert report["unused"] == ["fc.bias", "fc.weight"] and report["shape_mismatch"] == []
    assert torch.equal(
        detector.state_dict()["backbone.bottom_up.res5.1.conv2.weight"], a["backbone.bottom_up.res5.1.conv2.weight"]
    )

    # and in torchvision's names through the CLI: a strict load into torchvision's ResNet-18
    import torchvision

    tv_file = tmp_path / "r18_tv.pth"
    argv = [str(full / "model_final.pth"), str(tv_file), "--to", "torchvision", "--config-file", SMALL]
    assert tool_module("convert_weights").main(argv + ["CLASSIFIER.NUM_CLASSES", "2"]) == 0
    assert "torchvision.models.resnet18" in capsys.readouterr().out
    tv = torchvision.models.resnet18(num_classes=2, norm_layer=lambda c: torch.nn.GroupNorm(32, c))
    tv.load_state_dict(torch.load(tv_file, weights_only=True), strict=True)


def test_converted_to_torchvision_names_gives_the_same_logits(tmp_path):
    import torchvision

    from detgn.checkpoint.formats import detgn_names_to_torchvision, torchvision_names_to_detgn
    from detgn.config import get_classifier_cfg
    from detgn.modeling import build_model

    cfg = get_classifier_cfg()
    cfg.merge_from_file(SMALL)
    cfg.CLASSIFIER.NUM_CLASSES = 3
    cfg.CLASSIFIER.ZERO_INIT_RESIDUAL = False
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    tv_sd = detgn_names_to_torchvision(model.state_dict())
    tv = torchvision.models.resnet18(num_classes=3, norm_layer=lambda c: torch.nn.GroupNorm(32, c)).eval()
    tv.load_state_dict(tv_sd, strict=True)
    img = torch.randint(0, 256, (2, 3, 48, 48), dtype=torch.uint8)
    with torch.no_grad():
        ours = model([{"image": i} for i in img])
        theirs = tv((img.float() - model.pixel_mean) / model.pixel_std)
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-5)
    # and back: torchvision names -> detgn names is the identity on the backbone
    back = torchvision_names_to_detgn(tv_sd, "backbone.bottom_up.")
    assert back.keys() == model.state_dict().keys()
    r50 = torchvision.models.resnet50().state_dict()
    r50 = {k: v for k, v in r50.items() if not k.endswith("num_batches_tracked")}
    assert detgn_names_to_torchvision(torchvision_names_to_detgn(r50, "backbone.bottom_up.")).keys() == r50.keys()
    with pytest.raises(ValueError, match="fpn_lateral2.weight has no torchvision ResNet name"):
        detgn_names_to_torchvision({"backbone.fpn_lateral2.weight": torch.zeros(1)})


def _folder(classes, n):
    return {"classes": classes, "records": [{"file_name": f"{i}.png", "label": i % len(classes)} for i in range(n)]}


def test_prepare_classifier_cfg_resolves_and_refuses():
    from detgn.config import get_classifier_cfg
    from detgn.engine.classifier_trainer import prepare_classifier_cfg

    base = get_classifier_cfg()
    base.merge_from_file(os.path.join(REPO, "configs", "ImageNet", "R_50_GN_100ep.yaml"))
    cfg, notes = prepare_classifier_cfg(base, _folder([f"c{i}" for i in range(1000)], 1281167))
    assert cfg.CLASSIFIER.NUM_CLASSES == 1000
    assert cfg.SOLVER.MAX_ITER == 100 * 5005 and tuple(cfg.SOLVER.STEPS) == (30 * 5005, 60 * 5005, 90 * 5005)
    assert cfg.SOLVER.BASE_LR == pytest.approx(0.1)
    assert (
        cfg.CLASSIFIER.EPOCHS == 0 and cfg.CLASSIFIER.LR_REFERENCE_BATCH == 0
    )  # resolved: config.yaml reruns as it is
    again, _ = prepare_classifier_cfg(cfg, _folder([f"c{i}" for i in range(1000)], 1281167))
    assert again.SOLVER.MAX_ITER == cfg.SOLVER.MAX_ITER and again.SOLVER.BASE_LR == cfg.SOLVER.BASE_LR
    small = base.clone()
    small.SOLVER.IMS_PER_BATCH = 64
    cfg, _ = prepare_classifier_cfg(small, _folder(["a", "b"], 640))
    assert (
        cfg.SOLVER.BASE_LR == pytest.approx(0.025)
        and cfg.SOLVER.MAX_ITER == 1000
        and tuple(cfg.SOLVER.STEPS) == (300, 600, 900)
    )
    bad = [
        ("CLASSIFIER.NUM_CLASSES", 5, "NUM_CLASSES is 5 but"),
        ("SOLVER.MAX_ITER", 10, "EPOCHS > 0 sets SOLVER.MAX_ITER"),
        ("MODEL.META_ARCHITECTURE", "GeneralizedRCNN", "trains MODEL.META_ARCHITECTURE ImageNetClassifier"),
    ]
    for key, value, message in bad:
        c = base.clone()
        c.merge_from_list([key, value])
        with pytest.raises(UserInputError, match=message):
            prepare_classifier_cfg(c, _folder(["a", "b"], 10))
    c = base.clone()
    c.CLASSIFIER.EPOCHS, c.CLASSIFIER.LR_STEP_EPOCHS = 0, (5, 8)
    with pytest.raises(UserInputError, match="LR_STEP_EPOCHS needs CLASSIFIER.EPOCHS"):
        prepare_classifier_cfg(c, _folder(["a", "b"], 10))
    with pytest.raises(UserInputError, match="other class folders"):
        prepare_classifier_cfg(base, _folder(["a", "b"], 10), _folder(["a", "c"], 4))


def test_zero_init_and_deterministic_augmentation(crops):
    from detgn.config import get_classifier_cfg
    from detgn.data.classification import ClassificationMapper, load_image_folder
    from detgn.modeling import build_model

    cfg = get_classifier_cfg()
    cfg.merge_from_file(SMALL)
    cfg.CLASSIFIER.NUM_CLASSES = 2
    model = build_model(cfg)
    last = [k for k, v in model.state_dict().items() if k.endswith("conv2.norm.weight")]
    assert (
        len(last) == 8 and all(float(model.state_dict()[k].abs().sum()) == 0 for k in last) and model.num_zero_init == 8
    )
    cfg.CLASSIFIER.ZERO_INIT_RESIDUAL = False
    assert all(float(build_model(cfg).state_dict()[k].abs().sum()) > 0 for k in last)
    folder = load_image_folder(str(crops / "train"))
    assert folder["classes"] == ["background", "nucleus"]
    mapper = ClassificationMapper(cfg, True)
    rec = folder["records"][0]
    a = mapper(rec, np.random.RandomState(7))["image"]
    b = mapper(rec, np.random.RandomState(7))["image"]
    c = mapper(rec, np.random.RandomState(8))["image"]
    assert a.shape == (3, 56, 56) and a.dtype == torch.uint8 and torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(UserInputError, match="is not a folder"):
        load_image_folder(str(crops / "missing"))


def test_classifier_keys_belong_to_the_classifier_tool_only(tmp_path, capsys):
    """The detector's defaults have no CLASSIFIER.* keys: train_net refuses a classifier config in one line naming
    tools/train_classifier.py, train_classifier refuses a detector config, and the model names the missing keys."""
    from detgn.config import get_cfg, get_classifier_cfg
    from detgn.modeling import build_model
    from detgn.utils.errors import ConfigValueError

    assert "CLASSIFIER" not in get_cfg() and "CLASSIFIER" in get_classifier_cfg()
    assert tool_module("train_net").cli(["--config-file", SMALL, "OUTPUT_DIR", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "Unknown config key 'CLASSIFIER'" in err and "train it with tools/train_classifier.py" in err
    quickstart = os.path.join(REPO, "configs", "nuclei_quickstart.yaml")
    assert tool_module("train_classifier").cli(["--config-file", quickstart, "OUTPUT_DIR", str(tmp_path / "b")]) == 2
    assert "trains MODEL.META_ARCHITECTURE ImageNetClassifier" in capsys.readouterr().err
    accumulate = ["--config-file", SMALL, "SOLVER.IMS_PER_DEVICE", "1", "OUTPUT_DIR", str(tmp_path / "c")]
    assert tool_module("train_classifier").cli(accumulate) == 2
    assert "SOLVER.IMS_PER_DEVICE / SOLVER.REFERENCE_WORLD_SIZE (gradient accumulation" in capsys.readouterr().err
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = "ImageNetClassifier"
    with pytest.raises(ConfigValueError, match="lacks: build it from detgn.config.get_classifier_cfg"):
        build_model(cfg)
    assert not os.listdir(tmp_path)  # nothing written by the refusals


@pytest.mark.parametrize(
    "opts",
    [
        ["MODEL.RESNETS.NORM", "BN"],
        ["MODEL.WEIGHT_STANDARDIZATION.BACKBONE", "True"],
        ["MODEL.RESNETS.NORM", "NaiveSyncBN"],
        ["MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.NUM_GROUPS", "32", "MODEL.RESNETS.WIDTH_PER_GROUP", "4"],
    ],
    ids=["BN", "GN+WS", "NaiveSyncBN", "ResNeXt-50-GN"],
)
def test_other_norms_and_resnext_train_a_step(opts):
    from detgn.config import get_classifier_cfg
    from detgn.modeling import build_model
    from detgn.solver import build_optimizer

    cfg = get_classifier_cfg()
    cfg.merge_from_file(SMALL)
    cfg.merge_from_list(["CLASSIFIER.NUM_CLASSES", "3"] + opts)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    opt = build_optimizer(cfg, model)
    batch = [{"image": torch.randint(0, 256, (3, 48, 48), dtype=torch.uint8), "label": i % 3} for i in range(4)]
    before = model.fc.weight.detach().clone()
    loss = model(batch)["loss_cls"]
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and not torch.equal(before, model.fc.weight)
    assert model.num_zero_init == (16 if "50" in opts else 8)
