"""Adapters for notifying citizens: email through SMTP, SMS through an SMS gateway."""

from hub.adapters.notify.email import EmailSender
from hub.adapters.notify.sms import SmsClient

__all__ = ["EmailSender", "SmsClient"]
