"""A small SIP event layer, sans-I/O: messages, non-INVITE transactions, RFC 6665
subscriptions (pure, `now` passed in), and thin asyncio transports (:mod:`.transport`).

pjsua2 is not used here: it cannot serve ``Event: dialog`` (2.15), answers presence
subscriptions with its own state first, and gives no hook for refreshes.
"""

from .message import (
    Message,
    NameAddr,
    Request,
    Response,
    SipParseError,
    StreamFramer,
    Via,
    new_branch,
    new_tag,
    parse_message,
    parse_name_addr,
    parse_via,
)
from .subscription import (
    Active,
    ClientSubscription,
    Failed,
    Local,
    Notified,
    ServerSubscription,
    Terminated,
    authorization,
    make_response,
)
from .transaction import Deliver, Send, TimedOut, TransactionLayer

__all__ = [
    "Message", "NameAddr", "Request", "Response", "SipParseError", "StreamFramer", "Via",
    "new_branch", "new_tag", "parse_message", "parse_name_addr", "parse_via",
    "Active", "ClientSubscription", "Failed", "Local", "Notified", "ServerSubscription",
    "Terminated", "authorization", "make_response",
    "Deliver", "Send", "TimedOut", "TransactionLayer",
]
