from __future__ import annotations

from pathlib import Path

import pytest

from settings import REPO_ROOT, ConfigError, freshness_hours, load_settings, stack_env


def test_defaults_point_at_the_embedded_stack():
    settings = load_settings({})
    assert settings.clickhouse.host == "127.0.0.1" and settings.clickhouse.port == 18123
    assert settings.clickhouse.database == "eventhouse" and settings.clickhouse.secure is False
    assert settings.kafka.bootstrap == "127.0.0.1:19092" and settings.kafka.port == 19092
    assert settings.home == REPO_ROOT / ".eventhouse"
    assert settings.clickhouse.client_kwargs()["interface"] == "http"
    assert settings.kafka.session_timeout_ms == 6000


def test_a_real_cluster_is_configuration_only(tmp_path: Path):
    settings = load_settings(
        {
            "EVENTHOUSE_CLICKHOUSE_HOST": "ch.example.com",
            "EVENTHOUSE_CLICKHOUSE_SECURE": "true",
            "EVENTHOUSE_CLICKHOUSE_USER": "loader",
            "EVENTHOUSE_CLICKHOUSE_PASSWORD": "secret",
            "EVENTHOUSE_KAFKA_BOOTSTRAP": "k1:9093,k2:9093",
            "EVENTHOUSE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "EVENTHOUSE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "EVENTHOUSE_KAFKA_SASL_USERNAME": "u",
            "EVENTHOUSE_KAFKA_SASL_PASSWORD": "p",
            "EVENTHOUSE_KAFKA_SESSION_TIMEOUT_MS": "45000",
            "EVENTHOUSE_HOME": str(tmp_path),
        }
    )
    assert settings.kafka.session_timeout_ms == 45000
    assert settings.clickhouse.port == 8443 and settings.clickhouse.client_kwargs()["interface"] == "https"
    assert not settings.clickhouse.is_embedded_default
    kafka = settings.kafka.client_kwargs()
    assert kafka["bootstrap_servers"] == ["k1:9093", "k2:9093"]
    assert kafka["sasl_mechanism"] == "SCRAM-SHA-512" and kafka["security_protocol"] == "SASL_SSL"
    assert settings.home == tmp_path


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"EVENTHOUSE_CLICKHOUSE_PORT": "http"}, "EVENTHOUSE_CLICKHOUSE_PORT='http' is not an integer"),
        ({"EVENTHOUSE_CLICKHOUSE_SECURE": "maybe"}, "EVENTHOUSE_CLICKHOUSE_SECURE='maybe' is not a boolean"),
        ({"EVENTHOUSE_KAFKA_BOOTSTRAP": "localhost"}, "'localhost' is not host:port"),
        ({"EVENTHOUSE_KAFKA_SESSION_TIMEOUT_MS": "soon"}, "SESSION_TIMEOUT_MS='soon' is not an integer"),
        ({"EVENTHOUSE_KAFKA_SESSION_TIMEOUT_MS": "0"}, "EVENTHOUSE_KAFKA_SESSION_TIMEOUT_MS=0 must be above 0"),
        # Kafka security for a real cluster: a wrong or incomplete setting is named before any connection
        ({"EVENTHOUSE_KAFKA_SECURITY_PROTOCOL": "TLS"}, "EVENTHOUSE_KAFKA_SECURITY_PROTOCOL='TLS' is not one of"),
        (
            {"EVENTHOUSE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "EVENTHOUSE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-1"},
            "EVENTHOUSE_KAFKA_SASL_MECHANISM='SCRAM-SHA-1' is not one of PLAIN, SCRAM-SHA-256",
        ),
        (
            {"EVENTHOUSE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
            "EVENTHOUSE_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs EVENTHOUSE_KAFKA_SASL_MECHANISM",
        ),
        (
            {"EVENTHOUSE_KAFKA_SASL_MECHANISM": "PLAIN"},
            "EVENTHOUSE_KAFKA_SASL_MECHANISM=PLAIN needs EVENTHOUSE_KAFKA_SECURITY_PROTOCOL SASL_SSL or SASL_PLAINTEXT",
        ),
        (
            {"EVENTHOUSE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "EVENTHOUSE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256"},
            "EVENTHOUSE_KAFKA_SASL_MECHANISM=SCRAM-SHA-256 needs EVENTHOUSE_KAFKA_SASL_USERNAME and _PASSWORD",
        ),
    ],
)
def test_bad_values_are_named(env, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_settings(env)


def test_stack_env_round_trips(tmp_path: Path):
    settings = load_settings(stack_env(1234, 5678, tmp_path))
    assert (settings.clickhouse.port, settings.kafka.port, settings.home) == (1234, 5678, tmp_path)


def _dbt_endpoint(target: str, env: dict[str, str]) -> dict:
    """profiles.yml's target rendered by dbt's own profile renderer under `env`."""
    from argparse import Namespace

    from dbt.config.profile import read_profile
    from dbt.config.renderer import ProfileRenderer
    from dbt.flags import set_from_args
    from dbt_common.context import set_invocation_context

    set_invocation_context(env)
    set_from_args(Namespace(), None)
    output = ProfileRenderer({}).render_data(read_profile(str(REPO_ROOT))["eventhouse"]["outputs"][target])
    return {key: output[key] for key in ("host", "port", "user", "schema", "secure")}


@pytest.mark.parametrize("target", ["embedded", "prod"])
@pytest.mark.parametrize(
    "env",
    [
        {},
        {"EVENTHOUSE_CLICKHOUSE_SECURE": "yes", "EVENTHOUSE_CLICKHOUSE_HOST": "ch.example.com"},
        {"EVENTHOUSE_CLICKHOUSE_SECURE": "true", "EVENTHOUSE_CLICKHOUSE_PORT": "9440"},
        {"EVENTHOUSE_CLICKHOUSE_SECURE": "off", "EVENTHOUSE_CLICKHOUSE_USER": "dbt"},
        {"EVENTHOUSE_CLICKHOUSE_PORT": "28123", "EVENTHOUSE_CLICKHOUSE_DATABASE": "analytics"},
    ],
)
def test_the_dbt_profile_and_the_python_settings_name_the_same_endpoint(target, env):
    ch = load_settings(env).clickhouse
    python_side = {"host": ch.host, "port": ch.port, "user": ch.user, "schema": ch.database, "secure": ch.secure}
    assert _dbt_endpoint(target, env) == python_side


def test_with_no_variables_both_name_the_embedded_server_over_http():
    assert _dbt_endpoint("prod", {}) == {
        "host": "127.0.0.1",
        "port": 18123,
        "user": "default",
        "schema": "eventhouse",
        "secure": False,
    }
    assert _dbt_endpoint("prod", {"EVENTHOUSE_CLICKHOUSE_SECURE": "1"})["port"] == 8443


@pytest.mark.parametrize("env", [{}, {"EVENTHOUSE_FRESHNESS_HOURS": "5"}, {"EVENTHOUSE_FRESHNESS_HOURS": "1.5"}])
def test_dbt_source_freshness_is_the_dagster_freshness_threshold(env):
    """dbt's `warn_after` on the raw sources renders to settings.freshness_hours for the same environment."""
    import jinja2
    import yaml

    sources = yaml.safe_load((REPO_ROOT / "models" / "staging" / "raw" / "_raw__sources.yml").read_text())
    warn_after = sources["sources"][0]["freshness"]["warn_after"]
    template = jinja2.Environment().from_string(warn_after["count"])
    minutes = int(template.render(env_var=lambda name, default=None: env.get(name, default)))
    assert warn_after["period"] == "minute"
    assert minutes == freshness_hours(env) * 60


OUR_PACKAGES = ("eventhouse", "settings", "stack", "ingestion", "orchestration", "alerting")


def _python_files(package: str) -> list[Path]:
    return sorted((REPO_ROOT / package).rglob("*.py"))


def test_settings_is_a_leaf_that_imports_nothing_of_ours():
    import ast

    imported: set[str] = set()
    for path in _python_files("settings"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
    assert imported, "the settings package imports at least the standard library"
    assert imported.isdisjoint(OUR_PACKAGES), f"settings imports {sorted(imported & set(OUR_PACKAGES))}"


def _reads_of_eventhouse_variables(path: Path) -> list[str]:
    """`os.environ.get("EVENTHOUSE_X")`, `os.environ["EVENTHOUSE_X"]` and `os.getenv("EVENTHOUSE_X")` in one file."""
    import ast

    def is_os_environ(node: ast.AST) -> bool:
        return (
            isinstance(node, ast.Attribute)
            and node.attr == "environ"
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        )

    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        name = None
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            if isinstance(func, ast.Attribute) and (
                (func.attr == "get" and is_os_environ(func.value))
                or (func.attr == "getenv" and isinstance(func.value, ast.Name) and func.value.id == "os")
            ):
                name = node.args[0].value
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Load)
            and is_os_environ(node.value)
            and isinstance(node.slice, ast.Constant)
        ):
            name = node.slice.value
        if isinstance(name, str) and name.startswith("EVENTHOUSE_"):
            found.append(f"{path}:{node.lineno} reads {name}")
    return found


def test_the_detector_finds_a_read_of_an_eventhouse_variable(tmp_path):
    # the check below must be able to fail: a file that reads a variable is reported
    sample = tmp_path / "reads.py"
    sample.write_text('import os\nA = os.environ.get("EVENTHOUSE_X")\nB = os.environ["EVENTHOUSE_Y"]\n')
    assert [line.split(" reads ")[1] for line in _reads_of_eventhouse_variables(sample)] == [
        "EVENTHOUSE_X",
        "EVENTHOUSE_Y",
    ]


def test_only_the_settings_package_reads_eventhouse_variables():
    reads = [
        read
        for package in OUR_PACKAGES
        if package != "settings"
        for path in _python_files(package)
        for read in _reads_of_eventhouse_variables(path)
    ]
    assert reads == []


def test_insert_time_tables_keep_the_raw_tables_deduplication_window():
    """The targets of the raw tables' materialized views drop a retried loader batch only while its
    token is within their window (macros/insert_time_tables.sql): the same window as the raw tables'."""
    import yaml

    from ingestion.raw_tables import DEDUP_WINDOW

    project = yaml.safe_load((REPO_ROOT / "dbt_project.yml").read_text())
    assert project["vars"]["insert_deduplication_window"] == DEDUP_WINDOW
