//! Dumps read as bytes. `Netlink::dump` decodes every message into owned
//! values (a `Vec` of attributes and a `Vec` per address); a hub's
//! neighbour and FDB dumps are 100k messages each, so those are read here
//! instead, on a socket of their own, and each message's payload is handed
//! over as it sits in the receive buffer, for the caller to pick the few
//! attributes it needs.

use std::io;

use rtnetlink::{
    packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NetlinkMessage},
    packet_route::RouteNetlinkMessage,
    sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE},
};
use tokio::io::unix::AsyncFd;

/// Receive buffer per `recv`: the kernel fills at most 32 KiB per round of
/// a dump, whatever the reader offers.
const RECV_BUFFER: usize = 64 << 10;
/// Bytes of a netlink message header.
const HEADER: usize = 16;

/// A socket for one dump, with the request `msg` ready to send.
fn open(msg: RouteNetlinkMessage) -> io::Result<(Socket, Vec<u8>)> {
    let mut s = Socket::new(NETLINK_ROUTE)?;
    s.bind_auto()?;
    s.connect(&SocketAddr::new(0, 0))?;
    // The kernel filters by the request's ifindex only with strict checks.
    s.set_netlink_get_strict_chk(true)?;
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    req.header.sequence_number = 1;
    req.finalize();
    let mut out = vec![0; req.buffer_len()];
    req.serialize(&mut out);
    Ok((s, out))
}

/// Send the dump request `msg` and call `each(message type, payload)` for
/// every message of the answer, in order, until the kernel says done.
pub async fn dump_raw(
    msg: RouteNetlinkMessage,
    mut each: impl FnMut(u16, &[u8]),
) -> io::Result<()> {
    let (s, out) = open(msg)?;
    s.set_non_blocking(true)?;
    // SAFETY: the socket is ours alone and stays open as long as the
    // AsyncFd that owns it.
    let fd = unsafe { AsyncFd::register(s) }.map_err(|e| e.into_parts().1)?;
    loop {
        let mut guard = fd.writable().await?;
        match guard.try_io(|s| s.get_ref().send(&out, 0)) {
            Ok(r) => {
                r?;
                break;
            }
            Err(_would_block) => continue,
        }
    }

    let mut buf: Vec<u8> = Vec::with_capacity(RECV_BUFFER);
    loop {
        let mut guard = fd.readable().await?;
        buf.clear();
        let n = match guard.try_io(|s| s.get_ref().recv(&mut buf, 0)) {
            Ok(r) => r?,
            Err(_would_block) => continue,
        };
        if walk(&buf[..n.min(buf.len())], &mut each)? {
            return Ok(());
        }
    }
}

/// [`dump_raw`] on the calling thread, blocking: for a dump run on a
/// thread of its own while the loop's thread does other dumps. The kernel
/// does a dump's work in the reader's `recv`, so two threads overlap it;
/// a VXLAN FDB dump at 100k entries is about a second of that work.
pub fn dump_raw_blocking(
    msg: RouteNetlinkMessage,
    mut each: impl FnMut(u16, &[u8]),
) -> io::Result<()> {
    let (s, out) = open(msg)?;
    s.send(&out, 0)?;
    let mut buf: Vec<u8> = Vec::with_capacity(RECV_BUFFER);
    // A dump ends with NLMSG_DONE; each round brings at least one message.
    loop {
        buf.clear();
        let n = s.recv(&mut buf, 0)?;
        if n == 0 {
            return Err(io::Error::other("the kernel closed a dump early"));
        }
        if walk(&buf[..n.min(buf.len())], &mut each)? {
            return Ok(());
        }
    }
}

/// The messages of one datagram of a dump: `true` once the dump is done.
fn walk(mut bytes: &[u8], each: &mut impl FnMut(u16, &[u8])) -> io::Result<bool> {
    while bytes.len() >= HEADER {
        let len = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let kind = u16::from_ne_bytes([bytes[4], bytes[5]]);
        if len < HEADER || len > bytes.len() {
            return Err(io::Error::other(format!(
                "a dump message of {len} bytes in a datagram of {}",
                bytes.len()
            )));
        }
        let payload = &bytes[HEADER..len];
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let code = payload
                    .get(..4)
                    .map_or(0, |c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
                if code != 0 {
                    return Err(io::Error::from_raw_os_error(-code));
                }
                return Ok(true);
            }
            _ => each(kind, payload),
        }
        bytes = &bytes[((len + 3) & !3).min(bytes.len())..];
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u16, payload: &[u8]) -> Vec<u8> {
        let len = HEADER + payload.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(payload);
        m.resize((len + 3) & !3, 0);
        m
    }

    #[test]
    fn walks_messages_until_done() {
        let mut d = message(28, &[1, 2, 3]);
        d.extend(message(28, &[4]));
        let mut seen = Vec::new();
        let done = walk(&d, &mut |k, p| seen.push((k, p.to_vec()))).expect("walks");
        assert!(!done);
        assert_eq!(seen, vec![(28, vec![1, 2, 3]), (28, vec![4])]);

        d.extend(message(NLMSG_DONE, &[0; 4]));
        d.extend(message(28, &[5]));
        seen.clear();
        assert!(walk(&d, &mut |k, p| seen.push((k, p.to_vec()))).expect("walks"));
        assert_eq!(seen.len(), 2, "nothing after done");
    }

    #[test]
    fn an_error_ends_the_dump_with_its_errno() {
        let d = message(NLMSG_ERROR, &(-22i32).to_ne_bytes());
        let e = walk(&d, &mut |_, _| {}).expect_err("an error");
        assert_eq!(e.raw_os_error(), Some(22));
        let short = &message(28, &[1, 2, 3, 4])[..18];
        assert!(walk(short, &mut |_, _| {}).is_err(), "a cut message");
    }
}
