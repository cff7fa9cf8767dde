"""The server's connection options and the per-client key of the concurrency limit."""

from __future__ import annotations

import pytest

from server.limits import _peer_host, server_options
from server.settings import Settings, validate


def test_server_options_carry_keepalive_and_connection_age() -> None:
    opts = dict(server_options(Settings(keepalive_seconds=30, max_connection_age_seconds=600,
                                        max_connection_age_grace_seconds=2.5)))
    assert opts["grpc.keepalive_time_ms"] == 30_000
    assert opts["grpc.max_connection_age_ms"] == 600_000
    assert opts["grpc.max_connection_age_grace_ms"] == 2_500
    assert opts["grpc.max_receive_message_length"] == Settings().max_message_bytes
    assert "grpc.max_connection_age_ms" not in dict(server_options(Settings(max_connection_age_seconds=0)))


def test_bad_bounds_are_refused() -> None:
    for bad in (dict(max_prompt_chars=0), dict(max_client_rpcs=0), dict(max_watch_streams=0),
                dict(max_queued_forgets=0), dict(keepalive_seconds=0),
                dict(max_connection_age_grace_seconds=0)):
        with pytest.raises(ValueError):
            validate(Settings(**bad))


def test_clients_are_told_apart_by_address_not_port() -> None:
    assert _peer_host("ipv4:10.0.0.7:51234") == "ipv4:10.0.0.7"
    assert _peer_host("ipv6:[::1]:51234") == "ipv6:[::1]"
    assert _peer_host("unix:/tmp/sock") == "unix:/tmp/sock"


def test_plaintext_is_refused_off_loopback_unless_insecure(tmp_path) -> None:
    from server.settings import SettingsError, is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("lethe.internal")
    with pytest.raises(SettingsError, match="without TLS"):
        validate(Settings(host="0.0.0.0"))
    validate(Settings(host="0.0.0.0", insecure=True))
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("x")
    validate(Settings(host="0.0.0.0", tls_cert=cert, tls_key=key))
    with pytest.raises(SettingsError, match="go together"):
        validate(Settings(tls_cert=cert))
    with pytest.raises(SettingsError, match="does not exist"):
        validate(Settings(tls_cert=cert, tls_key=tmp_path / "missing.pem"))


def test_client_commands_do_not_check_the_servers_settings() -> None:
    from server.settings import load_settings

    assert load_settings(None, {"LETHE_HOST": "0.0.0.0"}, check=False).host == "0.0.0.0"
    with pytest.raises(ValueError, match="without TLS"):
        load_settings(None, {"LETHE_HOST": "0.0.0.0"})


def test_connection_age_grace_is_a_setting() -> None:
    import argparse

    from server.settings import add_serve_arguments, load_settings

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    flag = parser.parse_args(["--max-connection-age-grace-seconds", "2"])
    assert load_settings(flag, {"LETHE_MAX_CONNECTION_AGE_GRACE_SECONDS": "1.5"}).max_connection_age_grace_seconds == 2
    assert load_settings(None, {"LETHE_MAX_CONNECTION_AGE_GRACE_SECONDS": "1.5"}).max_connection_age_grace_seconds == 1.5
    assert load_settings(None, {}).max_connection_age_grace_seconds == 300  # five minutes, as before
