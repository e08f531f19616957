//! A thin rtnetlink client: dumps, and acknowledged requests one at a time
//! (devices); entries go in batches (`batch.rs`).

use std::io;

use futures::StreamExt;
use rtnetlink::{
    Handle,
    packet_core::{
        NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE,
        NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
    },
    packet_route::RouteNetlinkMessage,
    sys::AsyncSocket,
};

/// Receive buffer of the socket: acknowledgements of a full batch in
/// flight must fit, or the kernel drops them and requests never complete.
const RX_BUFFER: usize = 8 << 20;

/// How a write request treats an existing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Create; fail if it exists.
    Create,
    /// Create or replace.
    Replace,
    /// Modify or delete an existing object.
    Plain,
    /// Create, beside entries with the same key (all-zero FDB entries).
    Append,
}

#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Open a socket in the current network namespace. Must run inside a
    /// tokio runtime (the connection task is spawned on it).
    pub fn connect() -> io::Result<Netlink> {
        let (mut conn, handle, _) = rtnetlink::new_connection_with_strict_check()?;
        // A larger buffer is an optimisation; the default still works.
        let _ = conn.socket_mut().socket_mut().set_rx_buf_sz(RX_BUFFER);
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// Send a request and wait for the kernel's acknowledgement.
    pub async fn ack(&self, msg: RouteNetlinkMessage, mode: Mode) -> io::Result<()> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = NLM_F_REQUEST
            | NLM_F_ACK
            | match mode {
                Mode::Create => NLM_F_CREATE | NLM_F_EXCL,
                Mode::Replace => NLM_F_CREATE | NLM_F_REPLACE,
                Mode::Plain => 0,
                Mode::Append => NLM_F_CREATE | NLM_F_APPEND,
            };
        let mut handle = self.handle.clone();
        let mut replies = handle
            .request(req)
            .map_err(|e| io::Error::other(e.to_string()))?;
        while let Some(reply) = replies.next().await {
            if let NetlinkPayload::Error(err) = reply.payload
                && err.code.is_some()
            {
                return Err(err.to_io());
            }
        }
        Ok(())
    }

    /// Dump every object matching the request.
    pub async fn dump(&self, msg: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut handle = self.handle.clone();
        let mut replies = handle
            .request(req)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let mut out = Vec::new();
        while let Some(reply) = replies.next().await {
            match reply.payload {
                NetlinkPayload::InnerMessage(m) => out.push(m),
                NetlinkPayload::Error(err) if err.code.is_some() => return Err(err.to_io()),
                _ => {}
            }
        }
        Ok(out)
    }
}
