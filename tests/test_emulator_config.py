"""EmulatorConfig is the one place the emulator's options are written: every field (but the
test hooks) is a `jobrunner emulator` option whose value reaches the config, and the config
and the command refuse the same out-of-range values."""

from __future__ import annotations

import json
import uuid
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from jobrunner.emulator import server
from jobrunner.emulator.command import emulator as emulator_command
from jobrunner.emulator.config import UNSET, EmulatorConfig, Option, options

# Fields a test sets in code and the command line has no use for.
NOT_ON_THE_COMMAND_LINE = {"clock", "home_division_id", "save_interval_s"}


def test_every_field_but_the_test_hooks_is_an_option_of_the_command() -> None:
    params = {p.name for p in emulator_command.params}
    names = {f.name for f in fields(EmulatorConfig)}
    assert names - params == NOT_ON_THE_COMMAND_LINE
    assert params - names == set()
    flags = [opt.flag for _, opt, _ in options()]
    assert len(flags) == len(set(flags))


def _sample(name: str, opt: Option, default: Any, tmp_path: Path) -> tuple[list[str], Any]:
    """Command-line words giving this option a value other than its default, and the value
    the config must then hold."""
    if name == "org":
        org = {"roles": [{"id": "a0000000-0000-4000-8000-00000000000f", "name": "Agent"}]}
        path = tmp_path / "org.json"
        path.write_text(json.dumps(org), encoding="utf-8")
        return [opt.flag, str(path)], org
    if name == "existing_users":
        path = tmp_path / "people.csv"
        path.write_text("name,email\nAda,ada@example.com\n", encoding="utf-8")
        return [opt.flag, str(path)], [{"name": "Ada", "email": "ada@example.com"}]
    if name == "divisions":
        return [opt.flag, "Sales=5a1e5000-0000-4000-8000-000000000001"], {
            "Sales": "5a1e5000-0000-4000-8000-000000000001"
        }
    if name == "refused_permissions":
        return [opt.flag, "a:b:c", opt.flag, "d:e:f@x"], {"a:b:c", "d:e:f@x"}
    if name == "extension_pools":
        return [opt.flag, "1000-1999", opt.flag, "20-29"], ["1000-1999", "20-29"]
    if name == "existing_emails":
        return [opt.flag, "a@example.com", opt.flag, "b@example.com"], [
            "a@example.com",
            "b@example.com",
        ]
    if opt.kind == "bool":
        return [opt.flag if not default else f"--no-{opt.flag[2:]}"], not default
    if opt.kind == "choice":
        value = next(c for c in opt.choices if c != default)
        return [opt.flag, value], value
    if opt.kind in ("int", "float"):
        low = 0 if opt.low is None else opt.low
        high = low + 10 if opt.high is None else opt.high
        value: Any = (low + high) / 2 if opt.kind == "float" else int(low) + 3
        if opt.kind == "int" and opt.high is not None:
            value = min(value, int(opt.high))
        assert value != default and value != opt.cli_default, name
        return [opt.flag, str(value)], value
    if opt.kind == "uuid":
        value = "0c000000-0000-4000-8000-0000000000c1"
        return [opt.flag, value], value
    if opt.kind == "path":
        path = tmp_path / f"{name}.json"
        return [opt.flag, str(path)], path
    return [opt.flag, f"value-of-{name}"], f"value-of-{name}"


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The configs the command built; the emulator itself never starts."""
    seen: list[Any] = []

    class Unstartable(server.Emulator):
        def start(self) -> server.Emulator:
            seen.append(self.config)
            raise OSError("not today")

    monkeypatch.setattr(server, "Emulator", Unstartable)
    return seen


def test_each_option_reaches_the_config(tmp_path: Path, captured: list[Any]) -> None:
    for name, opt, default in options():
        words, expected = _sample(name, opt, default, tmp_path)
        result = CliRunner().invoke(emulator_command, words)
        assert result.exit_code == 1, (name, result.output)  # "cannot listen": it got there
        assert getattr(captured[-1], name) == expected, name


def test_without_options_the_config_holds_the_fields_defaults(captured: list[Any]) -> None:
    unset = {"GENESYS_CLOUD_CLIENT_ID": None, "GENESYS_CLOUD_CLIENT_SECRET": None}
    result = CliRunner().invoke(emulator_command, [], env=unset)
    assert result.exit_code == 1
    config = captured[-1]
    for name, opt, default in options():
        expected = default if opt.cli_default is UNSET else opt.cli_default
        if name == "org_id":  # derived from the seed and the org's name
            expected = EmulatorConfig(seed=config.seed, org_name=config.org_name).org_id
            assert uuid.UUID(expected)
        assert getattr(config, name) == expected, name


def _out_of_range(opt: Option) -> list[Any]:
    bad: list[Any] = []
    if opt.low is not None:
        bad.append(opt.low if opt.low_open else opt.low - 1)
    if opt.high is not None:
        bad.append(opt.high + 0.5 if opt.kind == "float" else int(opt.high) + 1)
    if opt.kind == "choice":
        bad.append("neither")
    if opt.kind == "uuid":
        bad.append("not-a-uuid")
    return bad


BOUNDED = [(name, value) for name, opt, _ in options() for value in _out_of_range(opt)]


def test_every_bounded_option_has_its_bounds_tested() -> None:
    assert {"rate_per_minute", "port", "fault_5xx_rate", "rate_window_mode"} <= {
        name for name, _ in BOUNDED
    }


@pytest.mark.parametrize(("name", "value"), BOUNDED)
def test_config_and_command_refuse_the_same_values(name: str, value: Any) -> None:
    with pytest.raises(ValueError, match=name):
        EmulatorConfig(**{name: value})
    flag = next(opt.flag for n, opt, _ in options() if n == name)
    result = CliRunner().invoke(emulator_command, [flag, str(value)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
