#!/usr/bin/env python3
"""Writes the small committed seed corpus (fuzz/corpus/<target>/) from
hand-encoded protobuf: run it after changing the protocol, then commit."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(num, data):
    """A length-delimited field (strings, bytes, messages)."""
    if isinstance(data, str):
        data = data.encode()
    return varint(num << 3 | 2) + varint(len(data)) + data


def vfield(num, value):
    return varint(num << 3) + varint(value)


def entry(num, key, value):
    return field(num, field(1, key) + field(2, value))


def msg(id="", type="", payload=b"", room="", control=b"", metadata=()):
    out = b""
    if id:
        out += field(1, id)
    if type:
        out += field(2, type)
    if payload:
        out += field(3, payload)
    for k, v in metadata:
        out += entry(4, k, v)
    if room:
        out += field(7, room)
    return out + control


def ws(b0, payload, mask=b"\x12\x34\x56\x78"):
    """A masked client WebSocket frame (first byte: FIN, RSV, opcode)."""
    n = len(payload)
    if n < 126:
        head = bytes([b0, 0x80 | n])
    elif n < 65536:
        head = bytes([b0, 0x80 | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, 0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def frames(*fs):
    return b"".join(struct.pack("<H", len(f)) + f for f in fs)


join = msg(id="j", control=field(16, field(1, "r") + entry(2, "seat", "1")))
leave = msg(id="l", control=field(17, field(1, "r")))
members = msg(id="m", control=field(18, field(1, "r") + vfield(2, 10)))
update = msg(id="u", control=field(19, field(1, "r") + entry(2, "topic", "t") + field(5, "gone")))
activity = msg(id="a", control=field(20, vfield(1, 2) + field(2, "chess")))
activities = msg(id="la", control=field(21, vfield(1, 5)))
publish = msg(id="p", type="chat", payload=b"hello", room="r")
echo = msg(id="1", type="echo", payload=b"hi", metadata=[("trace", "abc")])
server_verb = msg(id="s", control=field(24, field(1, "r") + field(2, field(1, "u"))))

seeds = {
    "inbound_frames": {
        "echo": frames(echo),
        "join_publish_leave": frames(join, publish, members, leave),
        "state_and_presence": frames(join, update, activity, activities),
        "server_verb": frames(server_verb),
        "garbage": b"\x02\x00\xff\xff",
    },
    "handshake": {
        "valid": b"\x00" + b"\n".join([
            b"connection: Upgrade",
            b"upgrade: websocket",
            b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==",
            b"sec-websocket-version: 13",
            b"x-user-id: alice",
            b"sec-websocket-protocol: edk.ws.v1, token",
        ]),
        "origin": b"\x08" + b"\n".join([
            b"connection: keep-alive, upgrade",
            b"upgrade: WebSocket",
            b"sec-websocket-key: AAAAAAAAAAAAAAAAAAAAAA==",
            b"sec-websocket-version: 13",
            b"origin: https://app.example",
            b"x-user-id: bob",
            b"sec-websocket-protocol: token",
        ]),
        "bad_key": b"\x00connection: upgrade\nupgrade: websocket\nsec-websocket-key: abc\n",
    },
    "writer_frames": {
        "mixed": bytes([1, 0, 44, 1]) + bytes(300) + bytes([10, 2, 0]) + b"hi"
        + bytes([6, 0, 0, 1, 0, 0, 3, 0, 0, 0, 1, 0, 7]),
        "big": bytes([255, 8, 0xFF, 0xFF]) + bytes(70_000),
    },
    "read_frames": {
        "messages": bytes([3, 255]) + ws(0x82, b"hello") + ws(0x02, b"frag")
        + ws(0x89, b"p") + ws(0x80, b"ment") + ws(0x8A, b"") + ws(0x88, b"\x03\xe8bye"),
        "big": bytes([200, 4]) + ws(0x82, bytes(70_000)),
        "text": bytes([1, 1]) + ws(0x01, "é".encode()[:1]) + ws(0x80, "é".encode()[1:]),
        "bad_close": bytes([0, 0]) + ws(0x88, b"\x03"),
    },
}

for target, files in seeds.items():
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    print(f"{target}: {len(files)} seeds")
