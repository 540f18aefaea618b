"""Shared pytest fixtures. Add new fixtures in their own section below."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.userutil import TestUser, create_user, remove_user


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")


# --- throwaway users (tests/userutil.py) --------------------------------------

@pytest.fixture
def make_user() -> Iterator[Callable[..., TestUser]]:
    """Factory: make_user(prefix="pst", password=True, key=True) -> TestUser.
    Every user it made is removed at teardown."""
    _require_root()
    made: list[TestUser] = []

    def make(prefix: str = "pst", password: bool = True,
             key: bool = True) -> TestUser:
        user = create_user(prefix, password=password, key=key)
        made.append(user)
        return user

    yield make
    for user in reversed(made):
        remove_user(user)


@pytest.fixture
def user(make_user: Callable[..., TestUser]) -> TestUser:
    """One throwaway user with a password and an ed25519 key."""
    return make_user()


# --- PAM service file (pam.d/privsep-sshd) ---------------------------------

@pytest.fixture(scope="session")
def pam_service() -> str:
    """/etc/pam.d/privsep-sshd made the repository's file (tests/daemon.py);
    the service name."""
    from tests.daemon import install_pam_service
    _require_root()
    return install_pam_service()


# --- servers: privsep-sshd under test, Debian's sshd as reference (tests/daemon.py)

from tests.daemon import Server, remove_server, start_server  # noqa: E402


@pytest.fixture(scope="module")
def privsep_server(pam_service: str) -> Iterator[Server]:
    """privsep-sshd on a free loopback port, for the module's tests."""
    yield from _serve("privsep")


@pytest.fixture(scope="module")
def openssh_server() -> Iterator[Server]:
    """Debian's OpenSSH sshd on a free loopback port: the reference."""
    yield from _serve("openssh")


def _serve(kind: str, extra_config: list[str] | None = None,
           tail_config: list[str] | None = None) -> Iterator[Server]:
    """A server of ``kind`` for as long as the fixture lives (root only;
    the reference skips where openssh-server is missing)."""
    _require_root()
    if kind == "openssh" and not Path("/usr/sbin/sshd").exists():
        pytest.skip("openssh-server is not installed (install.sh --test installs it)")
    server = start_server(kind, extra_config, tail_config)
    try:
        yield server
    finally:
        remove_server(server)


@pytest.fixture(params=["privsep", "openssh"])
def any_server(request) -> Server:
    """Each test runs against both daemons."""
    return request.getfixturevalue(f"{request.param}_server")


# --- servers with the session settings of issue 4 (tests/session_util.py) -------

@pytest.fixture(scope="module")
def privsep_session_server(pam_service: str) -> Iterator[Server]:
    """privsep-sshd with Subsystem sftp and AcceptEnv set as for Debian's sshd."""
    from tests.session_util import SESSION_CONFIG
    yield from _serve("privsep", SESSION_CONFIG)


@pytest.fixture(scope="module")
def openssh_session_server() -> Iterator[Server]:
    from tests.session_util import SESSION_CONFIG
    yield from _serve("openssh", SESSION_CONFIG)


@pytest.fixture(params=["privsep", "openssh"])
def session_server(request) -> Server:
    """Each test runs against both daemons, with the same session settings."""
    return request.getfixturevalue(f"{request.param}_session_server")


# --- servers configured by the test itself (any daemon, torn down with the test)

@pytest.fixture
def server_with(pam_service: str) -> Iterator[Callable[..., Server]]:
    """Factory for a test's own servers:
    ``server_with(*config_lines, tail=(), kind="privsep") -> Server``.

    ``config_lines`` come before the defaults of tests/daemon.py (for sshd
    the first value wins), ``tail`` after them (Match blocks); ``kind`` is
    "privsep" or "openssh" (the reference, skipped where it is missing).
    Each call starts a server; every one is removed at teardown."""
    made: list[Iterator[Server]] = []

    def start(*lines: str, tail: tuple[str, ...] | list[str] = (),
              kind: str = "privsep") -> Server:
        if kind not in ("privsep", "openssh"):
            raise ValueError(f"unknown server kind {kind!r}")
        serving = _serve(kind, list(lines), list(tail))
        server = next(serving)
        made.append(serving)
        return server

    yield start
    for serving in reversed(made):
        serving.close()  # _serve's finally: remove_server
