"""detgn: Mask R-CNN with Group Normalization, detectron2-compatible."""

from setuptools import find_packages, setup

setup(
    name="detgn",
    version="0.1.0",
    description="Detection and instance segmentation with Group Normalization (Mask R-CNN, FPN)",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(exclude=("tests", "tests.*", "configs", "tools")),
    install_requires=[
        # A plain range: on machines with a local wheel cache this resolves to it.
        "torch>=2.0",
        "torchvision>=0.15",
        "pycocotools>=2.0.6",
        "faster-coco-eval>=1.6",  # a COCOeval backend one key away (TEST.EVALUATOR_BACKEND), as pycocotools
        "fvcore>=0.1.5",
        "iopath>=0.1.9",
        "opencv-python-headless>=4.5",
        "numpy",
        "tqdm",
        "tabulate",
        "pyyaml",
        "hotcoco>=1.3,<2",  # the default COCOeval backend, LVIS evaluation, and PQ as panopticapi computes it
        "pillow",
        "orjson",  # COCO-size annotation files parse 3-4x faster (the standard json module is the fallback)
    ],
    extras_require={
        "dev": [
            "pytest>=7",
            "pytest-xdist>=3",  # the README's test command runs the suite on 2 workers
            "matplotlib",
            "tensorboard",
            "faster-coco-eval",
            "onnx>=1.15",
            "onnxruntime>=1.17",
            "onnxscript",
            "submitit>=1.5",
            "ruff>=0.6",
            "wandb>=0.17",  # the tracker tests run W&B offline and MLflow on a file store, without network
            "mlflow-skinny>=2.10",
        ],
        # tools/submit.py: SLURM jobs that requeue themselves (and its local executor)
        "slurm": ["submitit>=1.5"],
        # python3 quickstart.py demo: training curves as PNG (the demo installs only this extra; `test` installs dev)
        "demo": ["matplotlib"],
        # tools/export_model.py (onnx, onnxscript: PyTorch's ONNX exporter) and OnnxPredictor (onnxruntime)
        "export": ["onnx>=1.15", "onnxruntime>=1.17", "onnxscript"],
        "fast-eval": ["faster-coco-eval"],
        "plot": ["matplotlib"],
        "tensorboard": ["tensorboard"],
        # experiment trackers (engine/trackers.py): WANDB.ENABLED, MLFLOW.ENABLED
        "wandb": ["wandb>=0.17"],
        "mlflow": ["mlflow-skinny>=2.10"],
    },
)
