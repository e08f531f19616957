use crate::probe::{PrivateKey, PublicKey, auth::KeyError, pair_key};

/// A fixed private key to test public keys with. X25519 clamps every private
/// key to a multiple of 8, and such a key sends a point to zero exactly when
/// the point has low order, so any key gives the same answer. A constant
/// keeps validation free of randomness.
const PROBE_PRIVATE_KEY: &str = "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=";

/// Parse a node's `public_key`: standard base64 of 32 bytes that are not a
/// low-order point. The error completes "public_key of node 'NAME' ...".
pub fn parse_public_key(text: &str) -> Result<PublicKey, String> {
    let key = PublicKey::from_base64(text.trim()).map_err(|e| format!("is invalid: {e}"))?;
    if is_low_order(&key) {
        return Err(
            "is a low-order point: x25519 with it gives all zeros, so every pair key \
             made with it would be known to anyone; make a key pair with \
             `lvn genkey /etc/lvn/private.key` and use the public key it prints"
                .into(),
        );
    }
    Ok(key)
}

/// The check the daemon makes when it derives a pair key
/// (`probe::auth`: the X25519 result must not be all zeros), made now, so
/// `lvn check` refuses the key instead of the daemon failing later.
fn is_low_order(key: &PublicKey) -> bool {
    PrivateKey::from_base64(PROBE_PRIVATE_KEY).is_ok_and(|probe| {
        matches!(
            pair_key(&probe, "check", key, "node", "lvn"),
            Err(KeyError::LowOrder(_))
        )
    })
}
