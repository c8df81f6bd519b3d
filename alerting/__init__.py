"""The alert publisher (`eventhouse alerts`): live and pipeline anomalies to ClickHouse, Kafka and a webhook.

Modules, one job each: `anomaly.py` the anomaly record and its forms (row, envelope, pipeline ids);
`state.py` the `alerts` table, the `alert_deliveries` log and the exactly-once protocol (its
docstring is the design); `kafka_channel.py` the `anomalies` topic and the read-back after a crash;
`webhook.py` the Slack-compatible body, the POST and the retry schedule; `pipeline.py` the pipeline
checks; `metrics.py` the Prometheus metrics; `publisher.py` the poll loop that ties them together.
"""
