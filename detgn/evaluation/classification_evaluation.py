"""Top-1 / top-5 accuracy of an image classifier, gathered across ranks."""

import logging
from typing import Dict, List

import torch

from detgn.utils import comm

from .evaluator import DatasetEvaluator

__all__ = ["ClassificationEvaluator"]


class ClassificationEvaluator(DatasetEvaluator):
    """process(inputs with "label", outputs = (N, C) logits); evaluate() -> {"classification": {"top1": %, "top5": %,
    "images": n}} on the main process (None elsewhere). top5 is reported only with at least 5 classes."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.reset()

    def reset(self):
        self._correct = {1: 0, 5: 0}
        self._count = 0

    def process(self, inputs: List[Dict], outputs: torch.Tensor):
        labels = torch.as_tensor([int(d["label"]) for d in inputs])
        ranked = outputs.float().cpu().topk(min(5, outputs.shape[1]), dim=1).indices
        hit = ranked == labels[:, None]
        self._correct[1] += int(hit[:, :1].any(dim=1).sum())
        self._correct[5] += int(hit[:, :5].any(dim=1).sum())
        self._count += len(inputs)

    def evaluate(self):
        parts = comm.gather((self._correct, self._count), dst=0)
        if not comm.is_main_process():
            return None
        n = sum(c for _, c in parts)
        if n == 0:
            logging.getLogger(__name__).warning("No image was evaluated")
            return {}
        result = {"top1": 100.0 * sum(p[1] for p, _ in parts) / n}
        if self.num_classes >= 5:
            result["top5"] = 100.0 * sum(p[5] for p, _ in parts) / n
        result["images"] = n
        return {"classification": result}
