"""Configuration: defaults run without a file; unknown or mistyped keys are clear errors."""
import pytest

from gateway.config import Settings, load_settings, settings_from_mapping
from gateway.errors import ConfigError


def test_defaults_match_the_contract():
    s = Settings()
    assert (s.smtp.host, s.smtp.port, s.outbound.transport) == ("127.0.0.1", 2525, "maildir")
    assert s.database.url == "sqlite:///postdesk.db"
    assert (s.packages.basic, s.packages.bronze, s.packages.silver, s.packages.gold) == (1, 3, 5, 10)
    assert s.lifecycle.reopen_window_days == 14


def test_example_config_loads_and_equals_defaults(tmp_path):
    from pathlib import Path
    example = Path(__file__).resolve().parent.parent / "config.example.toml"
    loaded = load_settings(example)
    defaults = Settings(base_dir=loaded.base_dir)
    assert loaded == defaults


@pytest.mark.parametrize("data, message", [
    ({"smtp": {"prot": 25}}, "unknown key 'prot' in [smtp]"),
    ({"smtpd": {}}, "unknown configuration section [smtpd]"),
    ({"smtp": {"port": "25"}}, "[smtp] port must be a int"),
    ({"outbound": {"transport": "carrier-pigeon"}}, "transport must be"),
    ({"smtp": {"support_address": "support+x@desk.example.com"}}, "support_address"),
    ({"packages": {"gold": 0}}, "[packages] gold must be at least 1"),
])
def test_bad_values_are_refused_with_the_key(data, message):
    with pytest.raises(ConfigError) as err:
        settings_from_mapping(data)
    assert message in str(err.value)


def test_relative_paths_resolve_against_the_config_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[database]\nurl = "sqlite:///data/pd.db"\n[outbound]\nmaildir = "mail"\n')
    s = load_settings(path)
    assert s.database_url == f"sqlite:///{tmp_path / 'data' / 'pd.db'}"
    assert s.maildir_path == tmp_path / "mail"


def test_missing_file_and_bad_toml_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[smtp\nport=1")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(bad)


def test_environment_variable_selects_the_file(tmp_path, monkeypatch):
    path = tmp_path / "c.toml"
    path.write_text("[smtp]\nport = 2600\n")
    monkeypatch.setenv("POSTDESK_CONFIG", str(path))
    assert load_settings().smtp.port == 2600
