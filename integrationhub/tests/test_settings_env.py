from pathlib import Path

from django.db import connection

from integrationhub.env import broker_config, database_config


def test_database_defaults_to_embedded_sqlite_with_wal_and_immediate_transactions(tmp_path: Path):
    # given no DATABASE_URL
    # when the database settings are built
    config = database_config(database_url="", var_dir=tmp_path)
    # then SQLite lives in var/ with WAL, a busy timeout and IMMEDIATE transactions
    assert config["ENGINE"] == "django.db.backends.sqlite3"
    assert config["NAME"] == str(tmp_path / "hub.sqlite3")
    assert config["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    assert "journal_mode=WAL" in config["OPTIONS"]["init_command"]
    assert "busy_timeout" in config["OPTIONS"]["init_command"]


def test_database_url_switches_to_postgresql(tmp_path: Path):
    # given a PostgreSQL URL
    config = database_config(database_url="postgres://hub:pw@db.example:5433/hubdb", var_dir=tmp_path)
    # then Django's PostgreSQL backend (psycopg 3) is used with persistent, health-checked connections
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert (config["HOST"], config["PORT"], config["NAME"], config["USER"]) == ("db.example", 5433, "hubdb", "hub")
    assert config["CONN_MAX_AGE"] == 60
    assert config["CONN_HEALTH_CHECKS"] is True


def test_broker_defaults_to_filesystem_transport_in_var(tmp_path: Path):
    url, options = broker_config(broker_url="", var_dir=tmp_path)
    assert url == "filesystem://"
    assert Path(options["data_folder_in"]).is_dir()
    assert options["data_folder_in"] == options["data_folder_out"]
    assert Path(options["control_folder"]).is_dir()


def test_redis_url_switches_the_broker(tmp_path: Path):
    url, options = broker_config(broker_url="redis://127.0.0.1:6379/0", var_dir=tmp_path)
    assert url == "redis://127.0.0.1:6379/0"
    assert "data_folder_in" not in options
    assert not (tmp_path / "broker").exists()


def test_the_live_connection_uses_the_configured_engine_settings(db):
    # given whichever database this suite runs on
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("PRAGMA journal_mode")
            # then the embedded default really runs in WAL mode
            assert cursor.fetchone()[0] == "wal"
        else:
            cursor.execute("SHOW server_version")
            # then PostgreSQL answers through psycopg 3
            assert connection.vendor == "postgresql"
            assert cursor.fetchone()[0]
            import psycopg

            assert isinstance(connection.connection, psycopg.Connection)
