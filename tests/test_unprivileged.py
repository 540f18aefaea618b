"""Started by an ordinary user, the daemon serves that user alone, with keys
only, and says so at start (as sshd does when not root)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.daemon import Server, free_port, privsep_command, ssh, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create the users")


def test_unprivileged_daemon_serves_its_own_user_only(make_user) -> None:
    owner, other = make_user(prefix="pun"), make_user(prefix="puo")
    workdir = Path(tempfile.mkdtemp(prefix="unpriv-"))
    os.chown(workdir, owner.uid, owner.gid)
    key = workdir / "host_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    os.chown(key, owner.uid, owner.gid)
    port = free_port()
    config = workdir / "sshd_config"
    config.write_text(f"ListenAddress 127.0.0.1\nPidFile {workdir}/pid\nHostKey {key}\n"
                      "LogLevel VERBOSE\n")
    log = workdir / "log"
    env = dict(os.environ)
    daemon = subprocess.Popen(
        ["setpriv", f"--reuid={owner.uid}", f"--regid={owner.gid}", "--init-groups", "--",
         *privsep_command(), "-D", "-e", "-f", str(config), "-p", str(port)],
        stdin=subprocess.DEVNULL, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
        start_new_session=True, env=env)
    try:
        server = Server("privsep", port, workdir, daemon)
        wait_until(lambda: "Server listening" in log.read_text() or daemon.poll() is not None)
        text = log.read_text()
        assert f"Not running as root: serving only user {owner.name}" in text, text
        result = ssh(server, owner, "id -u; echo $SSH_CONNECTION")
        assert result.returncode == 0, (result.stderr, log.read_text())
        assert result.stdout.split()[0] == str(owner.uid).encode()
        # a pty works too, without root to chown it
        tty = ssh(server, owner, "tty", tty=True)
        assert tty.returncode == 0 and tty.stdout.startswith(b"/dev/pts/")
        # anyone else is refused, and passwords are not offered
        assert ssh(server, other, "true").returncode == 255
        refused = ssh(server, owner, "true", password=owner.password)
        assert refused.returncode == 255
        assert f"User {other.name} from 127.0.0.1 not allowed" in log.read_text()
    finally:
        daemon.terminate()
        daemon.wait(10)
        subprocess.run(["pkill", "-KILL", "-s", str(daemon.pid)], check=False)
        subprocess.run(["rm", "-rf", str(workdir)], check=False)
