"""What to explain: the one home of the targets vocabulary.

- `classes`: class ids (`None` for top-1, ints, one or several per image), labels -> ids, the
  single-unit rule, target callables and their checks;
- `kinds`: target objects with per-image data (`Classes`, `TopK`, `Segmentation`, `Box`,
  `Regression`, `Function`);
- `resolve`: what an explain call makes of its `targets` argument.
"""

from keras_gradcam.targets.classes import (
    INVALID,
    PAD,
    TOP1,
    Targets,
    call_target,
    check_score_count,
    check_scores_finite,
    class_ids,
    class_scores,
    is_single_unit,
    label_ids,
    label_ids_in_graph,
    probabilities,
    select_scores,
    two_class,
    unit_sign,
)
from keras_gradcam.targets.kinds import (
    FROM_DATASET,
    Box,
    Classes,
    Function,
    Regression,
    Segmentation,
    Target,
    TopK,
    anchor_decoder,
    box_iou,
)
from keras_gradcam.targets.resolve import Resolved, resolve

__all__ = [
    "FROM_DATASET", "INVALID", "PAD", "TOP1", "Box", "Classes", "Function", "Regression",
    "Resolved", "Segmentation", "Target", "Targets", "TopK", "anchor_decoder", "box_iou",
    "call_target", "check_score_count", "check_scores_finite", "class_ids", "class_scores",
    "is_single_unit", "label_ids", "label_ids_in_graph", "probabilities", "resolve",
    "select_scores", "two_class", "unit_sign",
]
