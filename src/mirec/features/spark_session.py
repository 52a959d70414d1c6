"""A local-first SparkSession: UTC everywhere, TIMESTAMP_MICROS parquet, loopback binding."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)

MASTER_ENV = "MIREC_SPARK_MASTER"
DRIVER_MEMORY_ENV = "MIREC_SPARK_DRIVER_MEMORY"
DEFAULT_MASTER = "local[*]"
DEFAULT_DRIVER_MEMORY = "4g"

# Settings every mirec Spark job runs with (see the feature pipeline notes in feature_repo/).
BASE_CONF: Mapping[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    # Coalesces small shuffle partitions (the feature build also sets spark.sql.shuffle.partitions
    # from its input size: AQE does not coalesce a cached frame's partitions).
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.adaptive.coalescePartitions.enabled": "true",
    # partitionBy with a few values writes without sorting the rows first
    "spark.sql.maxConcurrentOutputFileWriters": "4",
}
LOCAL_CONF: Mapping[str, str] = {
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
}


def get_spark(
    master: str | None = None,
    *,
    app_name: str = "mirec-features",
    driver_memory: str | None = None,
    conf: Mapping[str, str] | None = None,
) -> SparkSession:
    """Create (or reuse) the process's SparkSession with mirec's settings.

    Args:
        master: Spark master URL; default ``$MIREC_SPARK_MASTER`` or ``local[*]``.
        app_name: the application name.
        driver_memory: JVM heap of the driver (only effective when the JVM starts here);
            default ``$MIREC_SPARK_DRIVER_MEMORY`` or 4g.
        conf: extra Spark settings; they override the defaults.

    Returns:
        The session. A local master binds to 127.0.0.1 only.
    """
    from pyspark.sql import SparkSession

    master = master or os.environ.get(MASTER_ENV) or DEFAULT_MASTER
    settings = dict(BASE_CONF)
    settings["spark.driver.memory"] = (
        driver_memory or os.environ.get(DRIVER_MEMORY_ENV) or DEFAULT_DRIVER_MEMORY
    )
    if master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        settings.update(LOCAL_CONF)
    settings.update(conf or {})
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    logger.info("Spark %s on %s", spark.version, master)
    return spark
