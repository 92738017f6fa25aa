"""Specification of `prefixctl keys` and of `prefixctl serve`'s refusal to serve the network without keys."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from prefix_registry.traffic.api_keys import ApiKeyStore, hash_key


def test_a_key_is_printed_once_and_stored_only_as_its_hash(home: Path, cli) -> None:
    created = cli("keys", "create", "labeller", "--scopes", "predict,feedback", "--tasks", "sentiment", "--json")
    assert created.exit_code == 0, created.stderr
    body = created.json()
    assert body["name"] == "labeller" and body["key"].startswith("pfx_") and len(body["key"]) > 40
    assert body["scopes"] == ["predict", "feedback"] and body["tasks"] == ["sentiment"]
    engine = sa.create_engine(f"sqlite:///{home / 'api_keys.db'}")
    with engine.connect() as connection:
        stored = connection.execute(sa.text("SELECT * FROM api_keys")).mappings().all()
    engine.dispose()
    assert body["key"] not in str(stored) and stored[0]["key_hash"] == hash_key(body["key"])
    listed = cli("keys", "list", "--json")
    assert [k["name"] for k in listed.json()] == ["labeller"] and "key" not in listed.json()[0]
    assert body["key"] not in listed.stdout


def test_revoked_keys_no_longer_authenticate(home: Path, cli) -> None:
    key = cli("keys", "create", "app", "--json").json()["key"]
    revoked = cli("keys", "revoke", "app", "--json")
    assert revoked.exit_code == 0 and revoked.json()["active"] is False
    store = ApiKeyStore.from_settings()
    try:
        assert store.authenticate(key) is None and store.revoked_names() == {"app"}
    finally:
        store.close()


def test_key_mistakes_are_one_line_with_exit_2(home: Path, cli) -> None:
    cli("keys", "create", "app")
    for args, expected in (
        (("keys", "create", "app"), "already exists"),
        (("keys", "create", "other", "--scopes", "predict,root"), "expected scopes from predict, feedback, admin"),
        (("keys", "create", "../bad"), "invalid key name"),
        (("keys", "revoke", "nobody"), "no API key named 'nobody' (keys: app)"),
    ):
        result = cli(*args)
        assert result.exit_code == 2 and expected in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1


def test_serve_refuses_a_network_address_without_keys_unless_insecure(home: Path, cli) -> None:
    result = cli("serve", "--host", "0.0.0.0", "--port", "9")
    assert result.exit_code == 2 and "refusing to serve 0.0.0.0 without API keys" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_loopback_addresses_are_recognised() -> None:
    from prefix_registry.cli.serve import is_loopback

    assert [
        is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "localhost", "0.0.0.0", "10.0.0.1", "myhost")
    ] == [
        True,
        True,
        True,
        True,
        False,
        False,
        False,
    ]
