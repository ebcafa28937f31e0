"""inet/cidr and macaddr/macaddr8 -> their text forms."""

from __future__ import annotations

import ipaddress

from parallelsync.transcode.bson_writer import Buffer, Value, ValueEncoder, str_value

PGSQL_AF_INET = 2
PGSQL_AF_INET6 = 3  # PostgreSQL's own constant (AF_INET + 1), not the platform's AF_INET6


def _ipv6_text(raw: bytes) -> str:
    """PostgreSQL's form: compressed, with an embedded IPv4 address in dotted form for
    "::ffff:a.b.c.d" and "::a.b.c.d" (as inet_net_ntop does; Python 3.11 prints hex words)."""
    if raw[:10] == bytes(10) and (
        raw[10:12] == b"\xff\xff" or (raw[10:12] == b"\x00\x00" and raw[12:14] != b"\x00\x00")
    ):
        prefix = "::ffff:" if raw[10:12] == b"\xff\xff" else "::"
        return prefix + str(ipaddress.IPv4Address(raw[12:]))
    return str(ipaddress.IPv6Address(raw))


def inet_encoder(cidr: bool) -> ValueEncoder:
    def encode_inet(buf: Buffer, pos: int, length: int) -> Value:
        if length < 4:
            raise ValueError(f"inet value has {length} bytes, expected at least 4")
        family, bits, is_cidr, nbytes = buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]
        raw = bytes(buf[pos + 4 : pos + length])
        if len(raw) != nbytes:
            raise ValueError(f"inet value has {len(raw)} address bytes, header says {nbytes}")
        address: ipaddress.IPv4Address | ipaddress.IPv6Address
        if family == PGSQL_AF_INET and nbytes == 4:
            address, max_bits = ipaddress.IPv4Address(raw), 32
        elif family == PGSQL_AF_INET6 and nbytes == 16:
            address, max_bits = ipaddress.IPv6Address(raw), 128
        else:
            raise ValueError(f"inet family {family} with {nbytes} address bytes is unknown")
        if bits > max_bits:
            raise ValueError(f"inet mask /{bits} is longer than the address")
        text = _ipv6_text(raw) if nbytes == 16 else str(address)
        # inet writes the host form without a full mask; cidr always shows the mask.
        if cidr or is_cidr or bits != max_bits:
            return str_value(f"{text}/{bits}")
        return str_value(text)

    return encode_inet


def mac_encoder(nbytes: int) -> ValueEncoder:
    def encode_mac(buf: Buffer, pos: int, length: int) -> Value:
        if length != nbytes:
            raise ValueError(f"macaddr value has {length} bytes, expected {nbytes}")
        return str_value(bytes(buf[pos : pos + length]).hex(":"))

    return encode_mac
