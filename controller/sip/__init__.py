"""A SIP stack on asyncio (RFC 3261): messages, transports, transactions, dialogs, INVITE sessions
and digest authentication. It knows nothing of calls or media: `controller/pstn/` builds the PSTN
call logic on it, and imports it, never the other way round."""
from controller.sip.errors import (
    SipError, SipParseError, SipReject, SipStatusError, SipTimeout, SipTransportError,
)
from controller.sip.session import InviteSession
from controller.sip.transaction import SipTimers
from controller.sip.useragent import SipApplication, UaConfig, UserAgent

__all__ = ["InviteSession", "SipApplication", "SipError", "SipParseError", "SipReject",
           "SipStatusError", "SipTimeout", "SipTimers", "SipTransportError", "UaConfig", "UserAgent"]
