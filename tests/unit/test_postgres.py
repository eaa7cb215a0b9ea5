"""runtime/postgres.py: every connection notices a silent peer, and a malformed URL is refused
without repeating it (it carries the password)."""

from __future__ import annotations

import pytest

from runtime.postgres import PostgresError, connect

PASSWORD = "s3cret-Pa55word"


def test_every_connection_has_keepalives_and_a_user_timeout(postgres_url: str) -> None:
    # The records writer, the migrations and the readers open theirs with connect() too: a
    # network partition must not hold the writer thread for TCP's quarter of an hour.
    conn = connect(postgres_url)
    try:
        params = conn.info.get_parameters()
        assert params.get("keepalives") == "1"
        assert params.get("tcp_user_timeout") == "10000"
    finally:
        conn.close()


def test_a_malformed_url_is_refused_without_quoting_it() -> None:
    with pytest.raises(PostgresError) as caught:
        connect(f"postgresql://postgres:{PASSWORD}@[broken/db")
    assert "not a valid connection string" in str(caught.value)
    assert PASSWORD not in str(caught.value)
