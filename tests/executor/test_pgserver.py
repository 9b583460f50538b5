"""With no server answering, dualshift starts its own from the local PostgreSQL binaries."""

from __future__ import annotations

import psycopg

from dualshift.executor.pgserver import fresh_database, server


def test_a_throwaway_cluster_starts_serves_and_goes_away() -> None:
    with server(throwaway=True) as admin:
        with fresh_database(admin) as dsn, psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT 1 + 1").fetchone()[0] == 2
        port = psycopg.conninfo.conninfo_to_dict(admin)["port"]
    try:
        psycopg.connect(admin, connect_timeout=2).close()
        stopped = False
    except psycopg.OperationalError:
        stopped = True
    assert stopped, f"the throwaway server on port {port} is still running"


def test_a_database_url_that_does_not_answer_is_an_error_not_a_fallback(monkeypatch) -> None:
    import socket

    import pytest

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once the probe is closed
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:s3cret@127.0.0.1:{port}/prod")
    with pytest.raises(RuntimeError, match=f"port={port}.*does not answer") as caught, server():
        pass
    assert "s3cret" not in str(caught.value)
