"""Mutation check of the tests that guard the most-broken code paths: break the code each one guards, run that
test, expect it to fail.

Each mutation is one literal text replacement in one source file; the file is restored afterwards
(also on Ctrl-C). A mutation whose test still passes is a test that cannot fail: listed as SURVIVED.

    python benchmarks/mutation_check.py            # all mutations (~3 min on 2 cores)
    python benchmarks/mutation_check.py --list
"""

import argparse
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (name, file, text, replacement, test node)
MUTATIONS = [
    (
        "chunked mask pasting: wrong chunk offsets",
        "detgn/layers/mask_ops.py",
        "out[(inds,) + spatial] = chunk",
        "out[(inds.flip(0),) + spatial] = chunk",
        "tests/modeling/test_components.py::test_paste_chunked_full_image_path_equals_per_box_path",
    ),
    (
        "Detectron GN scale read as bias",
        "detgn/checkpoint/formats.py",
        '{"_gn_s": "norm.weight", "_gn_b": "norm.bias",',
        '{"_gn_s": "norm.bias", "_gn_b": "norm.weight",',
        "tests/checkpoint/test_formats.py::test_real_detectron_blob_names_land_on_the_right_parameters",
    ),
    (
        "per-parameter norm clipping clips the joint norm",
        "detgn/solver/build.py",
        "torch.nn.utils.clip_grad_norm_(p, clip_value, norm_type)",
        "torch.nn.utils.clip_grad_norm_(params, clip_value, norm_type)",
        "tests/solver/test_clip_gradients.py",
    ),
    (
        "GIoU box loss silently stays smooth L1",
        "detgn/modeling/roi_heads/fast_rcnn.py",
        'if self.box_reg_loss_type == "smooth_l1":',
        "if True:",
        "tests/modeling/test_options.py::test_giou_losses_replace_smooth_l1",
    ),
    (
        "FPN avg fuse sums",
        "detgn/modeling/backbone/fpn.py",
        "prev = prev / 2",
        "prev = prev",
        "tests/modeling/test_options.py::test_fpn_avg_fuse_halves_the_merge",
    ),
    (
        "RES5_DILATION ignored",
        "detgn/modeling/backbone/resnet.py",
        "dilation = r.RES5_DILATION if idx == 3 else 1",
        "dilation = 1",
        "tests/modeling/test_options.py::test_res5_dilation_keeps_stride_16",
    ),
    (
        "EVAL_PERIOD never evaluates during training",
        "detgn/engine/hooks.py",
        "if self._period > 0 and nxt % self._period == 0 and nxt != self.trainer.max_iter:",
        "if False:",
        "tests/modeling/test_options.py::test_eval_period_evaluates_during_training",
    ),
    (
        "INPUT.CROP ignored",
        "detgn/data/transforms.py",
        "augs.insert(0, RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))",
        "pass",
        "tests/modeling/test_options.py::test_input_crop_gives_crops_with_boxes_inside",
    ),
    (
        "augmentation inverse wrong (resize)",
        "detgn/data/transforms.py",
        "return ResizeTransform(self.new_h, self.new_w, self.h, self.w)",
        "return ResizeTransform(self.new_h, self.new_w, self.w, self.h)",
        "tests/data/test_transforms_mapper.py::test_transforms_are_fvcores_and_invert",
    ),
    (
        "train_net hides every ValueError as exit 2",
        "tools/train_net.py",
        "    except UserInputError as e:",
        "    except (UserInputError, ValueError) as e:",
        "tests/jobs/test_error_exit.py::test_a_bug_keeps_its_traceback",
    ),
    (
        "mask head NORM ignored (no GN in the mask head)",
        "detgn/modeling/roi_heads/mask_head.py",
        "conv_norm=norm_from_cfg(h.NORM, cfg)",
        'conv_norm=""',
        "tests/config/test_all_configs.py",
    ),
    (
        "AMP step skips the optimizer",
        "detgn/engine/train_loop.py",
        "self.optimizer.step()",
        "pass",
        "tests/engine/test_amp_trainer.py",
    ),
]


def run_one(name, path, text, repl, node, python):
    full = os.path.join(REPO, path)
    original = open(full).read()
    if original.count(text) < 1:
        return "NOT APPLIED (text not found)"
    try:
        with open(full, "w") as f:
            f.write(original.replace(text, repl))
        r = subprocess.run(
            [python, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", node],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=900,
        )
    finally:
        with open(full, "w") as f:
            f.write(original)
    return "killed" if r.returncode == 1 else ("SURVIVED" if r.returncode == 0 else f"error rc={r.returncode}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    ap.add_argument("--only", default=None, help="run only the mutations whose name contains this text")
    args = ap.parse_args()
    if args.list:
        for m in MUTATIONS:
            print(f"{m[0]}: {m[1]} -> {m[4]}")
        return 0
    survived = 0
    chosen = [m for m in MUTATIONS if args.only is None or args.only in m[0]]
    for name, path, text, repl, node in chosen:
        t = time.time()
        res = run_one(name, path, text, repl, node, sys.executable)
        survived += res != "killed"
        print(f"{res:10s} {time.time() - t:5.0f}s  {name}  [{node}]", flush=True)
    print(f"{len(chosen) - survived}/{len(chosen)} mutations killed")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
