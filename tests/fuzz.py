"""Mutated input against a live daemon (issue 12, "Mutated input never hurts").

    python -m tests.fuzz --count N --seed S [--workers W] [--case I ...]

Starts privsep-sshd (tests/daemon.py: the installed daemon, or PRIVSEP_SSHD),
two throwaway users (one to fuzz as, one bystander whose session stays open
through the run), and then sends mutated versions of real client streams,
many connections at once:

- before NEWKEYS everything is plaintext, so the stock OpenSSH client's and
  paramiko's own streams are recorded once through a relay (banner, KEXINIT,
  KEX_ECDH_INIT, NEWKEYS) and replayed on raw sockets with one unit mutated
  (its payload, re-framed, or the binary packet framing itself);
- after the key exchange a paramiko client Transport sends mutated messages
  encrypted and valid at the transport layer: SERVICE_REQUEST, USERAUTH_REQUEST
  of each method (none, password, publickey query and signed, and
  keyboard-interactive with its INFO_RESPONSE answers) and, logged in,
  channel opens and requests, window adjusts, data, EOF/CLOSE and global
  requests.  A global request that wants a reply follows each input: its
  answer is the barrier that says the daemon has dealt with the input (and
  its absence is a hang).

Each case (one connection) draws from its own random.Random(f"{seed}:{case}"),
so ``--case I`` replays exactly one case.  After the run it checks that the
listener is alive and a login works, that the daemon's log has no traceback,
that no monitor, net-child or session process is left, that the listener's
fd count is back where it started, that utmp has no USER_PROCESS entry for a
dead pid, and that the bystander's session still answers.  One line reports
inputs, rate and every distinct failure; the exit status is 1 on a failure.

The mutators are hand-written, structure-aware ones (SSH fields: uint32
edges, string length lies, dropped and duplicated fields, type bytes) plus
byte-level ones; a property-testing library's per-example machinery and
shrinking would cost more than a live daemon's round trip buys.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import random
import re
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
from paramiko.message import Message

from tests.daemon import Server, descendants, ssh, ssh_background

# The fuzzing client's own complaints (refused channels, resets) are expected.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
logging.getLogger("paramiko").propagate = False

#: Config for the daemon under fuzz (before tests/daemon.py's defaults; the
#: first value wins): every method on, room for many connections and tries.
FUZZ_CONFIG = [
    "KbdInteractiveAuthentication yes",
    "MaxStartups 200",
    "MaxAuthTries 30",
    "LoginGraceTime 30",
    "Subsystem sftp /usr/lib/openssh/sftp-server",
    "AcceptEnv LANG LC_* PSX_*",
]

#: What in the daemon's log is a crash.
LOG_MARKERS = ("Traceback", "Unknown exception", "fatal: monitor error")

INTERESTING32 = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000,
                 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF, 32768, 35000, 2097152)
INTERESTING8 = (0, 1, 2, 0x7F, 0x80, 0xFE, 0xFF)
DICTIONARY = (
    b"ssh-ed25519", b"rsa-sha2-512", b"rsa-sha2-256", b"ssh-rsa", b"ecdsa-sha2-nistp256",
    b"ssh-ed25519-cert-v01@openssh.com", b"sk-ssh-ed25519@openssh.com",
    b"session", b"direct-tcpip", b"direct-streamlocal@openssh.com", b"x11",
    b"auth-agent@openssh.com", b"forwarded-tcpip", b"pty-req", b"shell", b"exec",
    b"subsystem", b"env", b"signal", b"window-change", b"break", b"x11-req",
    b"auth-agent-req@openssh.com", b"eow@openssh.com", b"keepalive@openssh.com",
    b"publickey", b"password", b"none", b"keyboard-interactive", b"hostbased",
    b"gssapi-with-mic", b"ssh-connection", b"ssh-userauth", b"curve25519-sha256",
    b"diffie-hellman-group14-sha256", b"kex-strict-c-v00@openssh.com", b"ext-info-c",
    b"aes128-ctr", b"chacha20-poly1305@openssh.com", b"hmac-sha2-256", b"none,none",
    b"root", b"\x00", b"\r\n", b"\n", b"%s%s%n", b"../../../../etc/shadow", b"\xff\xfe\xfd",
    b"SSH-2.0-", b"SSH-1.99-", b"\x1b[2J", b",", b",,,", b"A" * 300,
)
#: message types worth sending wherever a type byte is mutated
TYPES = (0, 1, 2, 3, 4, 5, 6, 7, 20, 21, 30, 31, 50, 51, 52, 53, 60, 61, 62, 80, 81, 82,
         90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 127, 128, 192, 255)


# --- mutation ---------------------------------------------------------------------

def u32(n: int) -> bytes:
    return struct.pack(">I", n & 0xFFFFFFFF)


def sshstr(data: bytes | str) -> bytes:
    if isinstance(data, str):
        data = data.encode()
    return u32(len(data)) + data


def mutate_bytes(rng: random.Random, data: bytes, keep_first: int = 0) -> bytes:
    """1-4 byte-level mutations; the first ``keep_first`` bytes stay."""
    head, buf = data[:keep_first], bytearray(data[keep_first:])
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(10)
        n = len(buf)
        if op == 0 and n:  # flip a bit
            i = rng.randrange(n)
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # an interesting byte
            buf[rng.randrange(n)] = rng.choice(INTERESTING8)
        elif op == 2:  # insert random bytes
            i = rng.randint(0, n)
            buf[i:i] = rng.randbytes(rng.randint(1, 16))
        elif op == 3 and n:  # delete a chunk
            i = rng.randrange(n)
            del buf[i:i + rng.randint(1, 16)]
        elif op == 4 and n:  # duplicate a chunk
            i = rng.randrange(n)
            chunk = buf[i:i + rng.randint(1, 32)]
            j = rng.randint(0, n)
            buf[j:j] = chunk
        elif op == 5 and n:  # truncate
            del buf[rng.randrange(n):]
        elif op == 6:  # extend
            buf += rng.randbytes(rng.randint(1, 64))
        elif op == 7 and n >= 4:  # an interesting uint32 anywhere
            i = rng.randrange(n - 3)
            buf[i:i + 4] = u32(rng.choice(INTERESTING32))
        elif op == 8:  # a dictionary token
            i = rng.randint(0, n)
            token = rng.choice(DICTIONARY)
            if rng.random() < 0.5:
                token = sshstr(token)
            buf[i:i] = token
        elif n:  # overwrite with random bytes
            i = rng.randrange(n)
            size = rng.randint(1, 8)
            buf[i:i + size] = rng.randbytes(size)
    return bytes(head + buf)


#: A message as typed fields: ("b", int) byte, ("u", int) uint32, ("q", int)
#: uint64, ("s", bytes) string, ("B", int) boolean, ("r", bytes) raw bytes.
Fields = list[tuple[str, object]]


def serialize(fields: Fields) -> bytes:
    out = bytearray()
    for kind, value in fields:
        if kind in ("b", "B"):
            out.append(value & 0xFF)
        elif kind == "u":
            out += u32(value)
        elif kind == "q":
            out += struct.pack(">Q", value & 0xFFFFFFFFFFFFFFFF)
        elif kind == "s":
            out += sshstr(value)
        else:
            out += value
    return bytes(out)


def mutate_string(rng: random.Random, value: bytes) -> tuple[str, bytes]:
    op = rng.randrange(9)
    if op == 0:
        return "s", b""
    if op == 1:
        return "s", rng.randbytes(rng.randint(1, 64))
    if op == 2:
        return "s", (value or b"A") * (rng.choice((64, 1024, 8192, 40000)) // max(1, len(value)) + 1)
    if op == 3:
        return "s", mutate_bytes(rng, value)
    if op == 4:
        return "s", rng.choice(DICTIONARY)
    if op == 5:
        return "s", value + rng.choice((b"\x00", b"\n", b"\xff", b"\r\n")) + rng.randbytes(4)
    if op == 6:  # a length that lies
        lie = rng.choice((len(value) + 1, len(value) - 1, len(value) + 1000, 0xFFFFFFFF, 0x7FFFFFFF, 0))
        return "r", u32(lie) + value
    if op == 7:
        return "s", value.replace(b",", b",,") + b","
    return "s", value[: rng.randrange(len(value) + 1)]


def mutate_fields(rng: random.Random, fields: Fields) -> bytes:
    """1-3 structure-aware mutations, sometimes byte-level ones on top."""
    fields = list(fields)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(10)
        i = rng.randrange(len(fields))
        kind, value = fields[i]
        if op <= 4:  # change one field's value
            if i == 0 and kind == "b":
                fields[0] = ("b", rng.choice(TYPES))
            elif kind == "u":
                fields[i] = ("u", rng.choice(INTERESTING32 + (rng.getrandbits(32), value + 1, value - 1)))
            elif kind == "q":
                fields[i] = ("q", rng.choice((0, 1, 2**63, 2**64 - 1, rng.getrandbits(64))))
            elif kind in ("b", "B"):
                fields[i] = (kind, rng.choice(INTERESTING8))
            elif kind == "s":
                fields[i] = mutate_string(rng, value)
            else:
                fields[i] = ("r", mutate_bytes(rng, value))
        elif op == 5 and len(fields) > 1 and i > 0:  # drop a field
            del fields[i]
        elif op == 6 and i > 0:  # truncate after a field
            del fields[i:]
        elif op == 7:  # duplicate a field
            fields.insert(i, fields[i])
        elif op == 8:  # trailing junk
            fields.append(("r", rng.choice((rng.randbytes(rng.randint(1, 32)), u32(0), b"\x00"))))
        else:  # swap two fields
            j = rng.randrange(len(fields))
            if i and j:
                fields[i], fields[j] = fields[j], fields[i]
    data = serialize(fields)
    if rng.random() < 0.3:
        data = mutate_bytes(rng, data, keep_first=1)
    return data or b"\x02"


def maybe_mutate(rng: random.Random, fields: Fields, p: float) -> tuple[bytes, bool]:
    if rng.random() < p:
        return mutate_fields(rng, fields), True
    return serialize(fields), False


def frame(payload: bytes, rng: random.Random | None = None) -> bytes:
    """The plaintext binary packet: length, padding length, payload, padding."""
    pad = 8 - (len(payload) + 5) % 8
    if pad < 4:
        pad += 8
    padding = rng.randbytes(pad) if rng else b"\x00" * pad
    return u32(len(payload) + pad + 1) + bytes([pad]) + payload + padding


# --- recording real client streams -------------------------------------------------

@dataclass
class Stream:
    """A client's plaintext start: its banner line and packet payloads up to NEWKEYS."""
    client: str
    banner: bytes
    payloads: list[bytes]


def parse_stream(client: str, data: bytes) -> Stream:
    end = data.index(b"\n") + 1
    banner, rest = data[:end], data[end:]
    payloads = []
    while len(rest) >= 5:
        length = struct.unpack(">I", rest[:4])[0]
        pad = rest[4]
        payload = rest[5:4 + length - pad]
        payloads.append(payload)
        rest = rest[4 + length:]
        if payload[:1] == b"\x15":  # NEWKEYS: what follows is encrypted
            break
    return Stream(client, banner, payloads)


def record_streams(server: Server, user) -> list[Stream]:
    """Log in once with the stock client and once with paramiko through a
    relay that keeps what the client sent."""
    streams = []
    for client in ("openssh", "paramiko"):
        relay = socket.socket()
        relay.bind(("127.0.0.1", 0))
        relay.listen(1)
        port = relay.getsockname()[1]
        captured = bytearray()

        def pump() -> None:
            conn, _ = relay.accept()
            upstream = socket.create_connection(("127.0.0.1", server.port))
            pairs = {conn: upstream, upstream: conn}
            try:
                while True:
                    ready, _, _ = select.select(list(pairs), [], [], 20)
                    if not ready:
                        return
                    for s in ready:
                        data = s.recv(65536)
                        if not data:
                            return
                        if s is conn:
                            captured.extend(data)
                        pairs[s].sendall(data)
            finally:
                conn.close()
                upstream.close()

        thread = threading.Thread(target=pump, daemon=True)
        thread.start()
        if client == "openssh":
            relayed = Server("privsep", port, server.workdir)
            result = ssh(relayed, user, "true", timeout=30)
            if result.returncode != 0:
                raise RuntimeError(f"recording the stock client failed: {result.stderr!r}")
        else:
            t = paramiko.Transport(socket.create_connection(("127.0.0.1", port)))
            t.start_client(timeout=20)
            t.auth_publickey(user.name, paramiko.Ed25519Key.from_private_key_file(str(user.key_path)))
            t.close()
        thread.join(30)
        relay.close()
        streams.append(parse_stream(client, bytes(captured)))
    return streams


# --- the cases ----------------------------------------------------------------------

class AlwaysSeen(dict):
    """channels_seen for the fuzzing client: a message for a channel it does
    not know is ignored, where paramiko would end the connection."""

    def __contains__(self, key) -> bool:
        return True


class Inbox:
    """Stands in for paramiko's client AuthHandler: every auth reply is queued."""

    def __init__(self) -> None:
        self.queue: queue.Queue = queue.Queue()
        self._handler_table = {t: self._handler(t) for t in (5, 6, 50, 51, 52, 53, 60, 61, 62, 63,
                                                             64, 65, 66)}

    def _handler(self, ptype: int):
        return lambda m: self.queue.put((ptype, m))

    def abort(self) -> None:
        pass

    def drain(self) -> list[int]:
        types = []
        while True:
            try:
                types.append(self.queue.get_nowait()[0])
            except queue.Empty:
                return types


@dataclass
class Outcome:
    inputs: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    logins: int = 0
    port: int = 0


class Hang(Exception):
    pass


class Case:
    """One connection: its own random source, its inputs counted by stage."""

    def __init__(self, fuzzer: "Fuzzer", index: int) -> None:
        self.f = fuzzer
        self.index = index
        self.rng = random.Random(f"{fuzzer.seed}:{index}")
        self.out = Outcome()
        self.sock: socket.socket | None = None
        self.t: paramiko.Transport | None = None

    def connect(self) -> socket.socket:
        self.sock = socket.create_connection(("127.0.0.1", self.f.server.port), timeout=15)
        self.out.port = self.sock.getsockname()[1]
        self.f.ports[self.out.port] = self.index
        return self.sock

    def run(self) -> Outcome:
        r = self.rng.random()
        try:
            if r < 0.30:
                self.raw_prekex()
            elif r < 0.38:
                self.post_kex(auth_inputs=0)
            elif r < 0.75:
                self.post_kex(auth_inputs=self.rng.randint(1, 25))
            else:
                self.session()
        except Hang as exc:
            self.out.failures.append(f"hang: {exc}")
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the daemon hung up: what it should do with bad input
        finally:
            if self.t is not None:
                self.t.close()
            if self.sock is not None:
                self.sock.close()
        return self.out

    # -- plaintext, before NEWKEYS --

    def raw_prekex(self) -> None:
        rng = self.rng
        stream = rng.choice(self.f.streams)
        units = [stream.banner] + [frame(p) for p in stream.payloads]
        names = ["banner"] + [f"kex-{p[0]}" for p in stream.payloads]
        target = rng.randrange(len(units))
        if target == 0:
            units[0] = mutate_bytes(rng, stream.banner) if rng.random() < 0.7 else \
                rng.choice((b"SSH-2.0-" + rng.randbytes(rng.randint(0, 300)) + b"\r\n",
                            b"".join(rng.randbytes(rng.randint(0, 80)) + b"\r\n" for _ in range(rng.randint(1, 40))) + stream.banner,
                            b"SSH-1.5-x\r\n", b"SSH-2.0-" + b"x" * 300 + b"\r\n", b"\r\n" * 5 + stream.banner))
        else:
            payload = stream.payloads[target - 1]
            if rng.random() < 0.8:
                units[target] = frame(self.mutate_payload(payload), rng)
            else:  # the framing itself
                units[target] = mutate_bytes(rng, units[target])
        keep = target + 1 if rng.random() < 0.5 else len(units)
        sock = self.connect()
        self.out.inputs[f"raw-{names[target]}"] += 1
        received = bytearray()
        try:
            received += sock.recv(4096)  # the server's banner first, as a client waits for it
            sock.sendall(b"".join(units[:keep]))
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                ready, _, _ = select.select([sock], [], [], 0.3)
                if not ready:
                    break
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except OSError:
            pass
        if b"Traceback" in received or b"Exception" in received:
            self.out.failures.append(f"raw-{names[target]}: the client was sent a traceback")

    def mutate_payload(self, payload: bytes) -> bytes:
        """A KEXINIT parsed into fields for structure-aware mutation; others byte-level."""
        rng = self.rng
        if payload[:1] == b"\x14" and rng.random() < 0.7:
            fields: Fields = [("b", 20), ("r", payload[1:17])]
            rest = payload[17:]
            for _ in range(10):
                n = struct.unpack(">I", rest[:4])[0]
                fields.append(("s", rest[4:4 + n]))
                rest = rest[4 + n:]
            fields += [("B", rest[0]), ("u", struct.unpack(">I", rest[1:5])[0])]
            return mutate_fields(rng, fields)
        if payload[:1] == b"\x1e" and rng.random() < 0.5:
            return mutate_fields(rng, [("b", 30), ("s", payload[5:])])
        return mutate_bytes(rng, payload, keep_first=1 if rng.random() < 0.7 else 0)

    # -- encrypted: a paramiko client sends the mutated messages --

    def start_transport(self) -> paramiko.Transport:
        t = paramiko.Transport(self.connect())
        t.channels_seen = AlwaysSeen()
        t.start_client(timeout=20)
        self.t = t
        return t

    def send(self, stage: str, data: bytes) -> None:
        self.out.inputs[stage] += 1
        if self.f.trace:
            print(f"case {self.index} {stage}: {data.hex()}", file=sys.stderr, flush=True)
        self.t._send_user_message(Message(data))

    def barrier(self, what: str, timeout: float = 20) -> bool:
        """A global request wanting a reply; False if the connection is gone,
        Hang if it is alive and silent."""
        t = self.t
        if not t.is_active():
            return False
        t.completion_event = threading.Event()
        m = Message()
        m.add_byte(paramiko.common.cMSG_GLOBAL_REQUEST)
        m.add_string("keepalive@openssh.com")
        m.add_boolean(True)
        try:
            t._send_user_message(m)
        except (OSError, EOFError, paramiko.SSHException):
            return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if t.completion_event.wait(0.05):
                return True
            if not t.is_active():
                return False
        raise Hang(f"no answer after {what} (case {self.index})")

    def post_kex(self, auth_inputs: int) -> None:
        rng = self.rng
        t = self.start_transport()
        inbox = Inbox()
        t.auth_handler = inbox
        service = [("b", 5), ("s", b"ssh-userauth")]
        data, mutated = maybe_mutate(rng, service, 1.0 if auth_inputs == 0 else 0.15)
        self.send("service-request" if mutated else "service-request-valid", data)
        if not self.barrier("service request"):
            return
        if 6 not in inbox.drain():
            return
        user = self.f.user
        password = user.password.encode()
        for _ in range(auth_inputs):
            method = rng.choice(("none", "password", "password", "pk-query", "pk-sig", "pk-sig",
                                 "kbdint", "kbdint"))
            base: Fields = [("b", 50), ("s", rng.choice((user.name.encode(), user.name.encode(), b"root", b"nosuchuser"))),
                            ("s", b"ssh-connection")]
            if method == "none":
                fields = base + [("s", b"none")]
            elif method == "password":
                secret = password if rng.random() < 0.5 else rng.randbytes(rng.randint(0, 20))
                fields = base + [("s", b"password"), ("B", 0), ("s", secret)]
                if rng.random() < 0.1:  # a password change request
                    fields = base + [("s", b"password"), ("B", 1), ("s", secret), ("s", b"new")]
            elif method == "pk-query":
                fields = base + [("s", b"publickey"), ("B", 0), ("s", b"ssh-ed25519"), ("s", self.f.keyblob)]
            elif method == "pk-sig":
                fields = self.signed_request(base, rng)
            else:
                fields = base + [("s", b"keyboard-interactive"), ("s", b""), ("s", b"")]
            data, mutated = maybe_mutate(rng, fields, 0.85)
            if method == "pk-sig" and mutated is False and rng.random() < 0.8:
                # fields mutated before signing: a good signature over bad data
                fields = self.signed_request(base, rng, mutate=True)
                data, mutated = serialize(fields), True
            self.send(f"userauth-{method}" + ("" if mutated else "-valid"), data)
            if not self.barrier(f"userauth {method}", timeout=30):
                return
            replies = inbox.drain()
            if 52 in replies:
                self.out.logins += 1
                return
            if method == "kbdint" and 60 in replies:
                answers = [password] if rng.random() < 0.5 else [rng.randbytes(8)]
                if rng.random() < 0.3:
                    answers = answers * rng.randint(0, 3)
                fields = [("b", 61), ("u", len(answers))] + [("s", a) for a in answers]
                data, mutated = maybe_mutate(rng, fields, 0.85)
                self.send("kbdint-response" + ("" if mutated else "-valid"), data)
                if not self.barrier("kbdint response", timeout=30):
                    return
                if 52 in inbox.drain():
                    self.out.logins += 1
                    return

    def signed_request(self, base: Fields, rng: random.Random, mutate: bool = False) -> Fields:
        key = self.f.key
        fields: Fields = base + [("s", b"publickey"), ("B", 1), ("s", b"ssh-ed25519"), ("s", self.f.keyblob)]
        if mutate:
            fields = [("b", 50)] + [(k, v) for k, v in fields[1:]]
            i = rng.randrange(1, len(fields))
            kind, value = fields[i]
            if kind == "s":
                fields[i] = mutate_string(rng, value)
            elif kind == "B":
                fields[i] = ("B", rng.choice(INTERESTING8))
        signed = sshstr(self.t.session_id) + serialize(fields)
        sig = key.sign_ssh_data(signed, "ssh-ed25519").asbytes()
        return fields + [("s", sig)]

    # -- logged in --

    def session(self) -> None:
        rng = self.rng
        t = self.start_transport()
        t.auth_publickey(self.f.user.name, self.f.key)
        self.out.logins += 1
        chan = t.open_session(timeout=20)
        start = rng.randrange(4)
        if start == 1:
            chan.exec_command("cat")
        elif start == 2:
            chan.get_pty()
            chan.invoke_shell()
        if not self.barrier("login"):
            return
        ch = chan.remote_chanid
        for _ in range(rng.randint(10, 200)):
            stage, fields = self.session_message(rng, ch)
            data, mutated = maybe_mutate(rng, fields, 0.85)
            self.send(stage + ("" if mutated else "-valid"), data)
            if rng.random() < 0.25 and not self.barrier(stage):
                return
            while chan.recv_ready():
                chan.recv(65536)
            while chan.recv_stderr_ready():
                chan.recv_stderr(65536)
        self.barrier("session end")

    def session_message(self, rng: random.Random, ch: int) -> tuple[str, Fields]:
        if rng.random() < 0.03:
            ch = rng.choice((ch + 1, 0, 1, 0xFFFFFFFF, rng.getrandbits(32)))
        home = str(self.f.user.home).encode()
        kind = rng.randrange(12)
        if kind == 0:
            types = [(b"session", []), (b"direct-tcpip", [("s", b"127.0.0.1"), ("u", 9), ("s", b"127.0.0.1"), ("u", 4444)]),
                     (b"direct-streamlocal@openssh.com", [("s", home + b"/nosock"), ("s", b""), ("u", 0)]),
                     (b"x11", [("s", b"127.0.0.1"), ("u", 6000)]), (b"auth-agent@openssh.com", []),
                     (b"forwarded-tcpip", [("s", b"127.0.0.1"), ("u", 1), ("s", b"127.0.0.1"), ("u", 2)]),
                     (b"tun@openssh.com", [("u", 1), ("u", 0)]), (b"bogus", [])]
            name, extra = rng.choice(types)
            return "channel-open", [("b", 90), ("s", name), ("u", rng.randrange(1000)), ("u", 2097152),
                                    ("u", 32768)] + extra
        if kind <= 4:
            requests = [
                (b"pty-req", [("s", b"xterm"), ("u", 80), ("u", 24), ("u", 0), ("u", 0),
                              ("s", b"\x01\x00\x00\x00\x03\x35\x00\x00\x96\x80\x00\x00\x96\x80\x00")]),
                (b"shell", []), (b"exec", [("s", rng.choice((b"true", b"echo fuzz", b"cat", b"exit 3")))]),
                (b"subsystem", [("s", b"sftp")]), (b"env", [("s", b"LANG"), ("s", b"C.UTF-8")]),
                (b"window-change", [("u", 100), ("u", 40), ("u", 0), ("u", 0)]),
                (b"signal", [("s", b"TERM")]), (b"break", [("u", 100)]),
                (b"x11-req", [("B", 0), ("s", b"MIT-MAGIC-COOKIE-1"), ("s", b"00" * 16), ("u", 0)]),
                (b"auth-agent-req@openssh.com", []), (b"keepalive@openssh.com", []),
                (b"eow@openssh.com", []), (b"exit-status", [("u", 0)]), (b"xon-xoff", [("B", 1)]),
                (b"bogus@example.com", [])]
            name, extra = rng.choice(requests)
            return "channel-request", [("b", 98), ("u", ch), ("s", name), ("B", rng.choice((0, 1)))] + extra
        if kind == 5:
            return "window-adjust", [("b", 93), ("u", ch), ("u", rng.choice((1, 32768, 2**31, 2**32 - 1)))]
        if kind == 6:
            return "channel-data", [("b", 94), ("u", ch), ("s", rng.randbytes(rng.choice((1, 16, 512, 4096))))]
        if kind == 7:
            return "channel-extended-data", [("b", 95), ("u", ch), ("u", 1), ("s", rng.randbytes(16))]
        if kind == 8:
            return "channel-eof-close", [("b", rng.choice((96, 97))), ("u", ch)]
        if kind == 9:
            requests = [(b"tcpip-forward", [("s", b"127.0.0.1"), ("u", 0)]),
                        (b"cancel-tcpip-forward", [("s", b"127.0.0.1"), ("u", 0)]),
                        (b"streamlocal-forward@openssh.com", [("s", home + b"/fuzz.sock")]),
                        (b"cancel-streamlocal-forward@openssh.com", [("s", home + b"/fuzz.sock")]),
                        (b"hostkeys-prove-00@openssh.com", [("s", self.f.hostkey_blob)]),
                        (b"no-more-sessions@openssh.com", []), (b"keepalive@openssh.com", []),
                        (b"bogus", [])]
            name, extra = rng.choice(requests)
            return "global-request", [("b", 80), ("s", name), ("B", rng.choice((0, 1)))] + extra
        if kind == 10:
            return "channel-reply", [("b", rng.choice((91, 92, 99, 100, 81, 82))), ("u", ch), ("u", 0),
                                     ("u", 32768), ("u", 32768)]
        return "other-message", [("b", rng.choice((2, 3, 4, 5, 50, 60, 61, 128, 192, 255))),
                                 ("s", rng.randbytes(8))]


# --- the run and the checks ----------------------------------------------------------

def mutated(stages: Counter) -> int:
    """The inputs: messages sent mutated (the valid ones between them not counted)."""
    return sum(n for stage, n in stages.items() if not stage.endswith("-valid"))


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def stale_utmp() -> set[tuple[int, str]]:
    """USER_PROCESS entries of /run/utmp whose pid is gone: (pid, line)."""
    out = subprocess.run(["utmpdump", "/run/utmp"], capture_output=True, text=True).stdout
    stale = set()
    for line in out.splitlines():
        parts = re.findall(r"\[([^\]]*)\]", line)
        if len(parts) >= 5 and parts[0].strip() == "7":
            pid = int(parts[1])
            if not os.path.exists(f"/proc/{pid}"):
                stale.add((pid, parts[4].strip()))
    return stale


def log_failures(text: str, ports: dict[int, int]) -> list[str]:
    """Each traceback or crash marker in the daemon's log, by its last line,
    with the cases whose port is named just before it."""
    lines = text.splitlines()
    found = []
    for i, line in enumerate(lines):
        if not any(marker in line for marker in LOG_MARKERS):
            continue
        # The daemon escapes newlines: a traceback is one line, its last
        # "\\n"-separated part the exception, its first the log text.
        parts = line.split("\\n")
        if len(parts) == 1 and "Traceback" in line:  # an unescaped one, from elsewhere
            end = i + 1
            while end < len(lines) and lines[end][:1] in (" ", "\t"):
                end += 1
            parts = [line] + ([lines[end]] if end < len(lines) else [])
        where = next((p.strip() for p in reversed(parts) if p.strip().startswith("File ")), "")
        summary = parts[0].strip() if len(parts) == 1 else f"{parts[-1].strip()} at {where}"
        summary = re.sub(r"port \d+", "port N", summary)
        cases = {ports[int(p)] for p in re.findall(r"port (\d+)", line) if int(p) in ports}
        found.append(f"log: {summary[:300]}" + (f" (near cases {sorted(cases)[:5]})" if cases else ""))
    return found


class Fuzzer:
    def __init__(self, server: Server, user, bystander_user, seed: int, workers: int = 12,
                 verbose: bool = True) -> None:
        self.server = server
        self.user = user
        self.bystander_user = bystander_user
        self.seed = seed
        self.workers = workers
        self.verbose = verbose
        self.key = paramiko.Ed25519Key.from_private_key_file(str(user.key_path))
        self.keyblob = self.key.asbytes()
        self.ports: dict[int, int] = {}
        self.streams: list[Stream] = []
        self.hostkey_blob = b""
        #: print every encrypted input sent (with --case, to see what one did)
        self.trace = False

    def prepare(self) -> None:
        self.streams = record_streams(self.server, self.user)
        t = paramiko.Transport(socket.create_connection(("127.0.0.1", self.server.port)))
        t.start_client(timeout=20)
        self.hostkey_blob = t.get_remote_server_key().asbytes()
        t.close()

    def run(self, count: int, cases: list[int] | None = None, max_seconds: float | None = None) -> dict:
        self.prepare()
        bystander = ssh_background(self.server, self.bystander_user, "cat", tty=False)
        failures: list[str] = []
        try:
            if not self._echo(bystander, b"before\n"):
                raise RuntimeError("the bystander's session does not answer")
            listener = self.server.pid
            wait_quiet(listener, None, timeout=30)
            baseline_procs = {p.pid for p in descendants(listener)}
            baseline_fds = fd_count(listener)
            baseline_utmp = stale_utmp()
            log_start = len(self.server.log_text())

            total, per_stage, logins = Counter(), Counter(), 0
            lock = threading.Lock()
            next_case = iter(cases) if cases is not None else iter(range(10**9))
            started = time.monotonic()
            deadline = started + max_seconds if max_seconds else None

            def worker() -> None:
                nonlocal logins
                while True:
                    with lock:
                        if mutated(total) >= count and cases is None:
                            return
                        if deadline and time.monotonic() > deadline:
                            return
                        index = next(next_case, None)
                    if index is None:
                        return
                    out = Case(self, index).run()
                    with lock:
                        total.update(out.inputs)
                        logins += out.logins
                        for failure in out.failures:
                            failures.append(f"{failure} [case {index}]")
                        n = mutated(total)
                        if self.verbose and n // 5000 != (n - mutated(out.inputs)) // 5000:
                            print(f"  {n} inputs, {n / (time.monotonic() - started):.0f}/s",
                                  file=sys.stderr, flush=True)

            threads = [threading.Thread(target=worker, daemon=True) for _ in range(self.workers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.monotonic() - started
            inputs = mutated(total)

            # -- after the run --
            if self.server.process.poll() is not None:
                failures.append("the listener died")
            else:
                if not wait_quiet(listener, baseline_procs, timeout=60):
                    left = [p for p in descendants(listener) if p.pid not in baseline_procs]
                    failures.append("leaked processes: " + "; ".join(f"{p.pid} {p.args}" for p in left[:10]))
                if not _wait(lambda: fd_count(listener) <= baseline_fds, 30):
                    failures.append(f"listener fds {baseline_fds} -> {fd_count(listener)}: "
                                    + " ".join(sorted(os.readlink(f"/proc/{listener}/fd/{fd}")
                                                      for fd in os.listdir(f"/proc/{listener}/fd"))))
                result = ssh(self.server, self.user, "echo", "ok", timeout=60)
                if result.returncode != 0 or result.stdout != b"ok\n":
                    failures.append(f"a login after the run failed: {result.returncode} {result.stderr!r}")
            if not _wait(lambda: not (stale_utmp() - baseline_utmp), 30):
                failures.append(f"stale utmp entries: {sorted(stale_utmp() - baseline_utmp)}")
            if not self._echo(bystander, b"after\n"):
                failures.append("the bystander's session no longer answers")
            failures += log_failures(self.server.log_text()[log_start:], self.ports)
        finally:
            bystander.kill()
            bystander.wait()
        distinct = sorted(Counter(re.sub(r" \[case \d+\]| \(near cases .*\)", "", f) for f in failures).items())
        return {"inputs": inputs, "seconds": elapsed, "rate": inputs / elapsed if elapsed else 0.0,
                "stages": dict(sorted(total.items())), "logins": logins,
                "failures": failures, "distinct": distinct}

    @staticmethod
    def _echo(client: subprocess.Popen, line: bytes, timeout: float = 15) -> bool:
        try:
            client.stdin.write(line)
            client.stdin.flush()
        except OSError:
            return False
        ready, _, _ = select.select([client.stdout], [], [], timeout)
        return bool(ready) and client.stdout.readline() == line


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def wait_quiet(listener: int, baseline: set[int] | None, timeout: float) -> bool:
    """Until the listener has no children but the baseline's (or, with no
    baseline, until the set stops changing)."""
    if baseline is None:
        last: list = []

        def steady() -> bool:
            nonlocal last
            now = sorted(p.pid for p in descendants(listener))
            same, last = now == last, now
            return same
        return _wait(steady, timeout)
    return _wait(lambda: {p.pid for p in descendants(listener)} <= baseline, timeout)


def report_line(result: dict) -> str:
    failures = "; ".join(f"{text} (x{n})" for text, n in result["distinct"]) or "none"
    return (f"fuzz: {result['inputs']} inputs in {result['seconds']:.1f} s "
            f"({result['rate']:.0f}/s), {result['logins']} logins; failures: {failures}")


def main(argv: list[str] | None = None) -> int:
    from tests.daemon import install_pam_service, remove_server, start_server
    from tests.userutil import create_user, remove_user

    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10000, help="inputs to send (default 10000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=12, help="connections at once (default 12)")
    parser.add_argument("--case", type=int, action="append", help="replay only this case (repeatable)")
    parser.add_argument("--max-seconds", type=float, default=None, help="stop sending after this long")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root (throwaway users, PAM, utmp)")
    install_pam_service()
    server = start_server("privsep", extra_config=FUZZ_CONFIG)
    user = create_user("fzz")
    bystander = create_user("fzb")
    try:
        print(f"fuzzing {' '.join(server.process.args)} on port {server.port}, seed {args.seed}, "
              f"{args.workers} workers; log {server.log_path}", file=sys.stderr, flush=True)
        fuzzer = Fuzzer(server, user, bystander, args.seed, args.workers)
        fuzzer.trace = bool(args.case)
        result = fuzzer.run(args.count, args.case, args.max_seconds)
        for stage, n in result["stages"].items():
            print(f"  {stage:32} {n}")
        for failure in result["failures"][:50]:
            print(f"  FAILURE {failure}")
        print(report_line(result))
        return 1 if result["failures"] else 0
    finally:
        kept = Path(f"/tmp/fuzz-seed{args.seed}.log")
        try:
            kept.write_bytes(server.log_path.read_bytes())
            print(f"daemon log kept in {kept}", file=sys.stderr)
        except OSError:
            pass
        remove_server(server)
        remove_user(user)
        remove_user(bystander)


if __name__ == "__main__":
    sys.exit(main())
