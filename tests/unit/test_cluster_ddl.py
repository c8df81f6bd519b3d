"""ingestion/cluster_ddl.py: the loader's statements for a cluster, and nothing else rewritten."""

import pytest

from ingestion.cluster_ddl import for_cluster


def test_one_server_keeps_the_statement():
    statement = "CREATE TABLE IF NOT EXISTS `db`.`t` (a UInt8) ENGINE = ReplacingMergeTree ORDER BY a"
    assert for_cluster(statement, None) == for_cluster(statement, "") == statement


def test_a_cluster_gets_on_cluster_replicated_engines_and_replicated_dedup():
    statement = (
        "CREATE TABLE IF NOT EXISTS `db`.`t` (a UInt8, v UInt64) ENGINE = ReplacingMergeTree(v) ORDER BY a "
        "SETTINGS non_replicated_deduplication_window = 10"
    )
    assert for_cluster(statement, "c1") == (
        "CREATE TABLE IF NOT EXISTS `db`.`t` ON CLUSTER `c1` (a UInt8, v UInt64) "
        "ENGINE = ReplicatedReplacingMergeTree(v) ORDER BY a SETTINGS replicated_deduplication_window = 10"
    )
    assert for_cluster("ALTER TABLE `db`.`t` MODIFY TTL x", "c1") == "ALTER TABLE `db`.`t` ON CLUSTER `c1` MODIFY TTL x"
    # an engine already replicated is left as it is
    replicated = "CREATE TABLE IF NOT EXISTS t (a UInt8) ENGINE = ReplicatedMergeTree ORDER BY a"
    assert "ReplicatedReplicated" not in for_cluster(replicated, "c1")
    assert for_cluster("CREATE DATABASE IF NOT EXISTS `db`", "we`ird") == (
        "CREATE DATABASE IF NOT EXISTS `db` ON CLUSTER `we\\`ird`"
    )


def test_a_statement_without_a_cluster_form_is_refused():
    with pytest.raises(ValueError, match="no cluster form for: INSERT INTO t"):
        for_cluster("INSERT INTO t VALUES (1)", "c1")
