import pytest

from fedp2p.wire.auth import (
    MAC_SIZE,
    FrameMac,
    derive_session_keys,
    frame_key,
    frame_mac,
    hkdf_expand,
    hkdf_extract,
)


def test_hkdf_matches_rfc5869_test_case_1() -> None:
    ikm = bytes([0x0B] * 22)
    salt = bytes(range(13))
    info = bytes(range(0xF0, 0xFA))

    prk = hkdf_extract(salt, ikm)
    okm = hkdf_expand(prk, info, 42)

    assert prk.hex() == "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_session_keys_differ_per_role_direction_and_nonce() -> None:
    secret, n1, n2, n3 = b"s" * 32, b"1" * 32, b"2" * 32, b"3" * 32

    keys = derive_session_keys(secret, n1, n2, 1)
    other = derive_session_keys(secret, n1, n3, 1)
    next_version = derive_session_keys(secret, n1, n2, 2)

    values = [
        keys.initiator_proof,
        keys.responder_proof,
        keys.initiator_to_responder,
        keys.responder_to_initiator,
    ]
    assert len(set(values)) == 4
    assert other.initiator_to_responder != keys.initiator_to_responder
    assert next_version.initiator_proof != keys.initiator_proof
    assert "proof" not in repr(keys) and keys.initiator_proof.hex() not in repr(keys)


def test_frame_mac_binds_the_sequence_number() -> None:
    key = b"k" * 32

    assert frame_mac(key, 0, [b"frame"]) != frame_mac(key, 1, [b"frame"])
    assert frame_mac(key, 0, [b"fr", memoryview(b"ame")]) == frame_mac(key, 0, [b"frame"])


def test_each_frame_gets_its_own_one_time_poly1305_key() -> None:
    key = b"k" * 32

    keys = {frame_key(key, seq) for seq in range(100)} | {frame_key(b"j" * 32, 0)}

    assert len(keys) == 101 and all(len(k) == 32 for k in keys)
    with pytest.raises(ValueError):
        frame_key(key, 2**64)


def test_frame_mac_is_a_16_byte_poly1305_tag_checked_in_constant_time() -> None:
    key = b"k" * 32
    tag = frame_mac(key, 7, [b"header", b"body"])

    good, bad, wrong_seq = FrameMac(key, 7), FrameMac(key, 7), FrameMac(key, 8)
    for mac in (good, bad, wrong_seq):
        mac.update(b"headerbody")

    assert len(tag) == MAC_SIZE == 16
    assert good.verify(tag)
    assert not bad.verify(bytes([tag[0] ^ 1]) + tag[1:])
    assert not wrong_seq.verify(tag)


def test_a_frame_mac_cannot_be_used_twice() -> None:
    mac = FrameMac(b"k" * 32, 0)
    mac.tag()

    with pytest.raises(ValueError, match="finalized"):
        mac.update(b"more")
    with pytest.raises(ValueError, match="finalized"):
        mac.tag()
