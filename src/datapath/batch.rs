//! Many rtnetlink requests per `sendto`. The kernel handles the messages of
//! one datagram one after the other, and acknowledges each (an error in one
//! does not stop the next), so a batch of fdb, neighbour and route requests
//! costs one system call per chunk instead of one per entry. Acks are read
//! after each chunk, so the receive buffer never holds more than a chunk's.
//! Messages the crate does not know (nexthop objects) go as raw bytes.

use std::{io, os::fd::AsRawFd};

use rtnetlink::{
    packet_core::{
        DecodeError, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE,
        NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
    },
    packet_route::RouteNetlinkMessage,
    sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE},
};
use tokio::io::{Interest, unix::AsyncFd};

use super::netlink::Mode;

/// Bytes of requests per `sendto`: about 400 fdb entries.
const CHUNK: usize = 32 << 10;
/// Receive buffer: a chunk's acks with room to spare.
const RX_BUFFER: usize = 4 << 20;

/// One request of a batch.
#[derive(Debug, Clone)]
pub enum Request {
    Route(RouteNetlinkMessage, Mode),
    /// A message the crate has no type for: netlink type and payload.
    Raw {
        kind: u16,
        mode: Mode,
        payload: Vec<u8>,
    },
}

impl From<(RouteNetlinkMessage, Mode)> for Request {
    fn from((m, mode): (RouteNetlinkMessage, Mode)) -> Request {
        Request::Route(m, mode)
    }
}

/// NLMSG_DONE and NLMSG_ERROR, and the length of a netlink header.
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const HEADER: usize = 16;

/// A socket for batched requests; one batch at a time.
pub struct Batch {
    fd: AsyncFd<Socket>,
    seq: u32,
    out: Vec<u8>,
    inb: Vec<u8>,
}

impl Batch {
    /// Open in the current network namespace (inside a tokio runtime).
    pub fn open() -> io::Result<Batch> {
        let mut s = Socket::new(NETLINK_ROUTE)?;
        s.bind_auto()?;
        s.connect(&SocketAddr::new(0, 0))?;
        // Acks without a copy of the request: a chunk's acks stay small.
        s.set_cap_ack(true)?;
        s.set_non_blocking(true)?;
        let _ = s.set_rx_buf_sz(RX_BUFFER);
        debug_assert!(s.as_raw_fd() >= 0);
        // SAFETY: the socket is ours alone and stays open as long as the
        // AsyncFd that owns it.
        let fd = unsafe { AsyncFd::register(s) }.map_err(|e| e.into_parts().1)?;
        Ok(Batch {
            fd,
            seq: 0,
            out: Vec::with_capacity(CHUNK + 4096),
            inb: Vec::with_capacity(64 << 10),
        })
    }

    /// Send every request, in order, and return each one's result.
    pub async fn ack_all(&mut self, requests: Vec<Request>) -> io::Result<Vec<io::Result<()>>> {
        let mut results: Vec<Option<io::Result<()>>> = Vec::with_capacity(requests.len());
        let mut start = 0;
        let total = requests.len();
        let mut pending = requests.into_iter();
        while start < total {
            // One chunk: serialize until it is full.
            self.out.clear();
            let first = self.seq.wrapping_add(1);
            let mut count = 0;
            for r in pending.by_ref() {
                self.seq = self.seq.wrapping_add(1);
                match r {
                    Request::Route(msg, mode) => {
                        let mut m = NetlinkMessage::from(msg);
                        m.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags(mode);
                        m.header.sequence_number = self.seq;
                        m.finalize();
                        let at = self.out.len();
                        self.out.resize(at + m.buffer_len(), 0);
                        m.serialize(&mut self.out[at..]);
                    }
                    Request::Raw {
                        kind,
                        mode,
                        payload,
                    } => {
                        let f = NLM_F_REQUEST | NLM_F_ACK | flags(mode);
                        raw_message(&mut self.out, kind, f, self.seq, &payload);
                    }
                }
                results.push(None);
                count += 1;
                if self.out.len() >= CHUNK {
                    break;
                }
            }
            self.send().await?;
            self.read_acks(first, count, &mut results[start..start + count])
                .await?;
            start += count;
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(io::Error::other("no acknowledgement"))))
            .collect())
    }

    /// Dump messages the crate has no type for (nexthops): send request
    /// `kind` with `payload`, and hand each reply's type and payload to
    /// `each`.
    pub async fn dump_raw(
        &mut self,
        kind: u16,
        payload: &[u8],
        mut each: impl FnMut(u16, &[u8]),
    ) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.out.clear();
        raw_message(
            &mut self.out,
            kind,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            payload,
        );
        self.send().await?;
        loop {
            let mut guard = self.fd.readable().await?;
            self.inb.clear();
            let inb = &mut self.inb;
            let n = match guard.try_io(|s| s.get_ref().recv(inb, 0)) {
                Ok(r) => r?,
                Err(_would_block) => continue,
            };
            for (t, s, body) in raw_datagram(&self.inb[..n]) {
                if s != seq {
                    continue;
                }
                if t != NLMSG_DONE && t != NLMSG_ERROR {
                    each(t, body);
                    continue;
                }
                // Both carry an error code first (0: the dump is complete).
                let code = body
                    .get(..4)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0);
                return if code < 0 {
                    Err(io::Error::from_raw_os_error(-code))
                } else {
                    Ok(())
                };
            }
        }
    }

    async fn send(&mut self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.ready(Interest::WRITABLE).await?;
            let out = &self.out;
            match guard.try_io(|s| s.get_ref().send(out, 0)) {
                Ok(Ok(n)) if n == out.len() => return Ok(()),
                Ok(Ok(n)) => {
                    return Err(io::Error::other(format!(
                        "netlink took {n} of {} bytes",
                        out.len()
                    )));
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Read acks until each of the `count` requests from sequence `first`
    /// has its result.
    async fn read_acks(
        &mut self,
        first: u32,
        count: usize,
        results: &mut [Option<io::Result<()>>],
    ) -> io::Result<()> {
        let mut missing = count;
        while missing > 0 {
            let mut guard = self.fd.readable().await?;
            self.inb.clear();
            let inb = &mut self.inb;
            let n = match guard.try_io(|s| s.get_ref().recv(inb, 0)) {
                Ok(r) => r?,
                Err(_would_block) => continue,
            };
            for m in datagram(&self.inb[..n]) {
                let m = m.map_err(|e| io::Error::other(format!("decoding an ack: {e}")))?;
                let i = m.header.sequence_number.wrapping_sub(first) as usize;
                if let (NetlinkPayload::Error(e), Some(slot)) = (m.payload, results.get_mut(i))
                    && slot.is_none()
                {
                    *slot = Some(match e.code {
                        None => Ok(()),
                        Some(_) => Err(e.to_io()),
                    });
                    missing -= 1;
                }
            }
        }
        Ok(())
    }
}

/// The messages of one netlink datagram, in order (each padded to 4
/// bytes); a message that does not decode ends it with its error.
pub fn datagram(
    mut bytes: &[u8],
) -> impl Iterator<Item = Result<NetlinkMessage<RouteNetlinkMessage>, DecodeError>> + '_ {
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || bytes.len() < 16 {
            return None;
        }
        let m = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes) {
            Ok(m) => m,
            Err(e) => {
                failed = true;
                return Some(Err(e));
            }
        };
        let len = (m.header.length as usize + 3) & !3;
        bytes = if len == 0 || len > bytes.len() {
            &[]
        } else {
            &bytes[len..]
        };
        Some(Ok(m))
    })
}

/// Append one netlink message: header (length, type, flags, sequence,
/// port 0) and payload, padded to 4 bytes.
fn raw_message(out: &mut Vec<u8>, kind: u16, flags: u16, seq: u32, payload: &[u8]) {
    let len = (HEADER + payload.len()) as u32;
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize((out.len() + 3) & !3, 0);
}

/// The messages of a datagram as (type, sequence, payload), undecoded; a
/// message whose length does not fit ends it.
pub fn raw_datagram(bytes: &[u8]) -> impl Iterator<Item = (u16, u32, &[u8])> {
    raw_messages(bytes).map(|m| {
        let kind = u16::from_ne_bytes([m[4], m[5]]);
        let seq = u32::from_ne_bytes([m[8], m[9], m[10], m[11]]);
        (kind, seq, &m[HEADER..])
    })
}

/// The messages of a datagram, each whole (header included), undecoded;
/// a message whose length does not fit ends it.
pub fn raw_messages(mut bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if bytes.len() < HEADER {
            return None;
        }
        let len = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        if len < HEADER || len > bytes.len() {
            return None;
        }
        let m = &bytes[..len];
        bytes = &bytes[((len + 3) & !3).min(bytes.len())..];
        Some(m)
    })
}

fn flags(mode: Mode) -> u16 {
    match mode {
        Mode::Create => NLM_F_CREATE | NLM_F_EXCL,
        Mode::Replace => NLM_F_CREATE | NLM_F_REPLACE,
        Mode::Plain => 0,
        Mode::Append => NLM_F_CREATE | NLM_F_APPEND,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use rtnetlink::packet_route::route::{
        RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
        RouteType,
    };

    use super::*;

    /// A blackhole route to 198.51.100.0/24 with metric `metric` (needs no
    /// device).
    fn route(metric: u32) -> RouteNetlinkMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = rtnetlink::packet_route::AddressFamily::Inet;
        m.header.destination_prefix_length = 24;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Static;
        m.header.kind = RouteType::BlackHole;
        m.header.scope = RouteScope::Universe;
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(
                Ipv4Addr::new(198, 51, 100, 0),
            )));
        m.attributes.push(RouteAttribute::Priority(metric));
        RouteNetlinkMessage::NewRoute(m)
    }

    /// Against the running kernel, in a network namespace of this thread's
    /// own (root only): 1,000 requests over several chunks, one of them a
    /// duplicate in the middle; each gets its own result, in order, and the
    /// ones after the failure are carried out.
    #[test]
    fn each_request_of_a_batch_gets_its_own_result() {
        crate::datapath::in_own_netns(|| async {
            let mut b = Batch::open().expect("open");
            let mut requests: Vec<Request> = (1..=1000)
                .map(|m| (route(m), Mode::Create).into())
                .collect();
            requests[600] = (route(7), Mode::Create).into();
            let results = b.ack_all(requests).await.expect("batch");
            assert_eq!(results.len(), 1000);
            for (i, r) in results.iter().enumerate() {
                if i == 600 {
                    let e = r.as_ref().expect_err("the duplicate is refused");
                    assert_eq!(e.raw_os_error(), Some(libc::EEXIST), "{e}");
                } else {
                    assert!(r.is_ok(), "request {i}: {r:?}");
                }
            }
            // A second batch on the same socket: sequence numbers go on.
            let again = b
                .ack_all(vec![
                    (route(601), Mode::Create).into(),
                    (route(5000), Mode::Create).into(),
                ])
                .await
                .expect("batch");
            assert!(again[0].is_ok(), "601 was not made by the first batch");
            assert!(again[1].is_ok());
        });
    }
}
