"""SIP transactions (RFC 3261 section 17, as amended by RFC 6026).

Four state machines, each a small class with its timers (A-K of section 17, L and M of RFC 6026)
on the event loop:

- `ClientInviteTransaction` (17.1.1): Calling -> Proceeding -> Completed / Accepted -> Terminated.
  Timer A retransmits over UDP (T1, doubling), B gives up in Calling (64*T1), D absorbs
  retransmitted final responses (32 s on UDP), M (RFC 6026) passes retransmitted 2xx to the UA.
  The ACK for a non-2xx final response is built here (17.1.1.3); the ACK for 2xx is the UA's.
- `ClientNonInviteTransaction` (17.1.2): Trying -> Proceeding -> Completed -> Terminated.
  Timer E retransmits (T1 doubling to T2), F gives up (64*T1), K absorbs retransmissions (T4).
- `ServerInviteTransaction` (17.2.1): Proceeding -> Completed / Accepted -> Confirmed ->
  Terminated. Timer G retransmits a non-2xx final response over UDP, H gives up waiting for its
  ACK (64*T1), I absorbs ACK retransmissions (T4), L (RFC 6026) absorbs INVITE retransmissions
  after a 2xx (whose retransmission is the UA's job, 13.3.1.4).
- `ServerNonInviteTransaction` (17.2.2): Trying -> Proceeding -> Completed -> Terminated, timer J.

Over reliable transports the retransmission timers do not run and D, I, J, K are zero.
`TransactionLayer` matches requests and responses to transactions (17.1.3, 17.2.3, with the
RFC 2543 fallback for branches without the magic cookie).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from controller.sip.errors import SipTimeout, SipTransportError
from controller.sip.message import (
    BRANCH_MAGIC_COOKIE, Headers, SipRequest, SipResponse,
)

log = logging.getLogger("voicemix.sip")


@dataclass(frozen=True)
class SipTimers:
    """Section 17.1.1.1 timer values (seconds); tests shrink T1 to run the timeouts quickly."""

    t1: float = 0.5   # RTT estimate
    t2: float = 4.0   # maximum retransmit interval for non-INVITE requests and INVITE responses
    t4: float = 5.0   # maximum duration a message remains in the network

    @property
    def b(self) -> float:   # = F = H = J = L = M
        return 64 * self.t1

    @property
    def d(self) -> float:
        return max(32.0, 64 * self.t1) if self.t1 >= 0.5 else 64 * self.t1


# --------------------------------------------------------------------------------------- base
class Transaction:
    """Common parts: key, state, timers, removal from the layer when terminated."""

    kind = "transaction"

    def __init__(self, layer: TransactionLayer, key: tuple, request: SipRequest, flow) -> None:
        self.layer = layer
        self.key = key
        self.request = request
        self.flow = flow
        self.state = "init"
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._loop = asyncio.get_running_loop()
        self.retransmissions = 0

    @property
    def reliable(self) -> bool:
        return self.flow.reliable

    def _timer(self, name: str, delay: float, callback: Callable[[], None]) -> None:
        old = self._timers.pop(name, None)
        if old is not None:
            old.cancel()
        self._timers[name] = self._loop.call_later(delay, self._fire, name, callback)

    def _fire(self, name: str, callback: Callable[[], None]) -> None:
        self._timers.pop(name, None)
        if self.state != "terminated":
            callback()

    def _cancel(self, *names: str) -> None:
        for name in names:
            handle = self._timers.pop(name, None)
            if handle is not None:
                handle.cancel()

    def terminate(self) -> None:
        if self.state == "terminated":
            return
        self.state = "terminated"
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self.layer._remove(self)

    def _send(self, data: bytes) -> bool:
        try:
            self.flow.send(data)
            return True
        except (SipTransportError, OSError) as exc:
            self._transport_error(exc)
            return False

    def _transport_error(self, exc: Exception) -> None:
        self.terminate()


# ------------------------------------------------------------------------------------- client
class ClientTransaction(Transaction):
    """Sends a request; every response the TU should see goes to `on_response`, and `final`
    resolves with the first final response (or SipTimeout / SipTransportError)."""

    def __init__(self, layer, key, request, flow,
                 on_response: Callable[[ClientTransaction, SipResponse], None] | None = None) -> None:
        super().__init__(layer, key, request, flow)
        self.on_response = on_response
        self.final: asyncio.Future[SipResponse] = self._loop.create_future()
        self.last_provisional: SipResponse | None = None
        self._data = request.serialize()

    def _pass_up(self, response: SipResponse) -> None:
        if response.status >= 200 and not self.final.done():
            self.final.set_result(response)
        if self.on_response is not None:
            self.on_response(self, response)

    def _fail(self, exc: Exception) -> None:
        if not self.final.done():
            self.final.set_exception(exc)
            self.final.exception()   # marked retrieved: callers that do not await still see it
        self.terminate()

    def _transport_error(self, exc: Exception) -> None:
        self.layer.stats_["transport_errors"] += 1
        self._fail(exc if isinstance(exc, SipTransportError) else SipTransportError(str(exc)))


class ClientInviteTransaction(ClientTransaction):
    kind = "client_invite"

    def start(self) -> None:
        self.state = "calling"
        if not self._send(self._data):
            return
        timers = self.layer.timers
        if not self.reliable:
            self._timer_a = timers.t1
            self._timer("A", self._timer_a, self._on_timer_a)
        self._timer("B", timers.b, self._on_timer_b)

    def _on_timer_a(self) -> None:
        if self.state != "calling":
            return
        self.retransmissions += 1
        self.layer.stats_["retransmissions"] += 1
        if self._send(self._data):
            self._timer_a *= 2
            self._timer("A", self._timer_a, self._on_timer_a)

    def _on_timer_b(self) -> None:
        if self.state == "calling":
            self.layer.stats_["timeouts"] += 1
            self._fail(SipTimeout(f"no response to INVITE within {self.layer.timers.b:g} s (timer B)"))

    def cancel_timeout(self) -> None:
        """Section 9.1: after a CANCEL, an INVITE that still gets no final response within
        64*T1 is taken as cancelled."""
        if self.state in ("calling", "proceeding"):
            self._timer("B", self.layer.timers.b, self._on_cancel_timeout)

    def _on_cancel_timeout(self) -> None:
        if self.state in ("calling", "proceeding"):
            self.layer.stats_["timeouts"] += 1
            self._fail(SipTimeout("no final response after CANCEL within 64*T1"))

    def receive(self, response: SipResponse) -> None:
        status = response.status
        if self.state in ("calling", "proceeding"):
            if status < 200:
                self.state = "proceeding"
                self._cancel("A")
                self.last_provisional = response
                self._pass_up(response)
            elif status < 300:
                # RFC 6026 section 8.4: Accepted; further 2xx (other forks, retransmissions)
                # go to the TU, which ACKs each
                self.state = "accepted"
                self._cancel("A", "B")
                self._timer("M", self.layer.timers.b, self.terminate)
                self._pass_up(response)
            else:
                self.state = "completed"
                self._cancel("A", "B")
                self._send_ack(response)
                self._pass_up(response)
                delay = 0.0 if self.reliable else self.layer.timers.d
                self._timer("D", delay, self.terminate)
        elif self.state == "accepted" and 200 <= status < 300:
            self._pass_up(response)
        elif self.state == "completed" and status >= 300:
            self._send_ack(response)   # the ACK was lost: the final response came again

    def _send_ack(self, response: SipResponse) -> None:
        """Section 17.1.1.3: the ACK for a non-2xx final response."""
        request = self.request
        headers = Headers()
        headers.add("Via", request.headers.values("Via")[0])
        for route in request.headers.lines("Route"):
            headers.add("Route", route)
        headers.add("Max-Forwards", "70")
        headers.add("From", request.headers.get("From"))
        headers.add("To", response.headers.get("To"))
        headers.add("Call-ID", request.call_id)
        headers.add("CSeq", f"{request.cseq.number} ACK")
        ack = SipRequest("ACK", request.uri, headers)
        self._send(ack.serialize())


class ClientNonInviteTransaction(ClientTransaction):
    kind = "client_non_invite"

    def start(self) -> None:
        self.state = "trying"
        if not self._send(self._data):
            return
        timers = self.layer.timers
        if not self.reliable:
            self._timer_e = timers.t1
            self._timer("E", self._timer_e, self._on_timer_e)
        self._timer("F", timers.b, self._on_timer_f)

    def _on_timer_e(self) -> None:
        if self.state not in ("trying", "proceeding"):
            return
        self.retransmissions += 1
        self.layer.stats_["retransmissions"] += 1
        if self._send(self._data):
            timers = self.layer.timers
            self._timer_e = timers.t2 if self.state == "proceeding" else min(2 * self._timer_e, timers.t2)
            self._timer("E", self._timer_e, self._on_timer_e)

    def _on_timer_f(self) -> None:
        if self.state in ("trying", "proceeding"):
            self.layer.stats_["timeouts"] += 1
            self._fail(SipTimeout(f"no final response to {self.request.method} within "
                                  f"{self.layer.timers.b:g} s (timer F)"))

    def receive(self, response: SipResponse) -> None:
        if self.state not in ("trying", "proceeding"):
            return   # completed: retransmissions absorbed
        if response.status < 200:
            self.state = "proceeding"
            self.last_provisional = response
            self._pass_up(response)
            return
        self.state = "completed"
        self._cancel("E", "F")
        self._pass_up(response)
        delay = 0.0 if self.reliable else self.layer.timers.t4
        self._timer("K", delay, self.terminate)


# ------------------------------------------------------------------------------------- server
class ServerTransaction(Transaction):
    """Receives a request; the TU answers with `respond()`."""

    def __init__(self, layer, key, request, flow) -> None:
        super().__init__(layer, key, request, flow)
        self.last_response: SipResponse | None = None
        self._last_data: bytes | None = None
        self.on_terminated: Callable[[ServerTransaction], None] | None = None

    def _transmit(self, response: SipResponse) -> bool:
        self.last_response = response
        self._last_data = response.serialize()
        return self.layer.send_response_data(self._last_data, response, self.request, self.flow, self)

    def _retransmit(self) -> None:
        if self._last_data is not None:
            self.retransmissions += 1
            self.layer.stats_["retransmissions"] += 1
            self.layer.send_response_data(self._last_data, self.last_response, self.request,
                                          self.flow, self, retransmission=True)

    def terminate(self) -> None:
        if self.state == "terminated":
            return
        super().terminate()
        if self.on_terminated is not None:
            self.on_terminated(self)

    @property
    def answered(self) -> bool:
        """A final response has been sent."""
        return self.last_response is not None and self.last_response.status >= 200


class ServerInviteTransaction(ServerTransaction):
    kind = "server_invite"

    def __init__(self, layer, key, request, flow) -> None:
        super().__init__(layer, key, request, flow)
        self.state = "proceeding"
        self.on_ack_timeout: Callable[[ServerInviteTransaction], None] | None = None

    def receive_request(self, request: SipRequest) -> None:
        if request.method == "ACK":
            if self.state == "completed":
                self.state = "confirmed"
                self._cancel("G", "H")
                delay = 0.0 if self.reliable else self.layer.timers.t4
                self._timer("I", delay, self.terminate)
            return
        # a retransmitted INVITE: repeat the last response (the UA retransmits its own 2xx)
        if self.state in ("proceeding", "completed"):
            self._retransmit()

    def respond(self, response: SipResponse) -> None:
        if self.state != "proceeding":
            raise RuntimeError(f"INVITE transaction is {self.state}: cannot respond {response.status}")
        status = response.status
        if not self._transmit(response):
            return
        if status < 200:
            return
        timers = self.layer.timers
        if status < 300:
            self.state = "accepted"   # RFC 6026 section 8.7
            self._timer("L", timers.b, self.terminate)
            return
        self.state = "completed"
        if not self.reliable:
            self._timer_g = timers.t1
            self._timer("G", self._timer_g, self._on_timer_g)
        self._timer("H", timers.b, self._on_timer_h)

    def _on_timer_g(self) -> None:
        if self.state != "completed":
            return
        self._retransmit()
        self._timer_g = min(2 * self._timer_g, self.layer.timers.t2)
        self._timer("G", self._timer_g, self._on_timer_g)

    def _on_timer_h(self) -> None:
        if self.state == "completed":
            self.layer.stats_["timeouts"] += 1
            if self.on_ack_timeout is not None:
                self.on_ack_timeout(self)
            self.terminate()


class ServerNonInviteTransaction(ServerTransaction):
    kind = "server_non_invite"

    def __init__(self, layer, key, request, flow) -> None:
        super().__init__(layer, key, request, flow)
        self.state = "trying"

    def receive_request(self, request: SipRequest) -> None:
        if self.state in ("proceeding", "completed"):
            self._retransmit()

    def respond(self, response: SipResponse) -> None:
        if self.state not in ("trying", "proceeding"):
            raise RuntimeError(f"{self.request.method} transaction is {self.state}: already answered")
        if not self._transmit(response):
            return
        if response.status < 200:
            self.state = "proceeding"
            return
        self.state = "completed"
        delay = 0.0 if self.reliable else self.layer.timers.b
        self._timer("J", delay, self.terminate)


# -------------------------------------------------------------------------------------- layer
def server_key(request: SipRequest) -> tuple:
    """Section 17.2.3: branch + sent-by + method (ACK matches its INVITE); for RFC 2543 peers
    (no magic cookie) the Call-ID, From tag, CSeq number and top Via instead."""
    via = request.top_via
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch
    if branch and branch.startswith(BRANCH_MAGIC_COOKIE) and len(branch) > len(BRANCH_MAGIC_COOKIE):
        return (branch, via.host, via.port, method)
    return ("rfc2543", request.call_id, request.from_.tag, request.cseq.number, via.host,
            via.port, method)


def client_key(message: SipRequest | SipResponse) -> tuple | None:
    """Section 17.1.3: the top Via's branch and the CSeq method."""
    try:
        branch = message.top_via.branch
        return (branch, message.cseq.method)
    except (IndexError, ValueError):
        return None


class TransactionLayer:
    """Owns the live transactions and matches messages to them.

    `send_response_data(data, response, request, flow, tx)` is the UA's transport-side response
    routing (section 18.2.2); new requests that match nothing go to the UA's handler by the
    caller of `match_request`.
    """

    def __init__(self, timers: SipTimers, send_response_data) -> None:
        self.timers = timers
        self.send_response_data = send_response_data
        self.server: dict[tuple, ServerTransaction] = {}
        self.client: dict[tuple, ClientTransaction] = {}
        self.stats_ = {"server_created": 0, "client_created": 0, "retransmissions": 0,
                       "timeouts": 0, "transport_errors": 0, "retransmitted_requests_absorbed": 0}

    # server side -------------------------------------------------------------------------
    def match_request(self, request: SipRequest) -> ServerTransaction | None:
        """The server transaction a request belongs to, after passing it to that transaction
        (a retransmission, or the ACK of a non-2xx response); None for a new request."""
        tx = self.server.get(server_key(request))
        if tx is not None:
            if request.method != "ACK":
                self.stats_["retransmitted_requests_absorbed"] += 1
            tx.receive_request(request)
        return tx

    def create_server(self, request: SipRequest, flow) -> ServerTransaction:
        key = server_key(request)
        cls = ServerInviteTransaction if request.method == "INVITE" else ServerNonInviteTransaction
        tx = cls(self, key, request, flow)
        self.server[key] = tx
        self.stats_["server_created"] += 1
        return tx

    def find_server(self, request: SipRequest, method: str) -> ServerTransaction | None:
        """The transaction of `method` with the same branch as `request` (for CANCEL, 9.2)."""
        key = server_key(request)
        return self.server.get(key[:-1] + (method,))

    # client side -------------------------------------------------------------------------
    def create_client(self, request: SipRequest, flow, on_response=None) -> ClientTransaction:
        key = (request.top_via.branch, request.method)
        cls = ClientInviteTransaction if request.method == "INVITE" else ClientNonInviteTransaction
        tx = cls(self, key, request, flow, on_response)
        self.client[key] = tx
        self.stats_["client_created"] += 1
        tx.start()
        return tx

    def match_response(self, response: SipResponse) -> ClientTransaction | None:
        key = client_key(response)
        tx = self.client.get(key) if key else None
        if tx is not None:
            tx.receive(response)
        return tx

    # -------------------------------------------------------------------------------------
    def _remove(self, tx: Transaction) -> None:
        table = self.server if isinstance(tx, ServerTransaction) else self.client
        if table.get(tx.key) is tx:
            del table[tx.key]

    def close(self) -> None:
        for tx in list(self.server.values()) + list(self.client.values()):
            if isinstance(tx, ClientTransaction):
                tx._fail(SipTransportError("SIP stack stopped"))
            else:
                tx.terminate()

    def stats(self) -> dict:
        return {**self.stats_, "server_live": len(self.server), "client_live": len(self.client)}
