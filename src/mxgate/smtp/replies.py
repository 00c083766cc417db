"""Every SMTP reply mxgate sends, keyed by a stable reason code (the only place reply text lives).

Decisions return a Verdict naming a reason; the SMTP layer turns it into a reply here. The same
reason code goes to the log and the message trace, so tests, traces and replies agree.
Enhanced status codes: RFC 3463; 5.7.51 is Exchange Online's TenantInboundAttribution code.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from mxgate.verdict import Action, Verdict


@dataclass(frozen=True)
class Reply:
    code: int
    enhanced: str  # "" when the reply carries none (greeting, EHLO)
    text: str

    def render(self) -> bytes:
        return self.wire

    @functools.cached_property
    def wire(self) -> bytes:
        """The reply's bytes, built once: the refusal path sends the same few replies all day."""
        lines = self.text.split("\n")
        prefix = f"{self.enhanced} " if self.enhanced else ""
        out = [f"{self.code}-{prefix}{line}" for line in lines[:-1]] + [f"{self.code} {prefix}{lines[-1]}"]
        return ("\r\n".join(out) + "\r\n").encode("utf-8", "replace")

    def __str__(self) -> str:
        return self.render().decode().rstrip("\r\n")


ATTRIBUTION_TEXT = (
    "TenantInboundAttribution; There is a partner connector configured that matched the message's "
    "recipient domain. The connector had either the RestrictDomainsToIPAddresses or "
    "RestrictDomainsToCertificate set"
)

# In the greeting no recipient has been named yet (RFC 5321 §3.1): speak of the client's address.
ATTRIBUTION_CONNECT_TEXT = (
    "TenantInboundAttribution; Every accepted domain has a partner connector with "
    "RestrictDomainsToIPAddresses set, and your address is not one of its sender IP addresses"
)

# reason → reply. Keep sorted by stage; tests look replies up here, never retype them.
REPLIES: dict[str, Reply] = {
    # connect
    "connector-attribution-connect": Reply(554, "5.7.51", ATTRIBUTION_CONNECT_TEXT),
    "too-many-connections-from-ip": Reply(421, "4.7.0", "Too many connections from your address, try again later"),
    "too-many-connections": Reply(421, "4.7.0", "Too many connections, try again later"),
    "pregreet": Reply(554, "5.5.1", "Protocol error: you talked before my greeting"),
    "rate-limited": Reply(421, "4.7.0", "Rate limit exceeded, try again later"),
    "shutting-down": Reply(421, "4.3.2", "Service shutting down, try again later"),
    "session-too-long": Reply(421, "4.4.2", "Session too long, closing connection"),
    "command-timeout": Reply(421, "4.4.2", "Timeout waiting for a command, closing connection"),
    "data-too-slow": Reply(421, "4.4.2", "Data rate too low, closing connection"),
    "too-many-errors": Reply(421, "4.7.0", "Too many errors, closing connection"),
    "blocked-after-refusal": Reply(503, "5.5.1", "Bad sequence of commands: connection refused, send QUIT"),
    # command syntax and sequence
    "line-too-long": Reply(500, "5.5.2", "Line too long"),
    "unknown-command": Reply(500, "5.5.2", "Command not recognized"),
    "bad-syntax": Reply(501, "5.5.4", "Syntax error in parameters or arguments"),
    "bad-helo": Reply(501, "5.5.4", "Invalid HELO/EHLO argument"),
    "need-helo": Reply(503, "5.5.1", "Send EHLO or HELO first"),
    "need-mail": Reply(503, "5.5.1", "Send MAIL first"),
    "need-rcpt": Reply(503, "5.5.1", "Send RCPT first"),
    "nested-mail": Reply(503, "5.5.1", "Sender already specified"),
    "bad-sequence": Reply(503, "5.5.1", "Bad sequence of commands"),
    "bdat-syntax": Reply(501, "5.5.4", "Syntax: BDAT chunk-size [LAST]; closing connection"),
    "bdat-failed": Reply(503, "5.5.1", "Bad sequence of commands: a chunk was refused, send RSET"),
    "tls-already-active": Reply(503, "5.5.1", "TLS already active"),
    "tls-unavailable": Reply(454, "4.7.0", "TLS not available"),
    "bad-address": Reply(553, "5.1.3", "Invalid address syntax"),
    "non-ascii-address": Reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8"),
    "bad-parameter": Reply(555, "5.5.4", "Unsupported MAIL/RCPT parameter"),
    "message-too-big-declared": Reply(552, "5.3.4", "Message size exceeds fixed maximum message size"),
    "disk-full": Reply(452, "4.3.1", "Insufficient system storage"),
    # MAIL
    "tls-required": Reply(530, "5.7.0", "Must issue a STARTTLS command first"),
    "sender-ok": Reply(250, "2.1.0", "Sender OK"),
    # RCPT
    "recipient-ok": Reply(250, "2.1.5", "Recipient OK"),
    "connector-attribution": Reply(550, "5.7.51", ATTRIBUTION_TEXT),
    "unknown-recipient": Reply(550, "5.1.1", "Recipient address rejected: User unknown"),
    "relay-denied": Reply(550, "5.7.1", "Relay access denied"),
    # Exchange Online's reply when an on-premises connector relays for a sender domain that is not accepted.
    "tenant-relay-denied": Reply(550, "5.7.64", "TenantAttribution; Relay Access Denied"),
    "srs-invalid": Reply(550, "5.7.1", "Recipient address rejected: invalid or expired SRS address"),
    "address-literal": Reply(550, "5.7.1", "Relay access denied"),
    "too-many-recipients": Reply(452, "4.5.3", "Too many recipients"),
    "different-policy-outcome": Reply(452, "4.5.3", "Recipient needs a separate transaction, try again"),
    # DATA
    "start-data": Reply(354, "", "End data with <CR><LF>.<CR><LF>"),
    "chunk-ok": Reply(250, "2.0.0", "OK: chunk received"),
    "queued": Reply(250, "2.0.0", "OK: queued"),
    "delivered": Reply(250, "2.0.0", "OK: delivered"),
    "relayed": Reply(250, "2.0.0", "OK: relayed"),  # the gateway's cut-through: the downstream took it (server/cutthrough.py)
    # The downstream refused every recipient for good during a cut-through relay: its class of answer, our words.
    "downstream-unknown-recipient": Reply(550, "5.1.1", "Recipient address rejected by the mailbox server"),
    "downstream-too-big": Reply(552, "5.3.4", "Message size exceeds the mailbox server's limit"),
    "downstream-policy": Reply(550, "5.7.1", "Message rejected by the mailbox server's policy"),
    "downstream-rejected": Reply(554, "5.0.0", "Message rejected by the mailbox server"),
    "bare-newline": Reply(550, "5.6.0", "Message contains bare CR or LF, which is not allowed (RFC 5321 §2.3.8)"),
    "message-too-big": Reply(552, "5.3.4", "Message size exceeds fixed maximum message size"),
    "header-too-big": Reply(552, "5.3.4", "Message header exceeds the limit"),
    "line-too-long-data": Reply(552, "5.6.0", "Message contains a line longer than 998 characters (RFC 5322 §2.1.1)"),
    "hop-count-exceeded": Reply(554, "5.4.6", "Too many hops (Received headers): mail loop?"),
    "header-continuation-first": Reply(550, "5.6.0", "Message header starts with a continuation line, which belongs to no field (RFC 5322 §2.2.3)"),
    "storage-failed": Reply(451, "4.3.0", "Local error in processing: message not stored, try again later"),
    "recipient-not-deliverable": Reply(451, "4.3.0", "Local error in processing: a recipient could not be delivered, try again later"),
    "quarantined": Reply(250, "2.0.0", "OK: accepted"),
    "message-rejected": Reply(550, "5.7.1", "Message rejected by policy"),
    "malware": Reply(554, "5.7.1", "Message rejected: malware detected"),
    "spam": Reply(550, "5.7.1", "Message rejected as spam"),
    "dmarc-policy": Reply(550, "5.7.1", "Message rejected: DMARC policy of the sender domain"),
    "spf-fail": Reply(550, "5.7.23", "SPF validation failed"),
    "blocked-attachment": Reply(554, "5.7.1", "Message rejected: blocked attachment type"),
    # A check that broke on the message (a limit of the MIME/archive walk, an exception) with on_error = "reject".
    "content-uninspectable": Reply(554, "5.6.0", "Message rejected: content could not be inspected within limits"),
    "checks-busy": Reply(451, "4.7.0", "Too many messages from your address are being checked, try again later"),
    "dnsbl": Reply(554, "5.7.1", "Service unavailable: client host blocked using a DNS block list"),
    "rdns-missing": Reply(450, "4.7.25", "Client host rejected: cannot find your reverse hostname"),
    "greylisted": Reply(451, "4.7.1", "Greylisted, try again later"),
    "check-tempfail": Reply(451, "4.7.0", "Temporary failure in a message check, try again later"),
    "dkim-fail": Reply(550, "5.7.20", "Message rejected: no passing DKIM signature found"),  # RFC 7372 §3.1
    "rdns-failed": Reply(550, "5.7.25", "Client host rejected: reverse DNS validation failed"),  # RFC 7372 §3.3
    # refused before the greeting: RFC 5321 §3.1 asks for 554 there
    "connect-rdns": Reply(554, "5.7.25", "Client host rejected: reverse DNS validation failed"),
    "message-rate-limited": Reply(450, "4.7.0", "Too many messages from your address, try again later"),
    # AUTH (submission)
    "auth-ok": Reply(235, "2.7.0", "Authentication successful"),
    "auth-failed": Reply(535, "5.7.8", "Authentication credentials invalid"),
    "auth-throttled": Reply(421, "4.7.0", "Too many failed authentications, try again later"),
    "auth-needs-tls": Reply(538, "5.7.11", "Encryption required for requested authentication mechanism"),
    "auth-required": Reply(530, "5.7.0", "Authentication required"),
    "auth-already": Reply(503, "5.5.1", "Already authenticated"),
    "auth-mechanism": Reply(504, "5.5.4", "Unrecognized authentication type"),
    "auth-cancelled": Reply(501, "5.0.0", "Authentication cancelled"),
    "auth-line-too-long": Reply(500, "5.5.6", "Authentication exchange line is too long"),  # RFC 4954 §6
    "send-as-denied": Reply(550, "5.7.60", "Client does not have permissions to send as this sender"),
    # general
    "ok": Reply(250, "2.0.0", "OK"),
    "reset": Reply(250, "2.0.0", "Reset OK"),
    "vrfy": Reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery"),
    "bye": Reply(221, "2.0.0", "Bye"),
    "ready-tls": Reply(220, "2.0.0", "Ready to start TLS"),
    "internal-error": Reply(451, "4.3.0", "Local error in processing"),
}


def reply_text(verdict: Verdict) -> str:
    """The reply a refusal was given, as the trace shows it; "" when its reason has no reply of its own."""
    reply = REPLIES.get(verdict.reason)
    return str(reply) if reply is not None else ""


def reply_for(verdict: Verdict) -> Reply:
    reply = REPLIES.get(verdict.reason)
    if reply is not None:
        return reply
    if verdict.action is Action.ACCEPT:
        return REPLIES["ok"]
    if verdict.action is Action.TEMPFAIL:
        return REPLIES["check-tempfail"]
    return REPLIES["message-rejected"]
