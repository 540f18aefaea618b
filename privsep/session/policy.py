"""What the configuration and the authorized_keys line allow a session:
ForceCommand and command=, PermitTTY and no-pty, no-x11-forwarding, SetEnv, environment= and
~/.ssh/environment (PermitUserEnvironment), PrintMotd and PrintLastLog.

Used by the session process (the user's rights): pure decisions, plus reading
files the user may read anyway.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass

from privsep.config.match import match_pattern_list
from privsep.config.servconf import ServerOptions
from privsep.session.forward import ForwardRules

#: Key options that "restrict" turns off and their yes-forms turn back on.
_RESTRICTABLE = ("pty", "port-forwarding", "agent-forwarding", "x11-forwarding", "user-rc")


@dataclass(frozen=True)
class SessionPolicy:
    options: ServerOptions
    #: the KeyOption tuple of the authorized_keys line used, if any
    key_options: tuple = ()

    def _key_option(self, name: str):
        return next((o for o in self.key_options if o.name == name), None)

    def key_permits(self, what: str) -> bool:
        """An authorized_keys capability (pty, port-forwarding, ...) after the
        line's flags, read left to right as sshd does: X and no-X set it,
        restrict clears every restrictable one where it stands."""
        permitted = True
        for option in self.key_options:
            if option.name == "restrict" and what in _RESTRICTABLE:
                permitted = False
            elif option.name == what:
                permitted = True
            elif option.name == f"no-{what}":
                permitted = False
        return permitted

    def forward_rules(self) -> ForwardRules:
        """sshd_config's forwarding rules narrowed by the key's options
        (no-port-forwarding, restrict, permitopen=, permitlisten=)."""
        rules = ForwardRules.from_options(self.options)
        rules.key_permits_forwarding = self.key_permits("port-forwarding")
        for name, attr in (("permitopen", "key_permit_open"), ("permitlisten", "key_permit_listen")):
            values = [o.value for o in self.key_options if o.name == name and o.value]
            if values:
                setattr(rules, attr, values)
        return rules

    def agent_allowed(self) -> bool:
        return self.options.allow_agent_forwarding and self.key_permits("agent-forwarding")

    def x11_key_permitted(self) -> bool:
        """no-x11-forwarding (or restrict, or a certificate without
        permit-X11-forwarding) refuses X11 whatever sshd_config says."""
        return self.key_permits("x11-forwarding")

    def pty_allowed(self) -> bool:
        return self.options.permit_tty and self.key_permits("pty")

    def user_rc_allowed(self, subsystem: bool) -> bool:
        """~/.ssh/rc may run (sshd's do_rc_files): not for a subsystem or a
        ForceCommand, and only as PermitUserRC and the key (no-user-rc) allow."""
        return (not subsystem and self.options.force_command.lower() == "none"
                and self.options.permit_user_rc and self.key_permits("user-rc"))

    def forced_command(self) -> str | None:
        """ForceCommand wins over the key's command=, as in sshd."""
        if self.options.force_command.lower() != "none":
            return self.options.force_command
        option = self._key_option("command")
        return option.value if option is not None else None

    def _env_allowed(self, name: str) -> bool:
        """PermitUserEnvironment: yes, no, or a pattern list of names."""
        setting = self.options.permit_user_environment
        if setting in ("yes", "no"):
            return setting == "yes"
        return match_pattern_list(name, setting)

    def _key_environment(self) -> dict[str, str]:
        """environment= options; sshd keeps the first of a repeated name."""
        env: dict[str, str] = {}
        for option in self.key_options:
            if option.name == "environment" and option.value and "=" in option.value:
                name, _, value = option.value.partition("=")
                env.setdefault(name, value)
        return env

    @staticmethod
    def _environment_file(pw: pwd.struct_passwd) -> dict[str, str]:
        """~/.ssh/environment as sshd reads it: leading blanks and # comments
        skipped, lines without '=' ignored, a later line replaces."""
        env: dict[str, str] = {}
        try:
            with open(os.path.join(pw.pw_dir, ".ssh", "environment"), encoding="utf-8",
                      errors="surrogateescape", newline="") as handle:
                for raw in handle:
                    line = raw.lstrip(" \t").rstrip("\n")
                    if line and not line.startswith("#") and "=" in line:
                        name, _, value = line.partition("=")
                        env[name] = value
        except OSError:
            pass
        return env

    def extra_environment(self, pw: pwd.struct_passwd,
                          pam_env: dict[str, str] | None = None) -> dict[str, str]:
        """In session.c's order, each replacing what came before: the key's
        environment=, then ~/.ssh/environment (both only as
        PermitUserEnvironment allows), then ``pam_env`` (what PAM set), then
        SetEnv, which the admin's configuration makes win; the first SetEnv
        of a name counts."""
        env: dict[str, str] = {}
        if self.options.permit_user_environment != "no":
            for source in (self._key_environment(), self._environment_file(pw)):
                env.update((k, v) for k, v in source.items() if self._env_allowed(k))
        env.update(pam_env or {})
        admin: dict[str, str] = {}
        for assignment in self.options.set_env:
            name, _, value = assignment.partition("=")
            admin.setdefault(name, value)
        env.update(admin)
        return env

    def login_banner(self, pam_messages: tuple[str, ...], last_login: str) -> str:
        """What a login shell shows before its prompt: PAM's messages (the
        motd from pam_motd), /etc/motd with PrintMotd, then the last login."""
        lines = list(pam_messages)
        if self.options.print_motd:
            try:
                with open("/etc/motd", encoding="utf-8", errors="replace") as handle:
                    lines.append(handle.read().rstrip("\n"))
            except OSError:
                pass
        if last_login:
            lines.append(last_login)
        return "".join(f"{line}\n" for line in lines)
