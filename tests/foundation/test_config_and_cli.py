"""Configuration errors name the bad key; every subcommand explains itself."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edge_agent.config import AgentConfig
from farmiq.config import ConfigError, load_config


def test_toml_plus_env_overrides(tmp_path):
    p = tmp_path / "agent.toml"
    p.write_text('device_id = "barn-7"\n[mqtt]\nhost = "broker.farm"\nport = 1883\n')
    cfg = load_config(
        AgentConfig,
        p,
        env_prefix="FARMIQ_AGENT",
        environ={"FARMIQ_AGENT__MQTT__PORT": "8883", "FARMIQ_AGENT__TAGS": '["layer", "north"]'},
    )
    assert cfg.mqtt.host == "broker.farm" and cfg.mqtt.port == 8883
    assert cfg.tags == ["layer", "north"]


def test_env_overrides_are_toml_scalars_and_a_misspelt_one_is_refused_by_name(tmp_path):
    p = tmp_path / "agent.toml"
    p.write_text('device_id = "barn-7"\n')
    cfg = load_config(
        AgentConfig,
        p,
        env_prefix="FARMIQ_AGENT",
        environ={"FARMIQ_AGENT__FARM_ID": '"north farm"', "FARMIQ_AGENT__API__PORT": "9000"},
    )
    assert cfg.farm_id == "north farm" and cfg.api.port == 9000
    with pytest.raises(ConfigError, match=r"mqtt_port: Extra inputs are not permitted"):
        load_config(
            AgentConfig, p, env_prefix="FARMIQ_AGENT", environ={"FARMIQ_AGENT__MQTT_PORT": "1"}
        )
    with pytest.raises(ConfigError, match=r"mqtt\.port: Input should be a valid integer"):
        load_config(
            AgentConfig, p, env_prefix="FARMIQ_AGENT", environ={"FARMIQ_AGENT__MQTT__PORT": "x"}
        )


@pytest.mark.parametrize(
    "body,key",
    [
        ('device_id = "a"\n[mqtt]\nport = "eighty"\n', "mqtt.port"),
        ('device_id = "a"\nunknown_key = 1\n', "unknown_key"),
        ("[mqtt]\nport = 1883\n", "device_id"),
        ('device_id = "bad/id"\n', "device_id"),
    ],
)
def test_invalid_config_names_the_key(tmp_path, body, key):
    p = tmp_path / "agent.toml"
    p.write_text(body)
    with pytest.raises(ConfigError) as err:
        load_config(AgentConfig, p, env_prefix="FARMIQ_AGENT", environ={})
    assert key in str(err.value)


def test_not_toml_is_a_clear_error(tmp_path):
    p = tmp_path / "agent.toml"
    p.write_text("device_id = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(AgentConfig, p, env_prefix="X", environ={})


def test_agent_refuses_bad_config_with_exit_2(tmp_path):
    p = tmp_path / "agent.toml"
    p.write_text('device_id = "a"\n[api]\nport = 99999\n')
    out = subprocess.run(
        [sys.executable, "-m", "farmiq", "agent", "run", "-c", str(p)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "api.port" in out.stderr


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["agent"],
        ["agent", "run"],
        ["control-plane", "serve"],
        ["bundle"],
        ["bundle", "verify"],
        ["bundle", "build"],
        ["demo"],
        ["provision"],
        ["mcu"],
    ],
)
def test_help_says_what_each_command_does(args):
    out = subprocess.run(
        [sys.executable, "-m", "farmiq", *args, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "usage: farmiq" in out.stdout
    assert len(out.stdout.splitlines()) > 3


def test_every_command_readme_lists_exists():
    """The README's command list (`farmiq bundle build|sign|...`) names real actions, including
    the ones the control plane adds to `bundle` and `provision`."""
    import argparse
    import re
    from pathlib import Path

    from farmiq.cli import build_parser

    def actions(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        for a in parser._actions:
            if isinstance(a, argparse._SubParsersAction):
                return dict(a.choices)
        return {}

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    listed = re.findall(r"^farmiq ([a-z-]+) ([a-z-]+(?:\|[a-z-]+)+)", readme, re.M)
    assert (
        "provision",
        "init-fleet|token|enroll|revoke|devices|mosquitto-config|api-key",
    ) in listed
    commands = actions(build_parser())
    for command, names in listed:
        assert set(names.split("|")) <= set(actions(commands[command])), (command, names)
    assert "export-triton" in actions(commands["control-plane"])
    assert "simulate" in actions(commands["fleet"])


def test_a_gateway_without_the_control_plane_gets_only_the_gateway_commands(monkeypatch):
    """Without the `control` extra's packages the cloud commands are not offered: a gateway
    has `provision enroll` and the bundle tools, not `export-triton` or `provision token`."""
    import argparse

    import control_plane.cli
    from farmiq.cli import build_parser

    monkeypatch.setattr(control_plane.cli, "REQUIRED_MODULES", ("farmiq_no_such_package",))

    def actions(parser: argparse.ArgumentParser) -> set[str]:
        for a in parser._actions:
            if isinstance(a, argparse._SubParsersAction):
                return set(a.choices)
        return set()

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert "control-plane" not in sub.choices and "demo" not in sub.choices
    assert actions(sub.choices["provision"]) == {"enroll"}
    assert "export-triton" not in actions(sub.choices["bundle"])
    assert {"build", "verify", "keygen"} <= actions(sub.choices["bundle"])
