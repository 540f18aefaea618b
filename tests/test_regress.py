"""OpenSSH's regress scenarios, reproduced here (written for this project,
not copied), each run against privsep-sshd and Debian's sshd: exit-status,
stderr-data, stderr-after-eof, transfer, broken-pipe, yes-head, envpass,
and the basic mux/sftp/scp/forwarding/agent/rekey checks (the fuller versions
are in test_multiplex, test_sftp_scp, test_forwarding, test_agent_hostkeys,
test_rekey)."""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest

from tests.daemon import Server, ssh, ssh_argv

DATA = os.urandom(256 * 1024 + 3)


# exit-status.sh: the remote exit code, directly and through another shell
@pytest.mark.parametrize("code", [0, 1, 4, 5, 44])
def test_exit_status(session_server: Server, user, code: int) -> None:
    assert ssh(session_server, user, f"exit {code}").returncode == code
    assert ssh(session_server, user, f"exec sh -c 'exit {code}'").returncode == code
    assert ssh(session_server, user, f"exit {code}", tty=True).returncode == code


# stderr-data.sh: data on stderr only, with stdout gone, with and without -n
@pytest.mark.parametrize("dash_n", [False, True])
def test_stderr_data(session_server: Server, user, dash_n: bool) -> None:
    ssh(session_server, user, "cat > data.bin", input=DATA)
    result = ssh(session_server, user, "exec sh -c 'exec > /dev/null; sleep 0.3; cat data.bin 1>&2'",
                 flags=["-n"] if dash_n else [])
    assert result.returncode == 0
    assert result.stdout == b""
    assert result.stderr == DATA


# stderr-after-eof.sh: stdout closed early, stderr keeps flowing
def test_stderr_after_eof(session_server: Server, user) -> None:
    ssh(session_server, user, "cat > data.bin", input=DATA)
    result = ssh(session_server, user, "exec sh -c 'exec 1>&-; sleep 0.5; cat data.bin 1>&2'")
    assert result.returncode == 0
    assert result.stderr == DATA


# transfer.sh: cat up and down with several sizes
@pytest.mark.parametrize("size", [0, 1, 1023, 32768, 32769, 100000, 2 * 1024 * 1024 + 1])
def test_transfer(session_server: Server, user, size: int) -> None:
    payload = os.urandom(size)
    up = ssh(session_server, user, "cat > t.bin; wc -c < t.bin", input=payload)
    assert up.stdout.strip() == str(size).encode()
    down = ssh(session_server, user, "cat t.bin")
    assert down.stdout == payload


# broken-pipe.sh: the client's stdout goes away; nothing hangs, server fine
def test_broken_pipe(session_server: Server, user) -> None:
    argv, env = ssh_argv(session_server, user, "echo; sleep 1")
    for _ in range(3):
        pipeline = subprocess.run(["sh", "-c", " ".join(f"'{a}'" for a in argv) + " | true"],
                                  env=env, capture_output=True, timeout=30)
        assert pipeline.returncode == 0
    assert ssh(session_server, user, "echo fine").stdout == b"fine\n"


# yes-head.sh: an endless producer whose reader stops early
def test_yes_head(session_server: Server, user) -> None:
    result = ssh(session_server, user, "sh -c 'while true; do echo yes; done | head -2000'",
                 timeout=60)
    assert result.stdout.count(b"yes\n") == 2000


def test_yes_head_on_the_client_side(session_server: Server, user) -> None:
    """`ssh host yes | head`: when head exits, the client sends
    eow@openssh.com; the server closes the program's output and `yes` dies
    of SIGPIPE, so the whole pipeline ends."""
    argv, env = ssh_argv(session_server, user, "yes")
    pipeline = subprocess.run(["sh", "-c", " ".join(f"'{a}'" for a in argv) + " | head -3"],
                              env=env, capture_output=True, timeout=30)
    assert pipeline.stdout == b"y\ny\ny\n"
    assert ssh(session_server, user, "pgrep -u \"$USER\" -x yes || echo none").stdout == b"none\n"


# envpass.sh: SendEnv / SetEnv through AcceptEnv, and what is not accepted
def test_envpass(session_server: Server, user) -> None:
    argv, env = ssh_argv(session_server, user,
                         'echo "${LC_TEST_A-unset}|${LC_TEST_B-unset}|${_XXX_TEST-unset}"',
                         options=["SendEnv=LC_TEST_A _XXX_TEST"])
    env.update(LC_TEST_A="a value", LC_TEST_B="not sent", _XXX_TEST="refused")
    result = subprocess.run(argv, env=env, capture_output=True, timeout=30)
    assert result.stdout == b"a value|unset|unset\n"
    result = ssh(session_server, user, 'echo "$LC_TEST_B"', options=["SetEnv=LC_TEST_B=set"])
    assert result.stdout == b"set\n"


# sftp.sh / scp.sh in brief: a copy round trip in several buffer sizes
@pytest.mark.parametrize("buffer", [5, 1000, 32000, 64000])
def test_sftp_buffer_sizes(session_server: Server, user, tmp_path, buffer: int) -> None:
    source = tmp_path / "src"
    source.write_bytes(DATA)
    os.chmod(tmp_path, 0o755)
    argv, env = ssh_argv(session_server, user)
    options = argv[3:-1]
    result = subprocess.run(["sftp", "-P", str(session_server.port), *options, "-B", str(buffer),
                             "-R", "4", f"{user.name}@127.0.0.1:/etc/services", str(tmp_path / "dst")],
                            env=env, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    with open("/etc/services", "rb") as handle:
        expected = handle.read()
    assert hashlib.sha256((tmp_path / "dst").read_bytes()).digest() == \
        hashlib.sha256(expected).digest()


# rekey.sh in brief: client-forced rekeys during a transfer, every cipher offered
@pytest.mark.parametrize("cipher", ["aes128-ctr", "aes256-ctr", "aes128-gcm@openssh.com",
                                    "aes256-gcm@openssh.com"])
def test_rekey_per_cipher(session_server: Server, user, cipher: str) -> None:
    payload = os.urandom(3 * 1024 * 1024)
    result = ssh(session_server, user, "cat > r.bin; sha256sum < r.bin; cat r.bin",
                 input=payload, options=[f"Ciphers={cipher}", "RekeyLimit=256K"], flags=["-v"])
    assert result.returncode == 0
    digest, _, rest = result.stdout.partition(b"  -\n")
    assert digest.decode() == hashlib.sha256(payload).hexdigest()
    assert rest == payload
    assert result.stderr.count(b"SSH2_MSG_KEXINIT received") > 10
