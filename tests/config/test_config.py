"""Config parsing: typed sections, errors that name the key, environment overrides, the example."""

from __future__ import annotations

from pathlib import Path

import pytest

from accel_node.config import Config, load_config, parse_config, render_example
from accel_node.errors import ConfigError
from tests.support.daemons import REPO_ROOT

REPO = REPO_ROOT


def problems(data: dict[str, object], **environ: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="test", environ=environ)
    return info.value.problems


def test_defaults_are_valid_and_loopback() -> None:
    config = parse_config({}, source="test", environ={})
    assert config == Config()
    assert config.api.host == "127.0.0.1" and config.api.port == 0
    assert config.p2p.listen_addrs == ["/ip4/0.0.0.0/tcp/4011"]


def test_checked_in_example_is_the_rendered_one_and_loads() -> None:
    example = (REPO / "config.example.toml").read_text()
    assert example == render_example(), "run: accel-node config example > config.example.toml"
    assert load_config(REPO / "config.example.toml", environ={}) == Config()


def test_example_documents_every_key() -> None:
    example = render_example()
    for section, model in Config.model_fields.items():
        assert f"[{section}]" in example
        for key in model.annotation.model_fields:  # type: ignore[union-attr]
            assert f"\n{key} = " in example, f"[{section}] {key} is not documented"


def test_unknown_keys_and_sections_are_named() -> None:
    assert problems({"p2p": {"listen": []}}) == [("[p2p] listen", "unknown key")]
    assert problems({"network": {}}) == [("[network]", "unknown section")]


def test_wrong_types_are_named_and_not_coerced() -> None:
    found = dict(problems({"api": {"port": "8080"}, "p2p": {"mdns": 1}, "node": {"shutdown_grace_s": "5"}}))
    assert set(found) == {"[api] port", "[p2p] mdns", "[node] shutdown_grace_s"}


def test_ints_are_accepted_for_floats() -> None:
    assert (
        parse_config({"node": {"shutdown_grace_s": 3}}, source="t", environ={}).node.shutdown_grace_s == 3.0
    )


def test_ranges_are_enforced() -> None:
    assert problems({"api": {"port": 70000}})[0][0] == "[api] port"
    assert problems({"node": {"shutdown_grace_s": 0}})[0][0] == "[node] shutdown_grace_s"


def test_bad_multiaddrs_are_named_with_their_index() -> None:
    ((key, message),) = problems({"p2p": {"listen_addrs": ["/ip4/127.0.0.1/tcp/0", "/ip4/1.2.3.4/udp/5"]}})
    assert key == "[p2p] listen_addrs" and "item 1" in message
    ((key, message),) = problems({"p2p": {"bootstrap": ["/ip4/127.0.0.1/tcp/4011"]}})
    assert key == "[p2p] bootstrap" and "/p2p/<peer-id>" in message


def test_non_loopback_api_needs_allow_remote() -> None:
    ((key, message),) = problems({"api": {"host": "0.0.0.0"}})
    assert key == "[api] host" and "allow_remote" in message
    config = parse_config({"api": {"host": "0.0.0.0", "allow_remote": True}}, source="t", environ={})
    assert config.api.host == "0.0.0.0"


def test_environment_overrides_are_parsed_as_toml() -> None:
    config = parse_config(
        {"api": {"port": 1234}},
        source="t",
        environ={
            "ACCEL_NODE_API_PORT": "8080",
            "ACCEL_NODE_P2P_MDNS": "false",
            "ACCEL_NODE_P2P_LISTEN_ADDRS": '["/ip4/127.0.0.1/tcp/0"]',
            "ACCEL_NODE_NODE_NAME": "true",  # a string key takes the raw text
            "ACCEL_NODE_HOME": "/elsewhere",  # not a config section
        },
    )
    assert config.api.port == 8080
    assert config.p2p.mdns is False
    assert config.p2p.listen_addrs == ["/ip4/127.0.0.1/tcp/0"]
    assert config.node.name == "true"


def test_bad_environment_overrides_name_the_variable_or_key() -> None:
    assert problems({}, ACCEL_NODE_API_PROT="1") == [
        ("ACCEL_NODE_API_PROT", "unknown key 'prot' in section [api]")
    ]
    assert problems({}, ACCEL_NODE_API_PORT="eighty")[0][0] == "[api] port"


def test_malformed_and_oversized_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[node\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, environ={})
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, environ={})
    bad.write_text("# " + "x" * (1 << 20) + "\n")
    with pytest.raises(ConfigError, match="larger than"):
        load_config(bad, environ={})


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(tmp_path / "absent.toml", environ={}) == Config()


def test_bulk_limits_are_bounded_and_shares_fit_their_totals() -> None:
    config = parse_config({"bulk": {"channels_per_peer": 4, "channels": 16}}, source="test", environ={})
    assert (config.bulk.channels_per_peer, config.bulk.channels) == (4, 16)
    found = problems({"bulk": {"channels_per_peer": 64, "channels": 16, "pending_handshakes": 4}})
    assert [key for key, _ in found] == ["[bulk] pending_handshakes", "[bulk] channels"]
    assert problems({"bulk": {"handshake_timeout_s": 0}})[0][0] == "[bulk] handshake_timeout_s"
