"""Email: templates (plain text + HTML, Jinja2) and the SMTP sender.

`render(template, to, **values)` builds the message from `templates/email/<template>.*`
(subject, text, html); `Mailer.send` hands it to `SMTP_URL`, or, in development without
one, writes it to the log. Sending blocks (smtplib), so it runs on a thread: the worker's
event loop keeps delivering webhooks meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import socket
import ssl
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import unquote, urlsplit

import jinja2

from shopapi.config import Settings

log = logging.getLogger("shopapi.email")

TEMPLATES = Path(__file__).resolve().parent.parent / "templates" / "email"
SMTP_TIMEOUT = 8.0  # seconds; under the 10 s idle-in-transaction limit of the claim that waits
_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,  # a missing value is a bug, not an empty string
    keep_trailing_newline=True,
)


def money(cents: int, currency: str) -> str:
    """1999, "USD" -> "19.99 USD" (integer arithmetic: cents never pass through a float)."""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}{whole}.{part:02d} {currency}"


_ENV.globals["money"] = money


def render(template: str, *, sender: str, to: str, **values: object) -> EmailMessage:
    """The email `template` for `to`: subject, plain text and an HTML alternative."""
    subject = _ENV.get_template(f"{template}.subject.txt").render(values).strip()
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = to
    message["X-Shopapi-Template"] = template
    message.set_content(_ENV.get_template(f"{template}.txt").render(values))
    message.add_alternative(_ENV.get_template(f"{template}.html").render(values), subtype="html")
    return message


class Mailer:
    """Sends through SMTP_URL: `smtp://` (STARTTLS when the server offers it) or `smtps://`
    (TLS from the first byte), with `user:password@` when the server wants a login."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.email_enabled
        self.sender = settings.email_from
        # the scheme was checked by Settings.validate
        self.url = urlsplit(settings.smtp_url) if settings.smtp_url else None
        # the EHLO name, looked up once: smtplib would ask socket.getfqdn() per connection
        # (a DNS round trip, 0.2 s here), which capped a worker at a few emails a second
        self.helo = socket.getfqdn() if self.url else "localhost"

    def render(self, template: str, *, to: str, **values: object) -> EmailMessage:
        return render(template, sender=self.sender, to=to, **values)

    async def send(self, message: EmailMessage) -> None:
        """Hand the message over; raises (OSError, smtplib.SMTPException) when it was not."""
        if not self.enabled:
            log.info("email disabled, not sent: %s to %s", message["Subject"], message["To"])
        elif self.url is None:
            log.info("email (no SMTP_URL, logged only):\n%s", message.as_string())
        else:
            await asyncio.to_thread(self._send, message)

    def _send(self, message: EmailMessage) -> None:
        url = self.url
        assert url is not None
        host = url.hostname or "localhost"
        if url.scheme == "smtps":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                host,
                url.port or 465,
                local_hostname=self.helo,
                timeout=SMTP_TIMEOUT,
                context=ssl.create_default_context(),
            )
        else:
            smtp = smtplib.SMTP(
                host, url.port or 25, local_hostname=self.helo, timeout=SMTP_TIMEOUT
            )
        with smtp:
            smtp.ehlo()
            if url.scheme == "smtp" and smtp.has_extn("starttls"):
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if url.username:
                smtp.login(unquote(url.username), unquote(url.password or ""))
            smtp.send_message(message)
