"""GX Data Docs (static HTML) for every validation run, in a file-backed site under ``docs_dir``.

This is GX's own supported path: an ephemeral (in-memory) context is configured with one
``SiteBuilder`` site over a ``TupleFilesystemStoreBackend`` (instead of GX's default temporary
site), and the checkpoint runs ``UpdateDataDocsAction`` for it. The page of a run is
``<docs_dir>/validations/<suite>/<run>/<time>/<source>-<asset>.html``; ``<docs_dir>/index.html``
lists the runs of that context.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

if TYPE_CHECKING:
    from great_expectations.data_context import AbstractDataContext

logger = logging.getLogger(__name__)

SITE_NAME = "mirec_docs"
ACTION_NAME = "update_data_docs"


def site_config(docs_dir: str | Path) -> dict[str, Any]:
    """The Data Docs site config for a local directory (GX ``SiteBuilder``)."""
    return {
        "class_name": "SiteBuilder",
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str(Path(docs_dir).resolve()),
        },
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }


def new_context(docs_dir: str | Path | None) -> AbstractDataContext:
    """A quiet in-memory GX context whose only Data Docs site is ``docs_dir`` (none for None)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    sites: dict[str, Any] = {}
    if docs_dir is not None:
        Path(docs_dir).mkdir(parents=True, exist_ok=True)
        sites[SITE_NAME] = site_config(docs_dir)
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites=sites,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def docs_actions(docs_dir: str | Path | None) -> list[Any]:
    """Checkpoint actions that render the run into the site (empty without ``docs_dir``)."""
    if docs_dir is None:
        return []
    from great_expectations.checkpoint import UpdateDataDocsAction

    return [UpdateDataDocsAction(name=ACTION_NAME, site_names=[SITE_NAME])]


def _url_to_path(url: str) -> str:
    parsed = urlparse(url)
    return unquote(parsed.path) if parsed.scheme == "file" else url


def docs_page(context: AbstractDataContext, result_identifier: Any) -> str | None:
    """Local path of the HTML page of one validation result, or None when it was not written."""
    if SITE_NAME not in context.list_data_docs_sites():
        return None
    urls = context.get_docs_sites_urls(
        resource_identifier=result_identifier, site_name=SITE_NAME, only_if_exists=True
    )
    url = urls[0].get("site_url") if urls else None
    if not url:
        logger.warning("no Data Docs page for %s", result_identifier)
        return None
    path = _url_to_path(url)
    return path if Path(path).exists() else None
