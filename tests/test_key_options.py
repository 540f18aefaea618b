"""authorized_keys options, end to end through the stock OpenSSH client,
privsep-sshd and Debian's sshd side by side in every test.

Each scenario writes one authorized_keys line for a throwaway user, runs the
same client commands against both daemons (one after the other, the same
user and the same key file) and compares what each daemon did field by
field: exit status, output, whether a forward carried data, and the log line
that both daemons write. The reference's values are then checked against
what the option means (sshd(8), AUTHORIZED_KEYS FILE FORMAT).

Options: expiry-time, restrict (no pty, no port forwarding, no agent
forwarding) and restrict,pty, permitopen (-L and -W), permitlisten (-R).
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator

import pytest

from tests.daemon import Server, free_port, ssh, ssh_argv, wait_until
from tests.session_util import EchoServer, forwarder, recv_all, stop_forwarder, wait_port
from tests.userutil import TestUser

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

KINDS = ("privsep", "openssh")
DATA = os.urandom(256 * 1024 + 7)


# --- fixtures and helpers ---------------------------------------------------------

@pytest.fixture
def servers(privsep_server: Server, openssh_server: Server) -> dict[str, Server]:
    """Both daemons, default configuration (module-scoped, from conftest)."""
    return {"privsep": privsep_server, "openssh": openssh_server}


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def other_echo() -> Iterator[EchoServer]:
    """A second listener, so that a refused forward is refused by policy,
    not because nothing listens at the target."""
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def agent(user: TestUser) -> Iterator[tuple[str, str]]:
    """A local ssh-agent holding the user's key: (socket path, fingerprint)."""
    directory = tempfile.mkdtemp(prefix="keyopt-agent-")
    sock = os.path.join(directory, "agent.sock")
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", sock], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: os.path.exists(sock))
        env = {**os.environ, "SSH_AUTH_SOCK": sock}
        subprocess.run(["ssh-add", str(user.key_path)], env=env, check=True, capture_output=True)
        listed = subprocess.run(["ssh-add", "-l"], env=env, capture_output=True,
                                text=True, check=True).stdout
        yield sock, listed.split()[1]
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(directory, ignore_errors=True)


def authorize(user: TestUser, options: str) -> None:
    """The user's only authorized_keys line: ``options`` then the key.
    Rewriting the file in place keeps its owner and mode 600."""
    auth = user.home / ".ssh" / "authorized_keys"
    auth.write_text(f"{options} {user.pubkey}\n" if options else f"{user.pubkey}\n")
    st = auth.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (user.uid, 0o600)


def log_mark(server: Server) -> int:
    return len(server.log_text())


def logged(server: Server, mark: int, pattern: str, keep: tuple[int, ...] = (),
           timeout: float = 10) -> str | None:
    """The first log line written since ``mark`` that matches the regular
    expression ``pattern``, or None if none comes within ``timeout``.  Port
    numbers other than ``keep`` (the client's ephemeral source port) are
    replaced by "<port>", and the " [session]" that privsep-sshd's monitor
    appends to the session process's lines (README, "The phase trace") is
    dropped, so that the two daemons' lines compare equal."""
    regex = re.compile(pattern)

    def find() -> str | None:
        for line in server.log_text()[mark:].splitlines():
            if regex.search(line):
                return line
        return None
    try:
        line = wait_until(find, timeout=timeout)
    except AssertionError:
        return None
    line = line.removesuffix(" [session]")
    return re.sub(r"\bport (\d+)",
                  lambda m: m.group(0) if int(m.group(1)) in keep else "port <port>", line)


def side_by_side(servers: dict[str, Server],
                 scenario: Callable[[Server], dict[str, object]]) -> dict[str, object]:
    """Run ``scenario`` against each daemon (the reference second) and
    require the same observations from both, field by field. Returns them."""
    observed = {kind: scenario(servers[kind]) for kind in KINDS}
    ours, reference = observed["privsep"], observed["openssh"]
    assert ours.keys() == reference.keys()
    differences = {name: {"privsep": ours[name], "openssh": reference[name]}
                   for name in reference if ours[name] != reference[name]}
    assert not differences, f"privsep-sshd and sshd differ: {differences}"
    return reference


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def roundtrip(port: int, data: bytes = DATA) -> bytes:
    """Connect to ``port``, send ``data``, half-close, read to EOF."""
    import threading
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)

    def send() -> None:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # a refused channel closes the socket under us
    sender = threading.Thread(target=send)
    sender.start()
    try:
        return recv_all(sock)
    except OSError:
        return b""
    finally:
        sender.join()
        sock.close()


# --- expiry-time ---------------------------------------------------------------------

def _utc(delta: datetime.timedelta) -> str:
    return (datetime.datetime.now(datetime.timezone.utc) + delta).strftime("%Y%m%d%H%MZ")


def _local(delta: datetime.timedelta) -> str:
    return (datetime.datetime.now() + delta).strftime("%Y%m%d%H%M%S")


HOUR = datetime.timedelta(hours=1)


@pytest.mark.parametrize("when,usable", [
    (lambda: "20000101", False),
    (lambda: _local(-HOUR), False),
    (lambda: _utc(-HOUR), False),
    (lambda: "20991231", True),
    (lambda: _local(HOUR), True),
    (lambda: _utc(HOUR), True),
], ids=["date-past", "local-hour-ago", "utc-hour-ago", "date-future", "local-in-an-hour",
        "utc-in-an-hour"])
def test_expiry_time(servers, user, when, usable: bool) -> None:
    """An expired key is refused and the login falls back to the password;
    a key that has not expired yet logs in."""
    authorize(user, f'expiry-time="{when()}"')

    def scenario(server: Server) -> dict[str, object]:
        mark = log_mark(server)
        key_only = ssh(server, user, "echo", "in")
        fallback = ssh(server, user, "echo", "in", password=user.password,
                       options=["PreferredAuthentications=publickey,password"],
                       flags=["-i", str(user.key_path)])
        method = "publickey" if usable else "password"
        return {
            "key only: exit": key_only.returncode,
            "key only: stdout": key_only.stdout,
            "key only: denied": b"Permission denied (publickey" in key_only.stderr,
            "key then password: exit": fallback.returncode,
            "key then password: stdout": fallback.stdout,
            "accepted": logged(server, mark, rf"Accepted {method} for {user.name} from "),
        }

    seen = side_by_side(servers, scenario)
    if usable:
        assert seen["key only: exit"] == 0 and seen["key only: stdout"] == b"in\n"
    else:
        assert seen["key only: exit"] == 255 and seen["key only: denied"]
    assert seen["key then password: exit"] == 0
    assert seen["key then password: stdout"] == b"in\n"
    assert seen["accepted"] is not None


def test_expired_key_log_names_the_reason(servers, user) -> None:
    """Refusing an expired key, neither daemon blames a from= option the
    line does not have ("not from a permitted host")."""
    authorize(user, 'expiry-time="20000101"')

    def scenario(server: Server) -> dict[str, object]:
        mark = log_mark(server)
        result = ssh(server, user, "true")
        closed = logged(server, mark, rf"Connection closed by authenticating user {user.name} ")
        return {
            "exit": result.returncode,
            "closed": closed,
            "blames from=": "not from a permitted host" in server.log_text()[mark:],
        }

    seen = side_by_side(servers, scenario)
    assert seen["exit"] == 255
    assert seen["closed"] == (f"Connection closed by authenticating user {user.name} "
                              "127.0.0.1 port <port> [preauth]")
    assert seen["blames from="] is False


# --- restrict, restrict,pty --------------------------------------------------------

@pytest.mark.parametrize("options,pty", [("restrict", False), ("restrict,pty", True),
                                         ("no-pty", False), ("", True)])
def test_restrict_pty(servers, user, options: str, pty: bool) -> None:
    """restrict refuses a pty (a forced -tt fails, as it does for no-pty);
    restrict,pty gives one back."""
    authorize(user, options)

    def scenario(server: Server) -> dict[str, object]:
        forced = ssh(server, user, "tty", tty=True)
        plain = ssh(server, user, "tty")
        return {
            "-tt: exit": forced.returncode,
            "-tt: tty": re.sub(rb"/dev/pts/\d+", b"/dev/pts/N", forced.stdout),
            "-tt: refused": b"PTY allocation request failed" in forced.stderr,
            "no -t: exit": plain.returncode,
            "no -t: tty": plain.stdout,
        }

    seen = side_by_side(servers, scenario)
    if pty:
        assert seen["-tt: exit"] == 0 and seen["-tt: tty"] == b"/dev/pts/N\r\n"
        assert not seen["-tt: refused"]
    else:
        assert seen["-tt: exit"] == 255 and seen["-tt: tty"] == b""
        assert seen["-tt: refused"]
    # without a pty request the session never has one
    assert seen["no -t: exit"] == 1 and seen["no -t: tty"] == b"not a tty\n"


@pytest.mark.parametrize("options,allowed", [("restrict", False), ("restrict,pty", False),
                                             ("restrict,port-forwarding", True)])
def test_restrict_local_forward(servers, user, echo, options: str, allowed: bool) -> None:
    """restrict: a -L channel to a live local listener is refused and logged;
    restrict,port-forwarding lets it carry data."""
    authorize(user, options)

    def scenario(server: Server) -> dict[str, object]:
        port = free_port()
        mark = log_mark(server)
        proc = forwarder(server, user, ["-v", "-L", f"{port}:127.0.0.1:{echo.port}"])
        try:
            wait_port(port)
            carried = roundtrip(port) == DATA
            refusal = None if allowed else logged(
                server, mark, "refused local port forward: ", keep=(echo.port,))
        finally:
            err = stop_forwarder(proc)
        return {
            "carried data": carried,
            "prohibited": b"administratively prohibited" in err,
            "log": refusal,
        }

    seen = side_by_side(servers, scenario)
    assert seen["carried data"] is allowed
    assert seen["prohibited"] is not allowed
    if not allowed:
        assert seen["log"] == ("refused local port forward: originator 127.0.0.1 port <port>, "
                               f"target 127.0.0.1 port {echo.port}")


def test_restrict_remote_forward(servers, user, echo) -> None:
    """restrict: -R is refused, nothing listens on the port."""
    authorize(user, "restrict")
    port = free_port()

    def scenario(server: Server) -> dict[str, object]:
        result = ssh(server, user, "true", options=["ExitOnForwardFailure=yes", "LogLevel=INFO"],
                     flags=["-R", f"{port}:127.0.0.1:{echo.port}"])
        return {
            "exit": result.returncode,
            "failed": f"remote port forwarding failed for listen port {port}".encode()
            in result.stderr,
            "listening": listening(port),
        }

    seen = side_by_side(servers, scenario)
    assert seen == {"exit": 255, "failed": True, "listening": False}


@pytest.mark.parametrize("options,forwarded", [("", True), ("restrict", False),
                                               ("restrict,pty", False),
                                               ("restrict,agent-forwarding", True)])
def test_restrict_agent_forwarding(servers, user, agent, options: str,
                                   forwarded: bool) -> None:
    """ssh -A: with restrict the session gets no SSH_AUTH_SOCK and cannot reach
    the agent; without it (or with restrict,agent-forwarding) ssh-add -l lists
    the key through the forwarded socket."""
    sock, fingerprint = agent
    authorize(user, options)

    def scenario(server: Server) -> dict[str, object]:
        argv, env = ssh_argv(server, user, 'echo "${SSH_AUTH_SOCK:-none}"; ssh-add -l',
                             flags=["-A"])
        env["SSH_AUTH_SOCK"] = sock
        result = subprocess.run(argv, env=env, capture_output=True, timeout=60)
        first, _, rest = result.stdout.decode().partition("\n")
        return {
            "exit": result.returncode,  # ssh-add -l's: 0 listed, 2 no agent
            "socket": "none" if first == "none" else "set",
            "key listed": fingerprint in rest,
        }

    seen = side_by_side(servers, scenario)
    if forwarded:
        assert seen == {"exit": 0, "socket": "set", "key listed": True}
    else:
        assert seen == {"exit": 2, "socket": "none", "key listed": False}


# --- permitopen --------------------------------------------------------------------

def test_permitopen_local_forward(servers, user, echo, other_echo) -> None:
    """permitopen="127.0.0.1:P": -L to P carries data; -L to another live
    port is refused ("administratively prohibited") and logged."""
    authorize(user, f'permitopen="127.0.0.1:{echo.port}"')

    def scenario(server: Server) -> dict[str, object]:
        good, bad = free_port(), free_port()
        mark = log_mark(server)
        proc = forwarder(server, user, ["-v", "-L", f"{good}:127.0.0.1:{echo.port}",
                                        "-L", f"{bad}:127.0.0.1:{other_echo.port}"])
        try:
            wait_port(good)
            wait_port(bad)
            allowed = roundtrip(good) == DATA
            refused = roundtrip(bad, b"should not arrive")
            denial = logged(server, mark, "but the request was denied",
                            keep=(echo.port, other_echo.port))
        finally:
            err = stop_forwarder(proc)
        return {
            "permitted port carried data": allowed,
            "other port got": refused,
            "prohibited": b"administratively prohibited" in err,
            "log": denial,
        }

    seen = side_by_side(servers, scenario)
    assert seen["permitted port carried data"] is True
    assert seen["other port got"] == b""
    assert seen["prohibited"] is True
    assert seen["log"] == ("Received request from 127.0.0.1 port <port> to connect to host "
                           f"127.0.0.1 port {other_echo.port}, but the request was denied.")


def test_permitopen_stdio_forward(servers, user, echo, other_echo) -> None:
    """permitopen="127.0.0.1:P": ssh -W to P carries stdin and stdout; -W to
    another live port fails."""
    authorize(user, f'permitopen="127.0.0.1:{echo.port}"')

    def scenario(server: Server) -> dict[str, object]:
        mark = log_mark(server)
        good = ssh(server, user, input=DATA, options=["LogLevel=INFO"],
                   flags=["-W", f"127.0.0.1:{echo.port}"])
        bad = ssh(server, user, input=b"should not arrive", options=["LogLevel=INFO"],
                  flags=["-W", f"127.0.0.1:{other_echo.port}"])
        denial = logged(server, mark, "but the request was denied",
                        keep=(echo.port, other_echo.port))
        return {
            "permitted: exit": good.returncode,
            "permitted: echoed": good.stdout == DATA,
            "other: exit": bad.returncode,
            "other: stdout": bad.stdout,
            "other: prohibited": b"administratively prohibited" in bad.stderr,
            "log": denial,
        }

    seen = side_by_side(servers, scenario)
    assert seen["permitted: exit"] == 0 and seen["permitted: echoed"] is True
    assert seen["other: exit"] == 255 and seen["other: stdout"] == b""
    assert seen["other: prohibited"] is True
    assert seen["log"] == ("Received request from 127.0.0.1 port <port> to connect to host "
                           f"127.0.0.1 port {other_echo.port}, but the request was denied.")


# --- permitlisten ------------------------------------------------------------------

#: (permitlisten value, the -R listen address the client asks for)
LISTEN_SPECS = [("{port}", ""), ("127.0.0.1:{port}", "127.0.0.1:"), ("localhost:{port}", "")]


@pytest.mark.parametrize("spec,bind", LISTEN_SPECS, ids=["port", "127.0.0.1:port",
                                                         "localhost:port"])
def test_permitlisten(servers, user, echo, spec: str, bind: str) -> None:
    """permitlisten: -R on the permitted port listens and carries data to a
    local listener; -R on another port is refused (ExitOnForwardFailure)."""
    port, other = free_port(), free_port()
    authorize(user, f'permitlisten="{spec.format(port=port)}"')

    def scenario(server: Server) -> dict[str, object]:
        proc = forwarder(server, user, ["-R", f"{bind}{port}:127.0.0.1:{echo.port}"])
        try:
            wait_until(lambda: listening(port) or proc.poll() is not None)
            carried = proc.poll() is None and roundtrip(port) == DATA
        finally:
            stop_forwarder(proc)
        # the next daemon binds the same port: wait until this one let it go
        wait_until(lambda: not listening(port))
        refused = ssh(server, user, "true", options=["ExitOnForwardFailure=yes", "LogLevel=INFO"],
                      flags=["-R", f"{bind}{other}:127.0.0.1:{echo.port}"])
        return {
            "permitted port carried data": carried,
            "other: exit": refused.returncode,
            "other: failed": f"remote port forwarding failed for listen port {other}".encode()
            in refused.stderr,
            "other: listening": listening(other),
        }

    seen = side_by_side(servers, scenario)
    assert seen == {"permitted port carried data": True, "other: exit": 255,
                    "other: failed": True, "other: listening": False}


@pytest.mark.parametrize("spec,bind", LISTEN_SPECS[:2], ids=["port", "127.0.0.1:port"])
def test_permitlisten_refusal_log(servers, user, spec: str, bind: str) -> None:
    """The refused -R is logged with sshd's line for a denied remote forward."""
    port, other = free_port(), free_port()
    authorize(user, f'permitlisten="{spec.format(port=port)}"')
    host = bind.rstrip(":") or "localhost"

    def scenario(server: Server) -> dict[str, object]:
        mark = log_mark(server)
        refused = ssh(server, user, "true", options=["ExitOnForwardFailure=yes"],
                      flags=["-R", f"{bind}{other}:127.0.0.1:9"])
        return {
            "exit": refused.returncode,
            "log": logged(server, mark, rf"remote.*\b{other}\b", keep=(other,)),
        }

    seen = side_by_side(servers, scenario)
    assert seen["exit"] == 255
    assert seen["log"] == (f"Received request from 127.0.0.1 port <port> to remote forward to "
                           f"host {host} port {other}, but the request was denied.")
