"""Alert mail over SMTP (``aiosmtplib``), to the server in ``LECTR_SMTP_URL``.

Errors come back as ``DeliveryError`` with a one-line reason that names the server as
``smtp://user@host:port``: the password is never in a message, a log line or the database.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from lectr.settings.alerts import SmtpServer

TIMEOUT_SECONDS = 15.0


class DeliveryError(Exception):
    """A delivery that failed; the message is safe to log and store. ``permanent``: trying again
    cannot help, so the delivery fails for good at once."""

    permanent = False


def _scrub(text: str, server: SmtpServer) -> str:
    text = " ".join(str(text).split())
    if server.password:
        text = text.replace(server.password, "***")
    return text[:300]


def build_message(*, sender: str, recipient: str, subject: str, body: str, message_id: str | None = None
                  ) -> EmailMessage:
    """A plain-text mail. ``message_id``: a stable id, so a mail re-sent after a crash is the
    same message to the receiving side (mail clients fold duplicates by Message-ID)."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = subject
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = message_id or make_msgid(domain=sender.rpartition("@")[2] or "lectr")
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to an alert
    msg.set_content(body)
    return msg


async def send_email(server: SmtpServer | None, message: EmailMessage, *,
                     timeout: float = TIMEOUT_SECONDS) -> None:
    """Send ``message`` through ``server``; DeliveryError (password-free) on any failure."""
    if server is None:
        raise DeliveryError("email is not configured on this Lectr: set LECTR_SMTP_URL")
    import aiosmtplib

    try:
        await aiosmtplib.send(message, hostname=server.host, port=server.port, use_tls=server.use_tls,
                              username=server.username, password=server.password, timeout=timeout)
    except aiosmtplib.SMTPException as exc:
        raise DeliveryError(f"{server.display}: {_scrub(exc, server)}") from None
    except OSError as exc:
        raise DeliveryError(f"{server.display}: {_scrub(exc.strerror or exc, server)}") from None
