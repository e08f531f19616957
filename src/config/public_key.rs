use crate::probe::PublicKey;

/// Parse a node's `public_key`: standard base64 of 32 bytes that are not a
/// low-order point. The error completes "public_key of node 'NAME' ...".
pub fn parse_public_key(text: &str) -> Result<PublicKey, String> {
    let key = PublicKey::from_base64(text.trim()).map_err(|e| format!("is invalid: {e}"))?;
    if key.is_low_order() {
        return Err(
            "is a low-order point: x25519 with it gives all zeros, so every pair key \
             made with it would be known to anyone; make a key pair with \
             `lvn genkey /etc/lvn/private.key` and use the public key it prints"
                .into(),
        );
    }
    Ok(key)
}
