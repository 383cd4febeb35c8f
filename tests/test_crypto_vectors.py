"""WeCom's official callback crypto sample vectors (WECOM.md §1.2) against bot/wecom/crypto.py."""

from __future__ import annotations

import base64
import os
import struct
from xml.etree.ElementTree import fromstring

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from bot.wecom.crypto import CallbackCrypto, CryptoError, signature

TOKEN = "123456"
AES_KEY = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"
RECEIVE_ID = "wx49f0ab532d5d035a"

GET_TIMESTAMP = "1411443780"
GET_NONCE = "437374425"
GET_ECHOSTR = "4ByGGj+sVCYcvGeQYhaKIk1o0pQRNbRjxybjTGblXrBaXlTXeOo1+bXFXDQQb1o6co6Yh9Bv41n7hOchLF6p+Q=="
GET_SIGNATURE = "dd6b9c95b495b3f7e2901bfbc76c664930ffdb96"
GET_PLAINTEXT = "5927782489442352469"

POST_TIMESTAMP = "1411525903"
POST_NONCE = "461056294"
POST_ENCRYPT = (
    "RgqEoJj5A4EMYlLvWO1F86ioRjZfaex/gePD0gOXTxpsq5Yj4GNglrBb8I2BAJVODGajiFnXBu7mCPatfjsu6IHCrsTyeDXzF6Bv283dGym"
    "zxh6ydJRvZsryDyZbLTE7rhnus50qGPMfp2wASFlzEgMW9z1ef/RD8XzaFYgm7iTdaXpXaG4+BiYyolBug/gYNx410cvkKR2/nPwBiT+P4h"
    "IiOAQqGp/TywZBtDh1yCF2KOd0gpiMZ5jSw3e29mTvmUHzkVQiMS6td7vXUaWOMZnYZlF3So2SjHnwh4jYFxdgpkHHqIrH/54SNdshoQgWY"
    "EvccTKe7FS709/5t6NMxuGhcUGAPOQipvWTT4dShyqio7mlsl5noTrb++x6En749zCpQVhDpbV6GDnTbcX2e8K9QaNWHp91eBdCRxthuL0="
)
POST_SIGNATURE = "74d92dfeb87ba7c714f89d98870ae5eb62dff26d"


@pytest.fixture
def crypto() -> CallbackCrypto:
    return CallbackCrypto(TOKEN, AES_KEY, RECEIVE_ID)


def _raw_envelope(plaintext_block: bytes) -> str:
    """Encrypt an already padded block with the sample key, bypassing the library's padding."""
    key = base64.b64decode(AES_KEY + "=")
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(plaintext_block) + encryptor.finalize()).decode()


def test_url_check_signature_matches_official_vector(crypto: CallbackCrypto) -> None:
    assert signature(TOKEN, GET_TIMESTAMP, GET_NONCE, GET_ECHOSTR) == GET_SIGNATURE
    assert crypto.verify(GET_SIGNATURE, GET_TIMESTAMP, GET_NONCE, GET_ECHOSTR)


def test_url_check_echostr_decrypts_to_official_plaintext(crypto: CallbackCrypto) -> None:
    assert crypto.decrypt(GET_ECHOSTR) == GET_PLAINTEXT


def test_post_signature_matches_official_vector(crypto: CallbackCrypto) -> None:
    assert crypto.sign(POST_TIMESTAMP, POST_NONCE, POST_ENCRYPT) == POST_SIGNATURE
    assert crypto.verify(POST_SIGNATURE, POST_TIMESTAMP, POST_NONCE, POST_ENCRYPT)


def test_post_payload_decrypts_to_the_official_text_message(crypto: CallbackCrypto) -> None:
    root = fromstring(crypto.decrypt(POST_ENCRYPT))
    assert root.findtext("MsgType") == "text"
    assert root.findtext("Content") == "test"
    assert root.findtext("FromUserName") == "messense"
    assert root.findtext("AgentID") == "1"
    assert root.findtext("ToUserName") == RECEIVE_ID


def test_tampered_signature_is_rejected(crypto: CallbackCrypto) -> None:
    tampered = ("0" if POST_SIGNATURE[0] != "0" else "1") + POST_SIGNATURE[1:]
    assert not crypto.verify(tampered, POST_TIMESTAMP, POST_NONCE, POST_ENCRYPT)
    assert not crypto.verify(POST_SIGNATURE, str(int(POST_TIMESTAMP) + 1), POST_NONCE, POST_ENCRYPT)


def test_wrong_receive_id_raises_crypto_error() -> None:
    other = CallbackCrypto(TOKEN, AES_KEY, "wwsomeothercorp")
    with pytest.raises(CryptoError):
        other.decrypt(POST_ENCRYPT)


@pytest.mark.parametrize(
    "garbage",
    ["", "not base64 at all!", "////", base64.b64encode(b"short").decode(), POST_ENCRYPT[:-4]],
)
def test_garbage_payload_raises_crypto_error(crypto: CallbackCrypto, garbage: str) -> None:
    with pytest.raises(CryptoError):
        crypto.decrypt(garbage)


def test_tampered_ciphertext_raises_crypto_error(crypto: CallbackCrypto) -> None:
    raw = bytearray(base64.b64decode(POST_ENCRYPT))
    raw[20] ^= 0xFF  # corrupts block 1 and the msg_len field decrypted from block 2
    with pytest.raises(CryptoError):
        crypto.decrypt(base64.b64encode(bytes(raw)).decode())


@pytest.mark.parametrize("pad_byte", [0, 33, 255])
def test_invalid_padding_raises_crypto_error(crypto: CallbackCrypto, pad_byte: int) -> None:
    msg = b"<xml><Content>x</Content></xml>"
    body = os.urandom(16) + struct.pack(">I", len(msg)) + msg + RECEIVE_ID.encode()
    fill = 32 - len(body) % 32
    block = body + bytes([pad_byte]) * fill
    with pytest.raises(CryptoError):
        crypto.decrypt(_raw_envelope(block))


def test_encrypt_round_trips_and_reply_signature_verifies(crypto: CallbackCrypto) -> None:
    plaintext = "<xml><Content><![CDATA[你好]]></Content></xml>"
    assert crypto.decrypt(crypto.encrypt(plaintext)) == plaintext
    reply = fromstring(crypto.encrypt_reply(plaintext, POST_TIMESTAMP, POST_NONCE))
    encrypt = reply.findtext("Encrypt") or ""
    assert crypto.verify(reply.findtext("MsgSignature") or "", POST_TIMESTAMP, POST_NONCE, encrypt)
    assert crypto.decrypt(encrypt) == plaintext
