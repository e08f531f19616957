//! The keepalive wire format. A keepalive travels as an Ethernet frame with
//! EtherType [`ETHERTYPE`] *inside* the VXLAN tunnel, so it leaves the spoke
//! by the very UDP flow (source port pinned to the network's port) that
//! carries its data: the NAT mapping a hub learns from it is the mapping of
//! the data.
//!
//! ```text
//! offset size
//!  0     4    magic "LVN1"
//!  4     1    kind: 1 keepalive (spoke -> hub), 2 answer (hub -> spoke)
//!  5     1    flags: bit 0 = a 16-byte tag follows the body,
//!             bit 1 = path MTU probe (keepalive) / its answer (answer)
//!  6     2    reserved, zero
//!  8     8    counter, big endian: strictly increasing per sender
//! 16     1    n = length of the sender's node name (1-63)
//! 17     n    sender's node name
//!  .     1    m = length of the receiver's node name (1-63)
//!  .     m    receiver's node name
//!  answer only:
//!  .     1    family of the address the hub saw: 4 or 6
//!  .     2    port the hub saw, big endian
//!  .     4|16 address the hub saw
//!  probe flag only:
//!  .     2    p, big endian: keepalive: bytes of padding that follow;
//!             answer: the whole length of the probe it answers
//!  .     p    keepalive only: zero bytes, so the frame fills the device MTU
//!  .    16    tag (if flagged): HMAC-SHA256(pair key, every byte before it), truncated
//! ```
//!
//! A probe is a keepalive padded to the device's MTU: sent with the
//! device's outer DF, it tells whether the path carries full-size packets
//! (see `pmtu.rs`).
//! Anything else (short, long, unknown kind or flags, bad names, trailing
//! bytes) is rejected by [`decode`], which never panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// IEEE 802 "local experimental" EtherType 1.
pub const ETHERTYPE: u16 = 0x88b5;
pub const MAGIC: [u8; 4] = *b"LVN1";
pub const TAG_LEN: usize = 16;
pub const MAX_NAME: usize = 63;
/// Longest valid message without padding: header, two names, an IPv6
/// answer, a probe length, a tag.
pub const MAX_MESSAGE: usize = 16 + 1 + MAX_NAME + 1 + MAX_NAME + 19 + 2 + TAG_LEN;
/// Longest probe (padding included): device MTUs up to this are checked.
pub const MAX_PROBE: usize = 16384;

const KIND_KEEPALIVE: u8 = 1;
const KIND_ANSWER: u8 = 2;
const FLAG_TAG: u8 = 1;
const FLAG_PROBE: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Spoke -> hub.
    Keepalive,
    /// Hub -> spoke, with the spoke's reflexive address as the hub saw it.
    Answer { seen: SocketAddr },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub kind: Kind,
    pub counter: u64,
    pub from: String,
    pub to: String,
    /// Path MTU probe: on a keepalive the padding length, on an answer the
    /// length of the probe answered.
    pub probe: Option<u16>,
}

/// A decoded message and what a verifier needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub message: Message,
    /// Bytes covered by the tag.
    pub signed_len: usize,
    pub tag: Option<[u8; TAG_LEN]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("too short")]
    Short,
    #[error("too long")]
    Long,
    #[error("bad magic")]
    Magic,
    #[error("unknown kind {0}")]
    Kind(u8),
    #[error("unknown flags {0:#x}")]
    Flags(u8),
    #[error("reserved bytes set")]
    Reserved,
    #[error("bad node name")]
    Name,
    #[error("bad address family {0}")]
    Family(u8),
    #[error("trailing bytes")]
    Trailing,
}

impl WireError {
    /// Counter label, e.g. for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            WireError::Short => "short",
            WireError::Long => "long",
            WireError::Magic => "magic",
            WireError::Kind(_) => "kind",
            WireError::Flags(_) => "flags",
            WireError::Reserved => "reserved",
            WireError::Name => "name",
            WireError::Family(_) => "family",
            WireError::Trailing => "trailing",
        }
    }
}

/// The message body (everything a tag covers), flagged as tagged if `tagged`.
/// The caller appends the tag.
pub fn encode_body(m: &Message, tagged: bool) -> Vec<u8> {
    let mut b = Vec::with_capacity(MAX_MESSAGE);
    b.extend_from_slice(&MAGIC);
    b.push(match m.kind {
        Kind::Keepalive => KIND_KEEPALIVE,
        Kind::Answer { .. } => KIND_ANSWER,
    });
    let probe = if m.probe.is_some() { FLAG_PROBE } else { 0 };
    b.push(if tagged { FLAG_TAG } else { 0 } | probe);
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&m.counter.to_be_bytes());
    for name in [&m.from, &m.to] {
        let n = &name.as_bytes()[..name.len().min(MAX_NAME)];
        b.push(n.len() as u8);
        b.extend_from_slice(n);
    }
    if let Kind::Answer { seen } = m.kind {
        match seen.ip() {
            IpAddr::V4(a) => {
                b.push(4);
                b.extend_from_slice(&seen.port().to_be_bytes());
                b.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                b.push(6);
                b.extend_from_slice(&seen.port().to_be_bytes());
                b.extend_from_slice(&a.octets());
            }
        }
    }
    if let Some(p) = m.probe {
        b.extend_from_slice(&p.to_be_bytes());
        if m.kind == Kind::Keepalive {
            b.resize(b.len() + usize::from(p), 0);
        }
    }
    b
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.at.checked_add(n).ok_or(WireError::Short)?;
        let s = self.buf.get(self.at..end).ok_or(WireError::Short)?;
        self.at = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn name(&mut self) -> Result<String, WireError> {
        let n = self.byte()? as usize;
        if n == 0 || n > MAX_NAME {
            return Err(WireError::Name);
        }
        let s = self.take(n)?;
        let ok = s
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            return Err(WireError::Name);
        }
        // Checked ASCII above.
        Ok(s.iter().map(|&b| b as char).collect())
    }
}

pub fn decode(buf: &[u8]) -> Result<Decoded, WireError> {
    if buf.len() > MAX_PROBE {
        return Err(WireError::Long);
    }
    let mut r = Reader { buf, at: 0 };
    if r.take(4)? != MAGIC {
        return Err(WireError::Magic);
    }
    let kind = r.byte()?;
    let flags = r.byte()?;
    if flags & !(FLAG_TAG | FLAG_PROBE) != 0 {
        return Err(WireError::Flags(flags));
    }
    if r.take(2)? != [0, 0] {
        return Err(WireError::Reserved);
    }
    let mut counter = [0; 8];
    counter.copy_from_slice(r.take(8)?);
    let from = r.name()?;
    let to = r.name()?;
    let kind = match kind {
        KIND_KEEPALIVE => Kind::Keepalive,
        KIND_ANSWER => {
            let family = r.byte()?;
            let port = u16::from_be_bytes([r.byte()?, r.byte()?]);
            let ip = match family {
                4 => {
                    let o = r.take(4)?;
                    IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], o[3]))
                }
                6 => {
                    let mut o = [0; 16];
                    o.copy_from_slice(r.take(16)?);
                    IpAddr::V6(Ipv6Addr::from(o))
                }
                f => return Err(WireError::Family(f)),
            };
            Kind::Answer {
                seen: SocketAddr::new(ip, port),
            }
        }
        k => return Err(WireError::Kind(k)),
    };
    let probe = if flags & FLAG_PROBE != 0 {
        let p = u16::from_be_bytes([r.byte()?, r.byte()?]);
        if kind == Kind::Keepalive && r.take(usize::from(p))?.iter().any(|b| *b != 0) {
            return Err(WireError::Reserved);
        }
        Some(p)
    } else {
        None
    };
    if probe.is_none() && buf.len() > MAX_MESSAGE {
        return Err(WireError::Long);
    }
    let signed_len = r.at;
    let tag = if flags & FLAG_TAG != 0 {
        let mut t = [0; TAG_LEN];
        t.copy_from_slice(r.take(TAG_LEN)?);
        Some(t)
    } else {
        None
    };
    if r.at != buf.len() {
        return Err(WireError::Trailing);
    }
    Ok(Decoded {
        message: Message {
            kind,
            counter: u64::from_be_bytes(counter),
            from,
            to,
            probe,
        },
        signed_len,
        tag,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn keepalive() -> Message {
        Message {
            kind: Kind::Keepalive,
            counter: 42,
            from: "alice".into(),
            to: "hub1".into(),
            probe: None,
        }
    }

    #[test]
    fn a_probe_fills_its_length_and_its_answer_says_which() {
        let probe = Message {
            probe: Some(1000),
            ..keepalive()
        };
        let b = encode_body(&probe, false);
        assert_eq!(b.len(), 16 + 6 + 5 + 2 + 1000);
        assert_eq!(decode(&b).unwrap().message, probe);
        let mut bad = b.clone();
        bad[500] = 1;
        assert_eq!(decode(&bad), Err(WireError::Reserved));
        let answer = Message {
            kind: Kind::Answer {
                seen: "198.51.100.2:40001".parse().unwrap(),
            },
            probe: Some(1450),
            ..keepalive()
        };
        let b = encode_body(&answer, false);
        assert!(b.len() < MAX_MESSAGE);
        assert_eq!(decode(&b).unwrap().message, answer);
        assert_eq!(decode(&vec![0; MAX_PROBE + 1]), Err(WireError::Long));
    }

    #[test]
    fn round_trip_with_and_without_tag() {
        let m = keepalive();
        let body = encode_body(&m, false);
        let d = decode(&body).unwrap();
        assert_eq!(d.message, m);
        assert_eq!(d.tag, None);
        assert_eq!(d.signed_len, body.len());

        let answer = Message {
            kind: Kind::Answer {
                seen: "[2001:db8::7]:40059".parse().unwrap(),
            },
            ..m
        };
        let mut b = encode_body(&answer, true);
        let signed = b.len();
        b.extend_from_slice(&[7; TAG_LEN]);
        let d = decode(&b).unwrap();
        assert_eq!(d.message, answer);
        assert_eq!(d.signed_len, signed);
        assert_eq!(d.tag, Some([7; TAG_LEN]));
    }

    #[test]
    fn rejects_malformed() {
        let b = encode_body(&keepalive(), false);
        assert_eq!(decode(&b[..10]), Err(WireError::Short));
        let mut t = b.clone();
        t.push(0);
        assert_eq!(decode(&t), Err(WireError::Trailing));
        let mut t = b.clone();
        t[0] = b'X';
        assert_eq!(decode(&t), Err(WireError::Magic));
        let mut t = b.clone();
        t[4] = 9;
        assert_eq!(decode(&t), Err(WireError::Kind(9)));
        let mut t = b.clone();
        t[5] = 4;
        assert_eq!(decode(&t), Err(WireError::Flags(4)));
        let mut t = b.clone();
        t[17] = b'/';
        assert_eq!(decode(&t), Err(WireError::Name));
        // Flagged as tagged but no tag.
        let t = encode_body(&keepalive(), true);
        assert_eq!(decode(&t), Err(WireError::Short));
        // Longer than any message without padding.
        let mut t = b.clone();
        t.resize(MAX_MESSAGE + 1, 0);
        assert_eq!(decode(&t), Err(WireError::Long));
    }

    proptest! {
        /// Arbitrary bytes never panic, and whatever decodes re-encodes to
        /// the same bytes.
        #[test]
        fn decoder_total_and_canonical(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(d) = decode(&bytes) {
                let mut again = encode_body(&d.message, d.tag.is_some());
                if let Some(t) = d.tag {
                    again.extend_from_slice(&t);
                }
                prop_assert_eq!(again, bytes);
            }
        }

        /// Mutating a valid message never panics either.
        #[test]
        fn mutations_never_panic(i in 0usize..40, v in any::<u8>(), cut in 0usize..40) {
            let mut b = encode_body(&keepalive(), true);
            b.extend_from_slice(&[1; TAG_LEN]);
            let i = i % b.len();
            b[i] = v;
            b.truncate(b.len() - cut.min(b.len()));
            let _ = decode(&b);
        }
    }
}
