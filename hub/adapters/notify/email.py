"""Email through real SMTP (smtplib): explicit timeout, STARTTLS when asked, the event id as Message-ID (so a
resend after a crash can be recognised), errors translated at the boundary."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from hub.adapters.errors import PeerAuthFailed, PeerError, PeerRejected, PeerTimeout, PeerUnavailable

PEER = "email"


class EmailSender:
    def __init__(
        self, host: str, port: int, *, sender: str, timeout: float = 10.0, starttls: bool = False,
        username: str | None = None, password: str | None = None, tls: ssl.SSLContext | None = None,
    ) -> None:  # fmt: skip
        self.host, self.port, self.sender = host, port, sender
        self.timeout, self.starttls = timeout, starttls
        self._tls = tls
        self._username, self._password = username, password

    def send(self, to: str, subject: str, body: str, *, message_key: str) -> str:
        msg = EmailMessage()
        msg["From"] = self.sender
        try:
            msg["To"] = to
        except ValueError:  # a line break in it (another header after it): never sent, not worth retrying
            raise PeerRejected(
                PEER, "the recipient address is not one address", code="email_recipient_invalid"
            ) from None
        msg["Subject"] = subject
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = make_msgid(idstring=message_key.replace(":", "."), domain="hub.local")
        msg.set_content(body, charset="utf-8")
        with self._session() as smtp:
            smtp.send_message(msg)
        return str(msg["Message-ID"])

    def check(self) -> str:
        """Connect as a send does — STARTTLS when set, signed in when a user name is — and send nothing: what
        `hub check` says of the relay. Raises as `send` would (PeerAuthFailed for credentials refused)."""
        with self._session():
            pass
        how = " with STARTTLS" if self.starttls else ""
        return f"{self.host}:{self.port}{how}: " + (f"signed in as {self._username}" if self._username else "connected")

    @contextmanager
    def _session(self) -> Iterator[smtplib.SMTP]:
        """An SMTP session ready to send, its failures translated at the boundary."""
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls(context=self._tls or ssl.create_default_context())
                if self._username:
                    smtp.login(self._username, self._password or "")
                yield smtp
        except TimeoutError:
            raise PeerTimeout(PEER, "SMTP timed out") from None
        except smtplib.SMTPAuthenticationError as exc:  # the relay's configuration, not this message: it waits
            raise PeerAuthFailed(
                PEER, f"SMTP {exc.smtp_code}: the relay refused HUB_SMTP_USERNAME / HUB_SMTP_PASSWORD"
            ) from None
        except smtplib.SMTPRecipientsRefused:
            raise PeerRejected(PEER, "the recipient address was refused", code="email_recipient_refused") from None
        except smtplib.SMTPResponseException as exc:
            if 500 <= exc.smtp_code < 600:
                raise PeerRejected(PEER, f"SMTP {exc.smtp_code}", code="email_rejected") from None
            raise PeerError(PEER, f"SMTP {exc.smtp_code}", code="email_failed") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise PeerUnavailable(PEER, f"SMTP: {exc.__class__.__name__}") from None
