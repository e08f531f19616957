//! Why a message is refused, and the one check every message goes through
//! under `auth = "keys"`: its tag, then its counter. Hub and spoke share
//! it, so the two ends cannot drift apart.

use super::{PairKey, wire};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("rate limited")]
    RateLimited,
    #[error("malformed: {0}")]
    Malformed(wire::WireError),
    #[error("not a keepalive")]
    NotKeepalive,
    #[error("addressed to another node")]
    NotForMe,
    #[error("unknown node")]
    Unknown,
    #[error("inner source is not the node the keepalive names")]
    InnerMismatch,
    #[error("missing tag")]
    MissingTag,
    #[error("bad tag")]
    BadTag,
    #[error("replayed or old counter")]
    Replay,
    #[error("counter older than the hub accepts from a peer it has no counter for")]
    Stale,
}

impl Reject {
    /// Counter label, e.g. for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Reject::RateLimited => "rate_limited",
            Reject::Malformed(_) => "malformed",
            Reject::NotKeepalive => "not_keepalive",
            Reject::NotForMe => "not_for_me",
            Reject::Unknown => "unknown_node",
            Reject::InnerMismatch => "inner_mismatch",
            Reject::MissingTag => "missing_tag",
            Reject::BadTag => "bad_tag",
            Reject::Replay => "replay",
            Reject::Stale => "stale_counter",
        }
    }
}

/// What a verified counter must be to be fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Strictly above this, the highest counter accepted from the sender:
    /// anything else is a replay.
    Above(u64),
    /// Nothing is known of the sender: at least this, or it is stale.
    AtLeast(u64),
}

/// Under `auth = "keys"`: whether `decoded` (from `payload`) carries a tag
/// made with `key`, then whether its counter is fresh. The tag goes first,
/// so a counter is only ever judged once it is known to be the sender's.
/// No key for the sender means it is not a node this one may talk to.
pub fn authenticate(
    key: Option<&PairKey>,
    payload: &[u8],
    decoded: &wire::Decoded,
    fresh: Freshness,
) -> Result<(), Reject> {
    let key = key.ok_or(Reject::Unknown)?;
    let tag = decoded.tag.ok_or(Reject::MissingTag)?;
    let signed = payload.get(..decoded.signed_len).ok_or(Reject::BadTag)?;
    if !key.verify(signed, &tag) {
        return Err(Reject::BadTag);
    }
    let counter = decoded.message.counter;
    match fresh {
        Freshness::Above(last) if counter <= last => Err(Reject::Replay),
        Freshness::AtLeast(floor) if counter < floor => Err(Reject::Stale),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{
        PrivateKey,
        hub::seal,
        pair_key,
        wire::{Kind, Message},
    };

    fn keys() -> (PairKey, PairKey) {
        let (a, b) = (PrivateKey::generate(), PrivateKey::generate());
        let key = pair_key(&a, "a", &b.public(), "b", "n").expect("pair key");
        let other = pair_key(&a, "a", &PrivateKey::generate().public(), "b", "n").expect("key");
        (key, other)
    }

    fn message(counter: u64, key: Option<&PairKey>) -> (Vec<u8>, wire::Decoded) {
        let m = Message {
            kind: Kind::Keepalive,
            counter,
            from: "b".into(),
            to: "a".into(),
            probe: None,
        };
        let bytes = seal(&m, key);
        let decoded = wire::decode(&bytes).expect("decodes");
        (bytes, decoded)
    }

    #[test]
    fn tag_first_then_counter() {
        let (key, other) = keys();
        let check =
            |k: Option<&PairKey>, bytes: &[u8], d: &wire::Decoded, f| authenticate(k, bytes, d, f);
        let (b, d) = message(10, Some(&key));
        assert_eq!(check(Some(&key), &b, &d, Freshness::Above(9)), Ok(()));
        assert_eq!(
            check(Some(&key), &b, &d, Freshness::Above(10)),
            Err(Reject::Replay)
        );
        assert_eq!(check(Some(&key), &b, &d, Freshness::AtLeast(10)), Ok(()));
        assert_eq!(
            check(Some(&key), &b, &d, Freshness::AtLeast(11)),
            Err(Reject::Stale)
        );
        // A wrong key fails on the tag whatever the counter.
        assert_eq!(
            check(Some(&other), &b, &d, Freshness::Above(10)),
            Err(Reject::BadTag)
        );
        assert_eq!(
            check(None, &b, &d, Freshness::Above(0)),
            Err(Reject::Unknown)
        );
        let (b, d) = message(10, None);
        assert_eq!(
            check(Some(&key), &b, &d, Freshness::Above(0)),
            Err(Reject::MissingTag)
        );
    }
}
