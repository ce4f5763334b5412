"""PROPOSAL_GENERATOR_REGISTRY and build_proposal_generator."""

from fvcore.common.registry import Registry

__all__ = ["PROPOSAL_GENERATOR_REGISTRY", "build_proposal_generator"]

PROPOSAL_GENERATOR_REGISTRY = Registry("PROPOSAL_GENERATOR")
PROPOSAL_GENERATOR_REGISTRY.__doc__ = """
Registry for proposal generators. A registered class is called as `cls(cfg, input_shape)`
with input_shape a dict {feature name: ShapeSpec}. Its forward is
`forward(images: ImageList, features: Dict[str, Tensor], gt_instances: Optional[List[Instances]])`
and returns `(proposals: List[Instances] with proposal_boxes and objectness_logits, losses: dict)`.
"""


def build_proposal_generator(cfg, input_shape):
    name = cfg.MODEL.PROPOSAL_GENERATOR.NAME
    if name == "PrecomputedProposals":
        from detgn.config import UnsupportedConfigError

        raise UnsupportedConfigError(
            "MODEL.PROPOSAL_GENERATOR.NAME = 'PrecomputedProposals': detgn does not implement "
            "precomputed proposals; set it back to its default 'RPN'"
        )
    return PROPOSAL_GENERATOR_REGISTRY.get(name)(cfg, input_shape)
