"""Bulk data both ways with rekeys forced during each transfer."""

from __future__ import annotations

import hashlib
import os

from tests.daemon import Server, ssh

SIZE = 100 * 1024 * 1024


def test_100mb_up_and_down_with_rekey(privsep_server: Server, user, tmp_path) -> None:
    data = os.urandom(SIZE)
    digest = hashlib.sha256(data).hexdigest()
    target = f"{user.home}/upload.bin"
    up = ssh(privsep_server, user, f"cat > {target} && sha256sum {target}", input=data,
             options=["RekeyLimit=1M"], flags=["-v"], timeout=300)
    assert up.returncode == 0, up.stderr
    # the client started a key exchange for every MiB or so
    assert up.stderr.count(b"SSH2_MSG_KEXINIT sent") > 50
    assert up.stdout.split()[0].decode() == digest
    down = ssh(privsep_server, user, f"cat {target}", options=["RekeyLimit=1M"], flags=["-v"],
               timeout=300)
    assert down.returncode == 0, down.stderr
    assert down.stderr.count(b"SSH2_MSG_KEXINIT sent") > 50
    assert len(down.stdout) == SIZE
    assert hashlib.sha256(down.stdout).hexdigest() == digest
