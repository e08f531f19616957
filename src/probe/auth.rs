//! Keys for `auth = "keys"`: each node has an X25519 key pair, hub and spoke
//! turn their two pairs into one pairwise key, and that key MACs keepalives.
//! Nothing here encrypts: data packets stay plain by design, and only
//! keepalives are authenticated. Pure code, no I/O; `keyfile.rs` is the file
//! edge.
//!
//! Every primitive comes from a reviewed crate (x25519-dalek, hkdf, hmac,
//! sha2, base64); this file only wires them together and fixes the labels.

use std::{fmt, str::FromStr};

use base64::{DecodeError, Engine, engine::general_purpose::STANDARD as BASE64};
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use x25519_dalek::StaticSecret;
use zeroize::{Zeroize, Zeroizing};

/// Length of X25519 keys, private and public, and of a [`PairKey`].
pub const KEY_LEN: usize = 32;

/// Length of a keepalive tag: HMAC-SHA256 cut to 128 bits, as many MACs in
/// network protocols do. Forging one takes about 2^128 tries.
pub const TAG_LEN: usize = 16;

/// HKDF salt: names the protocol and its version, so a key derived here can
/// never collide with one derived for something else from the same key pairs.
const PAIR_KEY_SALT: &[u8] = b"lvn keepalive v1";

/// Separates the fields of the HKDF info. Network and node names never
/// contain it (they are `[a-z0-9-]`), so the info is unambiguous.
const INFO_SEPARATOR: &[u8] = &[0];

/// Block size of SHA-256, the size HMAC pads its key to.
const SHA256_BLOCK_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not base64 ({0})")]
    NotBase64(String),
    #[error("decodes to {0} bytes, expected 32")]
    WrongLength(usize),
    #[error("public key {0} is a low-order point: x25519 with it gives all zeros")]
    LowOrder(PublicKey),
    #[error("deriving the pairwise key: {0}")]
    Derive(String),
}

/// A node's private key. It never prints: `Debug` shows `PrivateKey(..)`,
/// and the bytes are wiped when it is dropped (x25519-dalek zeroizes, each
/// copy too: the daemon keeps one with the file it may roll back to).
#[derive(Clone)]
pub struct PrivateKey(StaticSecret);

impl PrivateKey {
    /// A new key from the operating system's randomness.
    ///
    /// # Panics
    /// If the OS has no randomness to give (x25519-dalek's `random()`): on
    /// Linux that means no `getrandom(2)` and no `/dev/urandom`, and making a
    /// key anyway would be worse than stopping.
    pub fn generate() -> Self {
        Self(StaticSecret::random())
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(x25519_dalek::PublicKey::from(&self.0).to_bytes())
    }

    /// Standard base64 with padding: 44 characters.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0.as_bytes())
    }

    /// The inverse of [`PrivateKey::to_base64`]. Errors never quote the input.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let bytes = Zeroizing::new(decode_key(text)?);
        Ok(Self(StaticSecret::from(*bytes)))
    }

    /// X25519 with `peer`, refusing an all-zero result: that only comes from
    /// a low-order public key, and every key derived from it would be known
    /// to anyone (RFC 7748 section 6.1).
    fn diffie_hellman(&self, peer: &PublicKey) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyError> {
        let shared = self
            .0
            .diffie_hellman(&x25519_dalek::PublicKey::from(peer.0));
        if !shared.was_contributory() {
            return Err(KeyError::LowOrder(*peer));
        }
        Ok(Zeroizing::new(shared.to_bytes()))
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(..)")
    }
}

/// A node's public key, as it sits in the topology (`public_key = "..."`).
/// `Display` and `FromStr` use the same base64 form.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    /// Standard base64 with padding, exactly 32 bytes. Any 32 bytes are
    /// accepted here; a low-order key is refused by [`pair_key`].
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode_key(text).map(Self)
    }

    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }

    /// A low-order point: X25519 of any private key with it is all zeros,
    /// so every pair key made with it would be known to anyone. X25519
    /// clamps private keys to multiples of 8, which send a point to zero
    /// exactly when its order divides 8, so one fixed key tells, with no
    /// randomness (`lvn check` uses it; [`pair_key`] refuses the same keys).
    pub fn is_low_order(&self) -> bool {
        let probe = StaticSecret::from([0x42; KEY_LEN]);
        !probe
            .diffie_hellman(&x25519_dalek::PublicKey::from(self.0))
            .was_contributory()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<Self, KeyError> {
        Self::from_base64(text)
    }
}

/// The key one hub and one spoke share, for MACs on the keepalives between
/// them. Both ends derive the same one; nobody else can.
#[derive(Clone, PartialEq, Eq)]
pub struct PairKey([u8; KEY_LEN]);

/// The pairwise key of `my_name` and `peer_name` in `network`: X25519 of the
/// two key pairs, then HKDF-SHA256 (RFC 5869) with salt `lvn keepalive v1`
/// and info `network 0x00 lower-name 0x00 higher-name`. Sorting the names
/// makes both ends derive the same key; binding the network and the names
/// means a tag made for one network or one pair is worthless for another.
pub fn pair_key(
    my: &PrivateKey,
    my_name: &str,
    peer: &PublicKey,
    peer_name: &str,
    network: &str,
) -> Result<PairKey, KeyError> {
    let shared = my.diffie_hellman(peer)?;
    let (low, high) = if my_name <= peer_name {
        (my_name, peer_name)
    } else {
        (peer_name, my_name)
    };
    let info = [
        network.as_bytes(),
        INFO_SEPARATOR,
        low.as_bytes(),
        INFO_SEPARATOR,
        high.as_bytes(),
    ];
    let mut okm = [0u8; KEY_LEN];
    Hkdf::<Sha256>::new(Some(PAIR_KEY_SALT), shared.as_slice())
        .expand_multi_info(&info, &mut okm)
        .map_err(|e| KeyError::Derive(e.to_string()))?;
    Ok(PairKey(okm))
}

impl PairKey {
    /// HMAC-SHA256 of `msg`, its first [`TAG_LEN`] bytes.
    pub fn tag(&self, msg: &[u8]) -> [u8; TAG_LEN] {
        let full = self.mac().chain_update(msg).finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    /// Whether `tag` is the tag of `msg`, compared in constant time. A tag of
    /// any length other than [`TAG_LEN`] is refused, so a short prefix never
    /// passes for a whole one.
    pub fn verify(&self, msg: &[u8], tag: &[u8]) -> bool {
        tag.len() == TAG_LEN
            && self
                .mac()
                .chain_update(msg)
                .verify_truncated_left(tag)
                .is_ok()
    }

    /// HMAC keyed with this key. HMAC zero-pads a key shorter than the hash
    /// block (RFC 2104 section 2), so keying with the padded block is HMAC
    /// with the 32-byte key itself, and needs no fallible constructor.
    fn mac(&self) -> Hmac<Sha256> {
        let mut block = Zeroizing::new([0u8; SHA256_BLOCK_LEN]);
        block[..KEY_LEN].copy_from_slice(&self.0);
        Hmac::<Sha256>::new(&(*block).into())
    }
}

impl Drop for PairKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for PairKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PairKey(..)")
    }
}

/// Decodes 32 bytes of standard, padded base64. The error says what was
/// wrong and where, never which byte was there: the input may be a secret.
fn decode_key(text: &str) -> Result<[u8; KEY_LEN], KeyError> {
    let bytes = Zeroizing::new(BASE64.decode(text).map_err(describe)?);
    let mut key = [0u8; KEY_LEN];
    if bytes.len() != KEY_LEN {
        return Err(KeyError::WrongLength(bytes.len()));
    }
    key.copy_from_slice(&bytes);
    Ok(key)
}

fn describe(e: DecodeError) -> KeyError {
    KeyError::NotBase64(match e {
        DecodeError::InvalidByte(at, _) => format!("invalid character at offset {at}"),
        DecodeError::InvalidLength(_) => "its length is not a whole number of bytes".into(),
        DecodeError::InvalidLastSymbol { offset, .. } => {
            format!("non-canonical last character at offset {offset}")
        }
        DecodeError::InvalidPadding => "missing or misplaced '=' padding".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7748 section 6.1.
    const ALICE_PRIVATE: &str = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
    const ALICE_PUBLIC: &str = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";
    const BOB_PRIVATE: &str = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb";
    const BOB_PUBLIC: &str = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f";
    const SHARED: &str = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";

    fn hex(text: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).expect("hex");
        }
        out
    }

    fn private(hex_key: &str) -> PrivateKey {
        PrivateKey::from_base64(&BASE64.encode(hex(hex_key))).expect("private key")
    }

    fn public(hex_key: &str) -> PublicKey {
        PublicKey::from_base64(&BASE64.encode(hex(hex_key))).expect("public key")
    }

    #[test]
    fn x25519_matches_rfc7748() {
        let (alice, bob) = (private(ALICE_PRIVATE), private(BOB_PRIVATE));
        assert_eq!(alice.public(), public(ALICE_PUBLIC));
        assert_eq!(bob.public(), public(BOB_PUBLIC));
        assert_eq!(*alice.diffie_hellman(&bob.public()).unwrap(), hex(SHARED));
        assert_eq!(*bob.diffie_hellman(&alice.public()).unwrap(), hex(SHARED));
    }

    /// Pins the derivation: a change here breaks every deployed pair of
    /// nodes. The expected values were computed independently, with Python's
    /// hmac and hashlib (HKDF per RFC 5869) from the RFC 7748 shared secret.
    #[test]
    fn pair_key_and_tag_are_pinned() {
        let key = pair_key(
            &private(ALICE_PRIVATE),
            "hub1",
            &public(BOB_PUBLIC),
            "alice",
            "ninux",
        )
        .unwrap();
        assert_eq!(key.0, hex(PINNED_PAIR_KEY));
        assert_eq!(key.tag(b"keepalive"), hex(PINNED_HMAC)[..TAG_LEN]);
    }

    const PINNED_PAIR_KEY: &str =
        "587bf159d02cc063e32f25db8e2890856442c3013d4144d639438b4e03d36abf";
    /// The whole HMAC-SHA256; the tag is its first half.
    const PINNED_HMAC: &str = "9dcfa91b1c2368ff575a6b4486db9c190845e876dd02cc31526b64e36b1e7de1";

    #[test]
    fn both_ends_derive_the_same_key() {
        let (hub, spoke) = (PrivateKey::generate(), PrivateKey::generate());
        let at_hub = pair_key(&hub, "hub1", &spoke.public(), "alice", "ninux").unwrap();
        let at_spoke = pair_key(&spoke, "alice", &hub.public(), "hub1", "ninux").unwrap();
        assert_eq!(at_hub, at_spoke);
    }

    #[test]
    fn another_network_or_peer_gives_another_key() {
        let (hub, alice, bob) = (
            PrivateKey::generate(),
            PrivateKey::generate(),
            PrivateKey::generate(),
        );
        let base = pair_key(&hub, "hub1", &alice.public(), "alice", "ninux").unwrap();
        let other_net = pair_key(&hub, "hub1", &alice.public(), "alice", "other").unwrap();
        let other_peer = pair_key(&hub, "hub1", &bob.public(), "alice", "ninux").unwrap();
        let other_name = pair_key(&hub, "hub1", &alice.public(), "bob", "ninux").unwrap();
        assert_ne!(base, other_net);
        assert_ne!(base, other_peer);
        assert_ne!(base, other_name);
    }

    #[test]
    fn names_cannot_shift_across_the_separator() {
        let (a, b) = (PrivateKey::generate(), PrivateKey::generate());
        let one = pair_key(&a, "ab", &b.public(), "c", "n").unwrap();
        let two = pair_key(&a, "a", &b.public(), "bc", "n").unwrap();
        assert_ne!(one, two);
    }

    #[test]
    fn tag_verifies_and_tampering_fails() {
        let (a, b) = (PrivateKey::generate(), PrivateKey::generate());
        let key = pair_key(&a, "a", &b.public(), "b", "ninux").unwrap();
        let msg = b"lvn keepalive counter=7";
        let tag = key.tag(msg);
        assert!(key.verify(msg, &tag));

        let mut flipped = tag;
        flipped[TAG_LEN - 1] ^= 0x01;
        assert!(!key.verify(msg, &flipped));

        let mut other_msg = *msg;
        other_msg[0] ^= 0x80;
        assert!(!key.verify(&other_msg, &tag));

        assert!(!key.verify(msg, &tag[..TAG_LEN - 1]));
        assert!(!key.verify(msg, &[]));
        let full = Hmac::<Sha256>::new_from_slice(&key.0)
            .unwrap()
            .chain_update(msg)
            .finalize()
            .into_bytes();
        assert_eq!(full[..TAG_LEN], tag, "tag is the left half of HMAC-SHA256");
        assert!(!key.verify(msg, &full), "a 32-byte tag is refused");

        let stranger = pair_key(&a, "a", &PrivateKey::generate().public(), "b", "ninux").unwrap();
        assert!(!stranger.verify(msg, &tag));
    }

    #[test]
    fn low_order_public_keys_are_refused() {
        let me = PrivateKey::generate();
        // Points of order 1, 4 and 8 (the curve's small subgroup).
        for low in [
            [0u8; 32],
            hex("0100000000000000000000000000000000000000000000000000000000000000"),
            hex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
            hex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
        ] {
            let peer = PublicKey(low);
            assert_eq!(
                pair_key(&me, "a", &peer, "b", "ninux").unwrap_err(),
                KeyError::LowOrder(peer)
            );
        }
    }

    #[test]
    fn base64_round_trips() {
        let key = PrivateKey::generate();
        let text = key.to_base64();
        assert_eq!(text.len(), 44);
        let back = PrivateKey::from_base64(&text).unwrap();
        assert_eq!(back.public(), key.public());
        assert_eq!(back.to_base64(), text);

        let public = key.public();
        assert_eq!(PublicKey::from_base64(&public.to_base64()), Ok(public));
        assert_eq!(public.to_string().parse::<PublicKey>(), Ok(public));
        assert_eq!(public.to_string(), public.to_base64());
    }

    #[test]
    fn bad_base64_says_what_is_wrong() {
        let msg = |text: &str| PublicKey::from_base64(text).unwrap_err().to_string();
        assert_eq!(
            msg("not a key!"),
            "not base64 (invalid character at offset 3)"
        );
        assert_eq!(
            msg("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB="),
            "not base64 (non-canonical last character at offset 42)"
        );
        assert_eq!(
            msg("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            "not base64 (missing or misplaced '=' padding)"
        );
        assert_eq!(
            msg("AAAAA"),
            "not base64 (its length is not a whole number of bytes)"
        );
        assert_eq!(
            msg("AAAAAAAAAAAAAAAAAAAAAA=="),
            "decodes to 16 bytes, expected 32"
        );
        assert_eq!(msg(""), "decodes to 0 bytes, expected 32");
        let long = BASE64.encode([7u8; 33]);
        assert_eq!(msg(&long), "decodes to 33 bytes, expected 32");
        assert_eq!(
            PrivateKey::from_base64(&long).unwrap_err(),
            KeyError::WrongLength(33)
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let key = PrivateKey::generate();
        assert_eq!(format!("{key:?}"), "PrivateKey(..)");
        let pair = pair_key(&key, "a", &PrivateKey::generate().public(), "b", "n").unwrap();
        assert_eq!(format!("{pair:?}"), "PairKey(..)");
    }
}
