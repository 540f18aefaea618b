"""Keyboard-interactive through PAM, in the monitor (root).

pam_authenticate drives its conversation by calling back for answers, but
the answers come from the client one SSH round-trip later.  So PAM runs in a
helper thread of the monitor, and each callback becomes a query that the
monitor relays to the net-child, which relays it to the client.  The thread
exists only while a conversation is open: the monitor aborts it before doing
anything that needs to be single-threaded (reading authorized_keys with the
user's rights).

Its end is told as sshd's sshpam_query tells it: a success (or a failure
with PAM messages to show) is one more INFO_REQUEST, without prompts, and
the verdict comes with the client's empty answer; a bare failure is
logged at once ("PAM: Authentication failure for alice from 10.0.0.1").
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field

from privsep.monitor import auth_pam

log = logging.getLogger("privsep.monitor")

#: How long the monitor waits for PAM to produce its next step.  PAM's own
#: failure delay is about two seconds; a stack that hangs longer is broken.
STEP_TIMEOUT = 60.0


@dataclass
class KbdintStep:
    """A query to relay (``done`` False) or the conversation's end."""

    done: bool
    success: bool = False
    instruction: str = ""
    prompts: list[str] = field(default_factory=list)
    echo: bytes = b""
    #: PAM's words for a failure (pam_strerror), once done
    error: str = ""


class KbdintConversation:
    def __init__(self, pam: auth_pam.PamLogin, valid: bool = True) -> None:
        self._pam = pam
        #: whom sshd's failure line names: "[illegal user ]USER from RHOST"
        self._who = (f"{'' if valid else 'illegal user '}{pam.user} from "
                     f"{pam.get_item(auth_pam.PAM_RHOST) or ''}")
        #: the conversation's end, held back for its empty round
        self._verdict: KbdintStep | None = None
        self._answers: queue.Queue[list[str] | None] = queue.Queue()
        self._steps: queue.Queue[KbdintStep] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="pam-kbdint", daemon=True)
        self._pending_info: list[str] = []
        self._expected = 0

    def _run(self) -> None:
        result = self._pam.authenticate(self._converse)
        info = "\n".join(self._pending_info)
        self._steps.put(KbdintStep(done=True, success=result.ok, instruction=info,
                                   error=result.message))

    def _converse(self, prompts: list[auth_pam.PamPrompt]) -> list[str] | None:
        questions = [p for p in prompts
                     if p.style in (auth_pam.PAM_PROMPT_ECHO_OFF, auth_pam.PAM_PROMPT_ECHO_ON)]
        messages = [p.text for p in prompts if p not in questions]
        if not questions:
            # PAM_TEXT_INFO / PAM_ERROR_MSG only: shown with the next query.
            self._pending_info.extend(messages)
            return [""] * len(prompts)
        instruction = "\n".join(self._pending_info + messages)
        self._pending_info = []
        self._steps.put(KbdintStep(
            done=False, instruction=instruction, prompts=[q.text for q in questions],
            echo=bytes(q.style == auth_pam.PAM_PROMPT_ECHO_ON for q in questions)))
        answers = self._answers.get()
        if answers is None or len(answers) != len(questions):
            return None  # aborted, or the client answered the wrong number
        replies = iter(answers)
        return [next(replies) if p in questions else "" for p in prompts]

    def _next(self) -> KbdintStep:
        try:
            return self._settle(self._steps.get(timeout=STEP_TIMEOUT))
        except queue.Empty:
            self.abort()
            return KbdintStep(done=True)

    def _settle(self, step: KbdintStep) -> KbdintStep:
        """The step to relay: PAM's end becomes an empty query first when
        it succeeded or left messages (kept for the next ``respond``), as
        in sshd, which answers the client's password with a query of no
        prompts and decides on the answer to that."""
        if not step.done:
            return step
        if step.success or step.instruction:
            self._verdict = step
            # a success's messages are shown after login, not here
            return KbdintStep(done=False, instruction="" if step.success else step.instruction)
        log.error("PAM: %s for %s", step.error, self._who)
        return step

    def begin(self) -> KbdintStep:
        self._thread.start()
        return self._next()

    def respond(self, answers: list[str]) -> KbdintStep:
        if self._verdict is not None:  # the empty round's answer: PAM is done
            verdict, self._verdict = self._verdict, None
            return verdict
        self._answers.put(list(answers))
        return self._next()

    def abort(self) -> None:
        """End the conversation (PAM sees a conversation error) and the thread."""
        if self._thread.is_alive():
            self._answers.put(None)
            self._thread.join(STEP_TIMEOUT)
