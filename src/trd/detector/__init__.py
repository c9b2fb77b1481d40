"""The deployable detector: TRDModel + Scorer in one eval-mode module, its model file, and what runs it.

`detector` holds :class:`Detector` (what ``trd test``/``predict`` run and ``trd export`` writes to
ONNX), ``model.pt`` save/load and the torch inference engine; `counterfactual` the input surgery of
modality attribution (``--explain``); `passes` batched inference over a dataset (bad samples
reported, not fatal).
"""

from .detector import (MODALITY_INPUTS, Detector, TorchEngine, load_detector, require_good_inputs,
                       save_detector)

__all__ = ["MODALITY_INPUTS", "Detector", "TorchEngine", "load_detector", "require_good_inputs", "save_detector"]
