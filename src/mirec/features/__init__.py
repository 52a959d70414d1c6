"""Feature pipeline (edge package): Spark builds sequence features, Feast stores and serves them.

Modules: ``spark_session`` (a local-first SparkSession), ``sequences`` (the Spark transforms),
``build`` (the build step), ``repo`` (workdir layout and rendered ``feature_store.yaml``) and
``feast_io`` (the only module that talks to Feast). Import the submodules you need: this package
imports nothing heavy itself.
"""
