"""Action-Mailer-style mailers, delivered by jobs on the `mailers` queue."""

from jobkit.mailer.attachments import Attachment as Attachment
from jobkit.mailer.base import Mailer as Mailer
from jobkit.mailer.base import MessageDelivery as MessageDelivery
from jobkit.mailer.base import deliver_all_later as deliver_all_later
from jobkit.mailer.callbacks import after_action as after_action
from jobkit.mailer.callbacks import after_deliver as after_deliver
from jobkit.mailer.callbacks import around_action as around_action
from jobkit.mailer.callbacks import around_deliver as around_deliver
from jobkit.mailer.callbacks import before_action as before_action
from jobkit.mailer.callbacks import before_deliver as before_deliver
from jobkit.mailer.callbacks import rescue_from as rescue_from
from jobkit.mailer.delivery import deliveries as deliveries
from jobkit.mailer.delivery import register_interceptor as register_interceptor
from jobkit.mailer.delivery import register_observer as register_observer
from jobkit.mailer.errors import DeliveryError as DeliveryError
from jobkit.mailer.errors import HeaderInjectionError as HeaderInjectionError
from jobkit.mailer.errors import InvalidAddressError as InvalidAddressError
from jobkit.mailer.errors import InvalidHeaderError as InvalidHeaderError
from jobkit.mailer.errors import MailerError as MailerError
from jobkit.mailer.errors import MissingRecipientError as MissingRecipientError
from jobkit.mailer.errors import PermanentDeliveryError as PermanentDeliveryError
from jobkit.mailer.errors import TemplateError as TemplateError
from jobkit.mailer.errors import TemplateMissingError as TemplateMissingError
from jobkit.mailer.errors import TransientDeliveryError as TransientDeliveryError
from jobkit.mailer.i18n import with_locale as with_locale
from jobkit.mailer.job import MailDeliveryJob as MailDeliveryJob
from jobkit.mailer.previews import Preview as Preview

__all__ = [
    "Attachment",
    "DeliveryError",
    "HeaderInjectionError",
    "InvalidAddressError",
    "InvalidHeaderError",
    "MailDeliveryJob",
    "Mailer",
    "MailerError",
    "MessageDelivery",
    "MissingRecipientError",
    "PermanentDeliveryError",
    "Preview",
    "TemplateError",
    "TemplateMissingError",
    "TransientDeliveryError",
    "after_action",
    "after_deliver",
    "around_action",
    "around_deliver",
    "before_action",
    "before_deliver",
    "deliver_all_later",
    "deliveries",
    "register_interceptor",
    "register_observer",
    "rescue_from",
    "with_locale",
]
