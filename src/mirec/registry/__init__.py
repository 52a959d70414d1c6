"""Model registry: numbered versions and the production / canary stages over BentoML's store.

Every registered bundle directory is imported whole into BentoML's model store as ONE model
named ``mirec_bundle`` (``store``); ``<root>/registry.json`` records the numbered versions, the
stages and the gate decisions (``state``: every change one atomic write under a file lock, so a
crash midway leaves the previous, complete file and the production model is never lost). The
stage rules live in ``stages``, the gate-decision log in ``gate_log``, the canary policy's
decisions and events in ``canary_log``.

Hand-over to serving: ``Registry(root).stage("production")`` (and ``"canary"``) give the
versions to serve; ``Registry(root).bundle_path(version)`` is the bundle directory inside the
store, and ``ModelVersion.tag`` is the BentoML tag (``bentoml.models.BentoModel(tag)``).
``BENTOML_HOME`` picks the store (``<root>/bentoml`` unless already set).
"""

from mirec.registry.canary_log import ArmEvidence, CanaryDecision, CanaryLog
from mirec.registry.gate_log import GateRecord, GateReport
from mirec.registry.registry import DEFAULT_ROOT, ROOT_ENV, Registry
from mirec.registry.stages import CANARY, PRODUCTION, STAGES, deploy_version
from mirec.registry.state import REGISTRY_FILE, REGISTRY_FORMAT
from mirec.registry.store import BUNDLE_DIR, METADATA_KEY, MODEL_NAME
from mirec.registry.versions import ModelVersion, config_hash

__all__ = [
    "BUNDLE_DIR",
    "CANARY",
    "DEFAULT_ROOT",
    "METADATA_KEY",
    "MODEL_NAME",
    "PRODUCTION",
    "REGISTRY_FILE",
    "REGISTRY_FORMAT",
    "ROOT_ENV",
    "STAGES",
    "ArmEvidence",
    "CanaryDecision",
    "CanaryLog",
    "GateRecord",
    "GateReport",
    "ModelVersion",
    "Registry",
    "config_hash",
    "deploy_version",
]
