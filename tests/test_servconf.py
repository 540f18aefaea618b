"""sshd_config reading: first value wins, -o/-p before the file, errors name file and line."""

from __future__ import annotations

import pytest

from privsep.config import servconf


def _load(tmp_path, text: str, overrides: list[str] | None = None) -> servconf.ServerOptions:
    path = tmp_path / "sshd_config"
    path.write_text(text)
    return servconf.load(str(path), overrides or [])


def test_defaults(tmp_path) -> None:
    options = _load(tmp_path, "")
    assert options.port == [2222]
    assert options.permit_root_login == "prohibit-password"
    assert options.max_startups == (10, 30, 100)
    assert options.login_grace_time == 120
    assert len(options.host_key) == 3


def test_first_value_wins_and_case_is_ignored(tmp_path) -> None:
    options = _load(tmp_path, "passwordauthentication no\nPasswordAuthentication yes\n"
                              "LoginGraceTime 1m30s\n")
    assert options.password_authentication is False
    assert options.login_grace_time == 90


def test_command_line_ports_add_to_the_files(tmp_path) -> None:
    # as sshd: -o lines are read first, the file's Port lines add to them
    # (only -p replaces them: test_cmdline_parity compares both with sshd)
    assert _load(tmp_path, "Port 2299\n", ["Port 2300"]).port == [2300, 2299]
    assert _load(tmp_path, "Port 2299\nPort 2301\n").port == [2299, 2301]


@pytest.mark.parametrize("line,message", [
    ("Bogus yes", "line 2: Bad configuration option: Bogus"),
    ("PasswordAuthentication maybe", 'line 2: unsupported option "maybe".'),  # sshd's words
    ("Port 70000", "line 2: Badly formatted port number."),
    ("MaxStartups 10:200:5", "line 2: Invalid MaxStartups spec."),
])
def test_errors_name_file_and_line(tmp_path, line: str, message: str) -> None:
    with pytest.raises(servconf.ConfigError, match=message) as caught:
        _load(tmp_path, f"# comment\n{line}\n")
    assert str(tmp_path / "sshd_config") in str(caught.value)
