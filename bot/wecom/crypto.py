"""WeCom callback cryptography: SHA-1 signatures and AES-256-CBC message envelopes."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import string

from wechatpy.enterprise.crypto import PrpCrypto

_AES_KEY_RE = re.compile(r"^[A-Za-z0-9]{43}$")
_NONCE_ALPHABET = string.ascii_letters + string.digits


class CryptoError(ValueError):
    """A callback could not be authenticated or decrypted."""


def signature(token: str, timestamp: str, nonce: str, encrypt: str) -> str:
    """Return WeCom's msg_signature: SHA-1 over the four values sorted as strings."""
    return hashlib.sha1("".join(sorted([token, timestamp, nonce, encrypt])).encode()).hexdigest()


def random_nonce(length: int = 10) -> str:
    """Return a random alphanumeric nonce for outgoing envelopes."""
    return "".join(secrets.choice(_NONCE_ALPHABET) for _ in range(length))


class CallbackCrypto:
    """Verifies, decrypts and encrypts callback envelopes for one (token, key, receive id)."""

    def __init__(self, token: str, encoding_aes_key: str, receive_id: str) -> None:
        if not _AES_KEY_RE.match(encoding_aes_key):
            raise ValueError("encoding_aes_key must be 43 characters from [A-Za-z0-9]")
        self.token = token
        self.receive_id = receive_id
        self._key = base64.b64decode(encoding_aes_key + "=")

    def sign(self, timestamp: str, nonce: str, encrypt: str) -> str:
        """Return the msg_signature for an encrypted payload."""
        return signature(self.token, timestamp, nonce, encrypt)

    def verify(self, msg_signature: str, timestamp: str, nonce: str, encrypt: str) -> bool:
        """Check a msg_signature in constant time."""
        expected = self.sign(timestamp, nonce, encrypt)
        return hmac.compare_digest(expected.encode(), msg_signature.encode())

    def decrypt(self, encrypt: str) -> str:
        """Decrypt a base64 payload, checking padding and the receive id; raise CryptoError."""
        try:
            raw = base64.b64decode(encrypt, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise CryptoError("payload is not valid base64") from exc
        if not raw or len(raw) % 32:
            raise CryptoError("payload length is not a multiple of the block size")
        try:
            text: str = PrpCrypto(self._key).decrypt(encrypt, self.receive_id)
        except Exception as exc:  # wechatpy raises many kinds on garbage input
            if type(exc).__name__ == "InvalidCorpIdException":
                raise CryptoError("receive id does not match") from exc
            raise CryptoError("payload could not be decrypted") from exc
        return text

    def encrypt(self, plaintext: str) -> str:
        """Encrypt a plaintext message into WeCom's base64 envelope."""
        encrypted: bytes = PrpCrypto(self._key).encrypt(plaintext, self.receive_id)
        return encrypted.decode()

    def encrypt_reply(self, plaintext: str, timestamp: str, nonce: str) -> str:
        """Build the encrypted passive-reply XML WeCom expects."""
        encrypt = self.encrypt(plaintext)
        return (
            "<xml>\n"
            f"<Encrypt><![CDATA[{encrypt}]]></Encrypt>\n"
            f"<MsgSignature><![CDATA[{self.sign(timestamp, nonce, encrypt)}]]></MsgSignature>\n"
            f"<TimeStamp>{timestamp}</TimeStamp>\n"
            f"<Nonce><![CDATA[{nonce}]]></Nonce>\n"
            "</xml>"
        )
