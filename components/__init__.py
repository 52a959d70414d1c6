"""Kubeflow Pipelines v2 components: one lightweight component per file, thin adapters over mirec.

Every component imports ``mirec`` inside its body (the function source is what KFP ships), runs
in ``components.images.BASE_IMAGE`` (which has mirec installed, so nothing is pip-installed at
run time) and fails by raising, which KFP records as a failed task.
"""

from components.build_features import build_features
from components.build_index import build_index
from components.deploy import deploy
from components.evaluate import evaluate
from components.make_training_set import make_training_set
from components.train import train
from components.validate_events import validate_events
from components.validate_training_set import validate_training_set

__all__ = [
    "build_features",
    "build_index",
    "deploy",
    "evaluate",
    "make_training_set",
    "train",
    "validate_events",
    "validate_training_set",
]
