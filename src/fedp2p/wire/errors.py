"""The one exception family of the wire protocol, with h11's local and remote flavours."""


class ProtocolError(Exception):
    """Something broke the protocol; the caller should close the connection."""

    remote: bool = False


class LocalProtocolError(ProtocolError):
    """Our own side asked for something the protocol forbids (a bug or misuse here)."""

    remote = False


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that break the protocol, fail authentication, or exceed a limit."""

    remote = True
