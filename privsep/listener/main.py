"""privsep-sshd's command line: sshd(8)'s flags, start-up checks, then the listener.

Runs as root.  Everything a connection will need is imported before any
fork (listener.py imports the monitor, which imports the net-child and the
session process), so that each monitor starts warm and the net-child has all
its code loaded before it loses access to the file system.
"""

from __future__ import annotations

# First, before anything imports paramiko: what the daemon never imports.
from privsep.listener import lean  # noqa: F401  (import for its effect)

import dataclasses
import logging
import os
import pwd
import sys

from privsep.child import umac
from privsep.common import log as logsetup
from privsep.config import penalties, servconf
from privsep.config.match import ConnectionInfo
from privsep.listener import cmdline, generation, hostkey_files, inetd, listener
from privsep.monitor import hostkeys, loginrec
from privsep.monitor.accounts import user_groups
from privsep.signer import agent_signer
from privsep.wire.hostkey_blobs import HostKey

log = logging.getLogger("privsep.sshd")


def load_config(args: cmdline.CommandLine) -> servconf.ServerConfig:
    overrides = list(args.overrides)
    level = args.log_level_override()
    if level is not None:
        overrides.insert(0, level)
    return servconf.parse_config(args.config, overrides, lambda: _redirect_log(args),
                                 args.ports_from_cmdline)


def _redirect_log(args: cmdline.CommandLine) -> None:
    """What sshd does once its flags and -o lines are read (their errors
    went to stderr), before it reads its file: -E's file opened (0600),
    the log sent there from now on (the file's errors included), and -C
    refused without -T."""
    if args.logfile is not None:
        try:
            os.close(os.open(args.logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        except OSError as exc:
            error = servconf.ConfigErrorExit1(f"Couldn't open logfile {args.logfile}: "
                                              f"{exc.strerror}")
            error.on_stderr = True
            raise error from None
        logsetup.setup("INFO", stderr=True, logfile=args.logfile)
    if args.conn_spec and not args.dump:
        raise servconf.ConfigError("Config test connection parameter (-C) provided without "
                                   "test mode (-T)")


def prepare(options: servconf.ServerOptions) -> list[HostKey]:
    """Start-up checks and set-up; returns the host keys (public halves)."""
    try:  # the umac MACs are offered by default: their library must be there
        umac.require()
    except umac.NettleMissing as exc:
        raise SystemExit(f"fatal: {exc}")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(options.privsep_user)
        except KeyError:
            raise SystemExit(f"Privilege separation user {options.privsep_user} does not exist")
        os.makedirs(options.privsep_dir, mode=0o755, exist_ok=True)
        st = os.stat(options.privsep_dir)
        if st.st_uid != 0 or st.st_mode & 0o022 or os.listdir(options.privsep_dir):
            raise SystemExit(f"{options.privsep_dir} must be owned by root, not group or "
                             "world-writable, and empty")
        for path in hostkey_files.generate_missing(options.host_key):
            log.info("Generated host key %s", path)
        try:
            loginrec.ensure_utmp()
        except OSError as exc:
            log.error("Cannot create utmp: %s", exc)
    agent_problem = agent_signer.configure(options.host_key_agent)
    if agent_problem:
        log.error("%s", agent_problem)
    keys, problems = hostkeys.read_host_keys(options.host_key, options.host_certificate,
                                             options.required_rsa_size)
    for problem in problems:
        log.error("%s", problem)
    if not keys:
        raise SystemExit("sshd: no hostkeys available -- exiting.")
    return keys


def unprivileged(options: servconf.ServerOptions) -> servconf.ServerOptions:
    """Started by an ordinary user: serve that user alone, with keys only, as
    sshd does when it is not root (no PAM, no setuid, no chroot)."""
    me = pwd.getpwuid(os.geteuid()).pw_name
    log.info("Not running as root: serving only user %s, public keys only, without PAM, "
             "login records or a privilege-separation user.", me)
    return servconf.replace(options, use_pam=False, password_authentication=False,
                            kbd_interactive_authentication=False, allow_users=[me],
                            privsep_user="", privsep_dir="")

def daemonize() -> None:
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.chdir("/")


def main(argv: list[str] | None = None) -> int:
    # The listener's title shows the command line as sshd's does
    # ("sshd: /usr/sbin/sshd -D [listener] ..."): the program as invoked.
    program = sys.argv[0] if argv is None and not sys.argv[0].endswith(".py") else "privsep-sshd"
    argv = sys.argv[1:] if argv is None else argv
    reexec = os.environ.pop(listener.REEXEC_ENV, None) is not None
    args = cmdline.parse(argv)
    if args.version:
        print(cmdline.version_line(), file=sys.stderr)
        return 0
    # Nothing whoever started us had open may reach a monitor, a net-child or
    # a user's session (sshd closes everything above stderr too).
    os.closerange(3, 65536)
    logging.basicConfig(format="%(message)s", level=logging.INFO)  # until log.setup
    if args.refusal is not None:  # the -o lines before the bad flag come first
        try:
            servconf.parse_config("none", args.overrides)
        except servconf.ConfigError as exc:
            print(exc, file=sys.stderr)
            return exc.exit_status
        sys.stderr.write(args.refusal.text)
        return args.refusal.status
    spec = ConnectionInfo.from_spec(",".join(args.conn_spec)) if args.conn_spec else None
    try:
        config = load_config(args)
        config.default_generation = generation.installed()  # ProcessGeneration unset
        options = config.global_options()
        if spec is not None:
            if spec.user is not None:
                spec = dataclasses.replace(spec, groups=user_groups(spec.user))
            options = config.options_for(spec)
    except servconf.ConfigError as exc:
        if exc.on_stderr:
            print(exc, file=sys.stderr)
            return exc.exit_status
        return _fatal(str(exc), exc.exit_status)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 255
    if args.operands:  # sshd looks once its configuration is read
        print(f"Extra argument {args.operands[0]}.", file=sys.stderr)
        return 1
    if args.test or args.dump:
        # a missing key start-up will make is no problem; any other missing
        # one is sshd's "Unable to load host key" line, skipped as sshd does
        checked = [p for p in options.host_key if not hostkey_files.made_at_start(p)]
        keys, problems = [None], []
        if os.geteuid() == 0:
            agent_problem = agent_signer.configure(options.host_key_agent)
            if agent_problem:  # logged, as sshd: the keys' own files may still do
                log.error("%s", agent_problem)
            if checked:
                keys, problems = hostkeys.read_host_keys(checked, options.host_certificate,
                                                         options.required_rsa_size)
        for problem in problems:
            log.error("%s", problem)
        if not keys:  # sshd skips the keys it cannot load, and fails only without any
            return _fatal("sshd: no hostkeys available -- exiting.", 1)
        if args.dump:
            sys.stdout.write(servconf.dump(options))
        return 0
    logsetup.setup(options.log_level, options.syslog_facility,
                   stderr=args.stderr or bool(args.debug), logfile=args.logfile)
    # sshd 9.2 has no PerSourcePenalties: generation 9 reads it and says so
    for where, name in penalties.unused_lines(config.settings, options.process_generation):
        log.error("%s: Unsupported option %s", where, name)
    if os.geteuid() != 0:
        options = unprivileged(options)
        config = None  # Match blocks could undo the one-user rule
    try:
        keys = prepare(options)
    except SystemExit as exc:
        log.error("%s", exc.code)
        return 255
    if args.inetd:
        return inetd.serve(options, keys, config)
    if not (args.foreground or args.debug or reexec):
        daemonize()
    try:
        with open(options.pid_file, "w") as handle:
            handle.write(f"{os.getpid()}\n")
    except OSError as exc:
        log.error("Couldn't create pid file \"%s\": %s", options.pid_file, exc)
    argv_text = " ".join([program, *argv])
    try:
        listener.run(options, keys, argv_text, one_shot=bool(args.debug), config=config)
    except OSError as exc:
        log.critical("fatal: %s", exc)
        return 255
    finally:
        _remove_pid_file(options.pid_file)
    return 0


def _fatal(text: str, status: int = 255) -> int:
    """An error of sshd's start-up after its log_init: logged, a line each
    (to -E's file if given, else stderr); the exit status."""
    for line in text.splitlines():
        log.error("%s", line)
    return status


def _remove_pid_file(path: str) -> None:
    """As sshd on SIGTERM: the PidFile goes with the listener (scripts wait
    for it to go), unless it names another process by now."""
    try:
        with open(path) as handle:
            if handle.read().strip() != str(os.getpid()):
                return
        os.unlink(path)
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
