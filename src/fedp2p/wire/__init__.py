"""Sans-IO wire protocol: bytes in, messages out. No sockets, no threads, no torch."""
