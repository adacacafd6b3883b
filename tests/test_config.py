"""Configuration loading: defaults, the documented example file, and one-line errors."""

from __future__ import annotations

import configparser
import dataclasses
from pathlib import Path

import pytest

from gateway.app import config as config_module
from gateway.app.config import ConfigError, ListenAddress, load_config
from gateway.app.settings import BY_SECTION, SETTINGS, render_ini, render_markdown

EXAMPLE = Path(__file__).resolve().parent.parent / "conf" / "gateway.ini"


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "gateway.ini"
    path.write_text(text)
    return str(path)


REFERENCE = EXAMPLE.parent.parent / "docs" / "configuration.md"


def test_example_file_documents_every_key_with_its_default() -> None:
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";",))
    parser.read(EXAMPLE)
    assert set(parser.sections()) == set(BY_SECTION)
    for section, keys in BY_SECTION.items():
        assert set(parser[section]) == set(keys), section
        for key, setting in keys.items():
            assert parser.get(section, key).strip() == setting.default, f"{section}.{key}"
    assert load_config(str(EXAMPLE)) == dataclasses.replace(load_config(None),
                                                            source=str(EXAMPLE))


def test_example_file_and_reference_are_the_generated_ones() -> None:
    # Regenerate with: python -m gateway.app.settings ini > conf/gateway.ini (markdown >
    # docs/configuration.md).
    assert EXAMPLE.read_text() == render_ini()
    assert REFERENCE.read_text() == render_markdown()


def test_each_section_type_has_exactly_the_settings_keys() -> None:
    sections = {f.name: f.type for f in dataclasses.fields(config_module.GatewayConfig)
                if f.name != "source"}
    assert set(sections) == set(BY_SECTION)
    for section, type_name in sections.items():
        fields = {f.name for f in dataclasses.fields(getattr(config_module, type_name))}
        assert fields == set(BY_SECTION[section]), section


def test_every_default_parses_and_every_setting_is_documented() -> None:
    for setting in SETTINGS:
        setting.parse(setting.default)
        assert setting.doc.strip() and setting.kind, setting.name
    options = [s.option for s in SETTINGS if s.option]
    assert len(options) == len(set(options))


def test_defaults_listen_on_5060_and_use_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    config = load_config(None, {"data_dir": str(tmp_path)})
    assert ListenAddress("0.0.0.0", 5060) in config.sip.listen_udp
    assert ListenAddress("::", 5060) in config.sip.listen_tcp
    assert config.database.url == f"sqlite:///{tmp_path}/registry.sqlite3"


def test_file_values_and_overrides_apply(tmp_path: Path) -> None:
    path = write(tmp_path, "[gateway]\ndomains = a.example, B.example.\n"
                           "[sip]\nlisten_udp = 127.0.0.1:5070, [::1]:5071\n")
    config = load_config(path, {"registrar.max_contacts": "3"})
    assert config.gateway.domains == ("a.example", "b.example")
    assert config.sip.listen_udp == (ListenAddress("127.0.0.1", 5070),
                                     ListenAddress("::1", 5071))
    assert config.registrar.max_contacts == 3


@pytest.mark.parametrize(("text", "named"), [
    ("[sip]\nlisten_udp = 127.0.0.1:99999\n", "sip.listen_udp"),
    ("[sip]\nlisten_udp = example.com:5060\n", "sip.listen_udp"),
    ("[sip]\nt1 = fast\n", "sip.t1"),
    ("[sip]\nforce_rport = maybe\n", "sip.force_rport"),
    ("[sip]\nbogus = 1\n", "sip.bogus"),
    ("[nowhere]\nx = 1\n", "[nowhere]"),
    ("[registrar]\nmin_expires = 100\nmax_expires = 50\n", "registrar.min_expires"),
    ("[registrar]\nmax_contacts = 0\n", "registrar.max_contacts"),
    ("[gateway]\nlog_level = loud\n", "gateway.log_level"),
    ("[gateway]\ndomains = bad_domain!\n", "gateway.domains"),
    ("[database]\nurl = registry.db\n", "database.url"),
    ("[sip]\nlisten_udp =\nlisten_tcp =\n[tls]\nlisten =\n", "sip.listen_udp"),
    ("[tls]\nlisten = 127.0.0.1:nope\n", "tls.listen"),
    ("[tls]\nmin_version = 1.0\n", "tls.min_version"),
    ("[tls]\nprivate_key = /tmp/k.pem\n", "tls.certificate"),
    ("[auth]\ntrusted_networks = 10.0.0.0/33\n", "auth.trusted_networks"),
    ("[auth]\nalgorithms = SHA-512\n", "auth.algorithms"),
    ("[auth]\nmethods = INVITE, *\n", "auth.methods"),
    ("[auth]\nrealm = a\"b\n", "auth.realm"),
    ("[overlay]\nlisten = somewhere:1\n", "overlay.listen"),
    ("[overlay]\nlisten = 127.0.0.1:1, 127.0.0.1:2\n", "overlay.listen"),
    ("[overlay]\ntrust = maybe\n", "overlay.trust"),
    ("[overlay]\ntrust = ca\n", "overlay.ca_file"),
    ("[overlay]\npins = b.example=12\n", "overlay.pins"),
    ("[overlay]\nbootstrap = host.example:6084\n", "overlay.bootstrap"),
    ("[overlay]\nroute = http://x\n", "overlay.route"),
    ("not an ini file\n", "not valid INI"),
])
def test_bad_config_gives_one_line_error_naming_the_key(tmp_path: Path, text: str,
                                                        named: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    message = str(info.value)
    assert named in message and "\n" not in message


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(str(tmp_path / "missing.ini"))
