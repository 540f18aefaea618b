"""What the configuration and the authorized_keys line allow a session:
ForceCommand and command=, PermitTTY and no-pty, SetEnv, environment= and
~/.ssh/environment (PermitUserEnvironment), PrintMotd and PrintLastLog.

Used by the session process (the user's rights): pure decisions, plus reading
files the user may read anyway.
"""

from __future__ import annotations

import fnmatch
import os
import pwd
from dataclasses import dataclass

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
        """An authorized_keys capability (pty, port-forwarding, ...) after
        restrict / no-X / X options."""
        if self._key_option(f"no-{what}") is not None:
            return False
        if self._key_option("restrict") is not None:
            return self._key_option(what) is not None
        return True

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

    def pty_allowed(self) -> bool:
        return self.options.permit_tty and self.key_permits("pty")

    def forced_command(self) -> str | None:
        """ForceCommand wins over the key's command=, as in sshd."""
        if self.options.force_command.lower() != "none":
            return self.options.force_command
        option = self._key_option("command")
        return option.value if option is not None else None

    def _env_allowed(self, name: str) -> bool:
        setting = self.options.permit_user_environment
        if setting == "yes":
            return True
        if setting == "no":
            return False
        return any(fnmatch.fnmatchcase(name, p) for p in setting.split(","))

    def extra_environment(self, pw: pwd.struct_passwd) -> dict[str, str]:
        """SetEnv, then ~/.ssh/environment and environment= (PermitUserEnvironment)."""
        env: dict[str, str] = {}
        for assignment in self.options.set_env:
            name, _, value = assignment.partition("=")
            env.setdefault(name, value)
        user_env: dict[str, str] = {}
        if self.options.permit_user_environment != "no":
            try:
                with open(os.path.join(pw.pw_dir, ".ssh", "environment"), encoding="utf-8") as f:
                    for line in f:
                        line = line.strip()
                        if line and not line.startswith("#") and "=" in line:
                            name, _, value = line.partition("=")
                            user_env[name] = value
            except OSError:
                pass
            for option in self.key_options:
                if option.name == "environment" and option.value and "=" in option.value:
                    name, _, value = option.value.partition("=")
                    user_env[name] = value
        env.update({k: v for k, v in user_env.items() if self._env_allowed(k)})
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
