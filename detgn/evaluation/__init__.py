from .coco_evaluation import COCOEvaluator, convert_to_coco_json, evaluate_predictions_on_coco, instances_to_coco_json
from .evaluator import DatasetEvaluator, DatasetEvaluators, inference_on_dataset

__all__ = [k for k in globals() if not k.startswith("_")]
