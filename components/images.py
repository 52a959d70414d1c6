"""The container image every component runs in: a compile-time setting, never built here.

The image is one users build from ``infra/`` (the ``mirec`` wheel with its pinned stack, so
``import mirec`` works and nothing is pip-installed at run time). Choose it when compiling:
``MIREC_COMPONENT_IMAGE=registry.example.com/mirec-pipeline@sha256:... mirec pipeline compile``
or ``mirec pipeline compile --image ...``; pin it by digest for a real cluster. The local runner
(``kfp.local.SubprocessRunner``) ignores the image and runs each step with this Python.
"""

from __future__ import annotations

import os
from typing import Final

IMAGE_ENV: Final = "MIREC_COMPONENT_IMAGE"
DEFAULT_IMAGE: Final = "mirec-pipeline:latest"


def component_image() -> str:
    """The image named by ``$MIREC_COMPONENT_IMAGE``, else ``DEFAULT_IMAGE``."""
    return os.environ.get(IMAGE_ENV, "").strip() or DEFAULT_IMAGE


# Read once, when the components are defined (decorated), i.e. at compile time.
BASE_IMAGE: Final = component_image()
