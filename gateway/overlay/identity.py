"""Overlay node identities that cannot be chosen (S/Kademlia's static crypto puzzle).

A node holds an Ed25519 key pair. Its node id is derived from the public key,
``SHA-256("p2psip-node-id" + public key)[:20]``, so picking an id means generating
keys until one hashes near the wanted place. Every key must also carry a nonce such
that ``SHA-256("p2psip-node-puzzle" + public key + nonce)`` starts with ``difficulty``
zero bits: each key costs about 2^difficulty hashes to make usable (0.7 s at the
default 20 bits in CPython), and checking one costs two hashes.

The *credential* a node shows is its public key (32 bytes) followed by the nonce
(8 bytes). It answers every RPC with a signature by that key (:mod:`gateway.overlay.node`),
so a contact is only ever a node that proved it holds the key its id comes from.

The key and nonce are kept in ``<data_dir>/overlay.node_key`` (PEM, with the nonce and
difficulty in a comment line), so a gateway keeps its place in the DHT across restarts.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

#: Leading zero bits the puzzle needs by default (``overlay.id_difficulty``).
DEFAULT_DIFFICULTY = 20
CREDENTIAL_SIZE = 40  # public key (32) + nonce (8)
NODE_KEY_FILE = "overlay.node_key"
_ID_PREFIX = b"p2psip-node-id"
_PUZZLE_PREFIX = b"p2psip-node-puzzle"


def node_id_of(public_key: bytes) -> bytes:
    """The node id a raw Ed25519 public key stands for."""
    return hashlib.sha256(_ID_PREFIX + public_key).digest()[:20]


def leading_zero_bits(data: bytes) -> int:
    """How many zero bits ``data`` starts with."""
    value = int.from_bytes(data, "big")
    return len(data) * 8 - value.bit_length()


def puzzle_bits(public_key: bytes, nonce: bytes) -> int:
    """The puzzle's worth of ``nonce`` for ``public_key``: its hash's leading zero bits."""
    return leading_zero_bits(hashlib.sha256(_PUZZLE_PREFIX + public_key + nonce).digest())


def solve_puzzle(public_key: bytes, difficulty: int) -> bytes:
    """A nonce giving at least ``difficulty`` leading zero bits (2^difficulty tries on
    average)."""
    prefix = hashlib.sha256(_PUZZLE_PREFIX + public_key)
    threshold = 1 << (256 - difficulty)
    counter = 0
    while True:
        nonce = counter.to_bytes(8, "big")
        attempt = prefix.copy()
        attempt.update(nonce)
        if int.from_bytes(attempt.digest(), "big") < threshold:
            return nonce
        counter += 1


@dataclass(frozen=True)
class NodeIdentity:
    """A node's key pair with a solved puzzle."""

    private_key: ed25519.Ed25519PrivateKey
    nonce: bytes

    @classmethod
    def generate(cls, difficulty: int = DEFAULT_DIFFICULTY) -> NodeIdentity:
        """A new key with its puzzle solved (about 2^difficulty hashes)."""
        key = ed25519.Ed25519PrivateKey.generate()
        return cls(key, solve_puzzle(key.public_key().public_bytes_raw(), difficulty))

    @cached_property
    def public_key(self) -> bytes:
        """The raw 32-byte public key."""
        return self.private_key.public_key().public_bytes_raw()

    @cached_property
    def credential(self) -> bytes:
        """Public key + nonce: what the node shows others."""
        return self.public_key + self.nonce

    @cached_property
    def node_id(self) -> bytes:
        """The 20-byte node id the key stands for."""
        return node_id_of(self.public_key)

    def bits(self) -> int:
        """The puzzle bits this identity's nonce gives."""
        return puzzle_bits(self.public_key, self.nonce)

    def sign(self, data: bytes) -> bytes:
        """Ed25519 signature of ``data``."""
        return self.private_key.sign(data)


class CredentialCheck:
    """Checks credentials against a difficulty, remembering the answers (a node sees the
    same few hundred credentials over and over)."""

    def __init__(self, difficulty: int, memory: int = 50_000) -> None:
        self.difficulty = difficulty
        self.memory = memory
        self._known: OrderedDict[bytes, bytes | None] = OrderedDict()

    def node_id(self, credential: object) -> bytes | None:
        """The node id ``credential`` proves, or None when it is malformed or its
        puzzle is not solved to ``difficulty``."""
        if not isinstance(credential, bytes) or len(credential) != CREDENTIAL_SIZE:
            return None
        if credential in self._known:
            self._known.move_to_end(credential)
            return self._known[credential]
        public_key, nonce = credential[:32], credential[32:]
        result = (node_id_of(public_key)
                  if puzzle_bits(public_key, nonce) >= self.difficulty else None)
        self._known[credential] = result
        if len(self._known) > self.memory:
            self._known.popitem(last=False)
        return result

    @staticmethod
    def verify(credential: bytes, signature: bytes, data: bytes) -> bool:
        """Whether ``signature`` is the credential's key's over ``data``."""
        try:
            ed25519.Ed25519PublicKey.from_public_bytes(credential[:32]).verify(signature, data)
        except (ValueError, InvalidSignature):
            return False
        return True


def load_identity(data_dir: str, difficulty: int = DEFAULT_DIFFICULTY) -> NodeIdentity:
    """This gateway's node identity: the saved one when its puzzle meets
    ``difficulty``, else a new one (saved for the next start)."""
    path = Path(data_dir) / NODE_KEY_FILE
    with contextlib.suppress(OSError, ValueError, TypeError):
        text = path.read_bytes()
        nonce_line = next(line for line in text.splitlines() if line.startswith(b"# nonce "))
        nonce = bytes.fromhex(nonce_line.split()[2].decode("ascii"))
        key = serialization.load_pem_private_key(text, password=None)
        if isinstance(key, ed25519.Ed25519PrivateKey) and len(nonce) == 8:
            identity = NodeIdentity(key, nonce)
            if identity.bits() >= difficulty:
                return identity
    identity = NodeIdentity.generate(difficulty)
    pem = identity.private_key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption())
    # An identity that cannot be saved still works; the next start makes another.
    with contextlib.suppress(OSError):
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(b"# nonce " + identity.nonce.hex().encode() + b"\n" + pem)
        os.chmod(tmp, 0o600)
        tmp.replace(path)
    return identity
