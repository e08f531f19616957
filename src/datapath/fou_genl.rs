//! A typed client for the kernel's generic netlink family "fou", the
//! listener side of `ip fou add/del/show`: a UDP socket that strips the UDP
//! header and hands the inner packet to the protocol it carries (ipip).
//! No netlink crate covers this family. Requests are laid out attribute for
//! attribute as iproute2 lays them out, so the unit tests can compare bytes
//! with what `ip fou add` sends.

use std::{fmt, io};

use futures::StreamExt;
use genetlink::{GenetlinkError, GenetlinkHandle};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};
use rtnetlink::packet_core::{
    DecodeError, DefaultNla, Emitable, ErrorContext, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
    NetlinkMessage, NetlinkPayload, Nla, NlaBuffer, NlasIterator, Parseable, ParseableParametrized,
    parse_u8, parse_u16_be,
};

// include/uapi/linux/fou.h
const FOU_GENL_NAME: &str = "fou";
const FOU_GENL_VERSION: u8 = 1;
const FOU_CMD_ADD: u8 = 1;
const FOU_CMD_DEL: u8 = 2;
const FOU_CMD_GET: u8 = 3;
const FOU_ATTR_PORT: u16 = 1;
const FOU_ATTR_AF: u16 = 2;
const FOU_ATTR_IPPROTO: u16 = 3;
const FOU_ATTR_TYPE: u16 = 4;
/// The UDP payload is the inner IP packet itself (no GUE header).
const FOU_ENCAP_DIRECT: u8 = 1;
/// The UDP payload starts with a GUE header naming the inner protocol.
const FOU_ENCAP_GUE: u8 = 2;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const ENOENT: i32 = 2;

/// A fou listener: UDP port (host order), address family, IP protocol carried (4 = ipip).
///
/// Listeners bound to a local or peer address (`ip fou add .. local ..
/// peer ..`) are reported by their port and family alone; lvn never makes
/// them. A GUE listener carries no protocol and shows as `ipproto: 0`;
/// `ipproto: 0` is also how to ask for one (`ip fou add port P gue`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FouListener {
    pub port: u16,
    pub ipv6: bool,
    pub ipproto: u8,
}

impl fmt::Display for FouListener {
    /// As `ip fou show` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ipproto == 0 {
            write!(f, "fou port {} gue", self.port)?;
        } else {
            write!(f, "fou port {} ipproto {}", self.port, self.ipproto)?;
        }
        if self.ipv6 {
            write!(f, " -6")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FouError {
    /// The family is registered by the fou module: without it nothing
    /// below can work, and the fix is on the host, not in the topology.
    #[error(
        "the kernel has no fou support (generic netlink family \"fou\" is missing): load it with `modprobe fou`"
    )]
    Missing,
    #[error("{op}: {source}")]
    Kernel {
        op: String,
        #[source]
        source: io::Error,
    },
    #[error("netlink: {0}")]
    Netlink(String),
}

/// One attribute of a fou message. Unknown ones (local and peer address,
/// peer port, ifindex, remcsum flag, and whatever later kernels add) are
/// kept opaque.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FouAttr {
    /// UDP port, host order here, big-endian on the wire.
    Port(u16),
    Af(u8),
    Ipproto(u8),
    Type(u8),
    Other(DefaultNla),
}

impl Nla for FouAttr {
    fn value_len(&self) -> usize {
        match self {
            FouAttr::Port(_) => 2,
            FouAttr::Af(_) | FouAttr::Ipproto(_) | FouAttr::Type(_) => 1,
            FouAttr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            FouAttr::Port(_) => FOU_ATTR_PORT,
            FouAttr::Af(_) => FOU_ATTR_AF,
            FouAttr::Ipproto(_) => FOU_ATTR_IPPROTO,
            FouAttr::Type(_) => FOU_ATTR_TYPE,
            FouAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            FouAttr::Port(port) => buffer[..2].copy_from_slice(&port.to_be_bytes()),
            FouAttr::Af(v) | FouAttr::Ipproto(v) | FouAttr::Type(v) => buffer[0] = *v,
            FouAttr::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&T>> for FouAttr {
    fn parse(buf: &NlaBuffer<&T>) -> Result<Self, DecodeError> {
        let value = buf.value();
        Ok(match buf.kind() {
            FOU_ATTR_PORT => FouAttr::Port(parse_u16_be(value).context("invalid FOU_ATTR_PORT")?),
            FOU_ATTR_AF => FouAttr::Af(parse_u8(value).context("invalid FOU_ATTR_AF")?),
            FOU_ATTR_IPPROTO => {
                FouAttr::Ipproto(parse_u8(value).context("invalid FOU_ATTR_IPPROTO")?)
            }
            FOU_ATTR_TYPE => FouAttr::Type(parse_u8(value).context("invalid FOU_ATTR_TYPE")?),
            _ => FouAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// The payload of a fou message after the genl header.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FouMessage {
    cmd: u8,
    attrs: Vec<FouAttr>,
}

impl FouMessage {
    /// `ip fou add port P ipproto N [-6]` or `ip fou add port P gue [-6]`:
    /// port, type, family, protocol (not for GUE), in iproute2's order.
    fn add(l: &FouListener) -> FouMessage {
        let mut attrs = FouMessage::del(l).attrs;
        if l.ipproto != 0 {
            attrs.push(FouAttr::Ipproto(l.ipproto));
        }
        FouMessage {
            cmd: FOU_CMD_ADD,
            attrs,
        }
    }

    /// `ip fou del port P [-6]`: the kernel finds the listener by port and
    /// family (and local/peer, which lvn leaves unset), not by protocol.
    fn del(l: &FouListener) -> FouMessage {
        let af = if l.ipv6 { AF_INET6 } else { AF_INET };
        let kind = if l.ipproto == 0 {
            FOU_ENCAP_GUE
        } else {
            FOU_ENCAP_DIRECT
        };
        FouMessage {
            cmd: FOU_CMD_DEL,
            attrs: vec![FouAttr::Port(l.port), FouAttr::Type(kind), FouAttr::Af(af)],
        }
    }

    fn get() -> FouMessage {
        FouMessage {
            cmd: FOU_CMD_GET,
            attrs: Vec::new(),
        }
    }

    /// The listener a dump entry describes; `None` without a port. The
    /// kernel always sends the family, and IPv4 is its default.
    fn listener(&self) -> Option<FouListener> {
        let mut l = FouListener {
            port: 0,
            ipv6: false,
            ipproto: 0,
        };
        let mut port = None;
        for attr in &self.attrs {
            match attr {
                FouAttr::Port(p) => port = Some(*p),
                FouAttr::Af(af) => l.ipv6 = *af == AF_INET6,
                FouAttr::Ipproto(p) => l.ipproto = *p,
                FouAttr::Type(_) | FouAttr::Other(_) => {}
            }
        }
        l.port = port?;
        Some(l)
    }
}

impl GenlFamily for FouMessage {
    fn family_name() -> &'static str {
        FOU_GENL_NAME
    }

    fn command(&self) -> u8 {
        self.cmd
    }

    fn version(&self) -> u8 {
        FOU_GENL_VERSION
    }
}

impl Emitable for FouMessage {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer)
    }
}

impl ParseableParametrized<[u8], GenlHeader> for FouMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        let attrs = NlasIterator::new(buf)
            .map(|nla| nla.and_then(|nla| FouAttr::parse(&nla)))
            .collect::<Result<Vec<_>, _>>()
            .context("invalid fou attributes")?;
        Ok(FouMessage {
            cmd: header.cmd,
            attrs,
        })
    }
}

fn genl_bytes(msg: FouMessage) -> Vec<u8> {
    let msg = GenlMessage::from_payload(msg);
    let mut buf = vec![0; msg.buffer_len()];
    msg.emit(&mut buf);
    buf
}

/// The generic netlink payload (genl header + attributes) for an add, as bytes; used by the unit test.
pub fn add_message_bytes(l: &FouListener) -> Vec<u8> {
    genl_bytes(FouMessage::add(l))
}

/// A generic netlink socket with the "fou" family resolved.
pub struct FouClient {
    handle: GenetlinkHandle,
}

impl FouClient {
    /// Resolve the "fou" family in the current network namespace (tokio runtime needed; spawn the connection task).
    pub async fn connect() -> Result<FouClient, FouError> {
        let (conn, handle, _) = genetlink::new_connection().map_err(|source| FouError::Kernel {
            op: "opening a generic netlink socket".into(),
            source,
        })?;
        tokio::spawn(conn);
        match handle.resolve_family::<FouMessage>().await {
            Ok(_) => Ok(FouClient { handle }),
            Err(GenetlinkError::NetlinkError(e)) if e.raw_os_error() == Some(ENOENT) => {
                Err(FouError::Missing)
            }
            Err(GenetlinkError::NetlinkError(source)) => Err(FouError::Kernel {
                op: "resolving generic netlink family \"fou\"".into(),
                source,
            }),
            Err(e) => Err(FouError::Netlink(e.to_string())),
        }
    }

    /// Every listener in this network namespace, sorted.
    pub async fn list(&self) -> Result<Vec<FouListener>, FouError> {
        let op = "listing fou listeners";
        let replies = self.request(FouMessage::get(), NLM_F_DUMP, op).await?;
        let mut out: Vec<FouListener> = replies.iter().filter_map(FouMessage::listener).collect();
        out.sort();
        Ok(out)
    }

    pub async fn add(&self, l: &FouListener) -> Result<(), FouError> {
        let op = format!("adding {l}");
        self.request(FouMessage::add(l), NLM_F_ACK, &op).await?;
        Ok(())
    }

    pub async fn del(&self, l: &FouListener) -> Result<(), FouError> {
        let op = format!("removing {l}");
        self.request(FouMessage::del(l), NLM_F_ACK, &op).await?;
        Ok(())
    }

    /// Send one request and collect the payloads of the replies; a
    /// kernel error (a non-zero code in NLMSG_ERROR) fails it.
    async fn request(
        &self,
        msg: FouMessage,
        flags: u16,
        op: &str,
    ) -> Result<Vec<FouMessage>, FouError> {
        let mut req = NetlinkMessage::from(GenlMessage::from_payload(msg));
        req.header.flags = NLM_F_REQUEST | flags;
        let mut handle = self.handle.clone();
        let mut replies = handle
            .request(req)
            .await
            .map_err(|e| FouError::Netlink(format!("{op}: {e}")))?;
        let mut out = Vec::new();
        while let Some(reply) = replies.next().await {
            let reply = reply.map_err(|e| FouError::Netlink(format!("{op}: {e}")))?;
            match reply.payload {
                NetlinkPayload::InnerMessage(genl) => out.push(genl.payload),
                NetlinkPayload::Error(err) if err.code.is_some() => {
                    return Err(FouError::Kernel {
                        op: op.to_string(),
                        source: err.to_io(),
                    });
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IPIP: u8 = 4;

    fn v4(port: u16) -> FouListener {
        FouListener {
            port,
            ipv6: false,
            ipproto: IPIP,
        }
    }

    fn parse(bytes: &[u8]) -> FouMessage {
        let msg = GenlMessage::<FouMessage>::parse_with_param(bytes, 0).expect("valid message");
        assert_eq!(msg.header.version, FOU_GENL_VERSION);
        msg.payload
    }

    /// `ip fou add port 4789 ipproto 4` (iproute2 6.1.0, Debian 12), as
    /// strace showed it sent to kernel 6.1: the bytes after the nlmsghdr.
    const IP_FOU_ADD_4789_IPIP: [u8; 36] = [
        0x01, 0x01, 0x00, 0x00, // genl: cmd ADD, version 1, reserved
        0x06, 0x00, 0x01, 0x00, 0x12, 0xb5, 0x00, 0x00, // PORT 4789, big-endian, 2 pad
        0x05, 0x00, 0x04, 0x00, 0x01, 0x00, 0x00, 0x00, // TYPE DIRECT, 3 pad
        0x05, 0x00, 0x02, 0x00, 0x02, 0x00, 0x00, 0x00, // AF AF_INET
        0x05, 0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x00, // IPPROTO 4 (ipip)
    ];

    #[test]
    fn add_is_what_ip_fou_add_sends() {
        assert_eq!(add_message_bytes(&v4(4789)), IP_FOU_ADD_4789_IPIP);
    }

    #[test]
    fn add_v6_differs_only_in_family() {
        let l = FouListener {
            ipv6: true,
            ..v4(4789)
        };
        let mut want = IP_FOU_ADD_4789_IPIP;
        want[24] = AF_INET6;
        assert_eq!(add_message_bytes(&l), want);
    }

    #[test]
    fn del_is_what_ip_fou_del_sends() {
        // `ip fou del port 4789`, captured the same way.
        let want = [
            0x02, 0x01, 0x00, 0x00, 0x06, 0x00, 0x01, 0x00, 0x12, 0xb5, 0x00, 0x00, 0x05, 0x00,
            0x04, 0x00, 0x01, 0x00, 0x00, 0x00, 0x05, 0x00, 0x02, 0x00, 0x02, 0x00, 0x00, 0x00,
        ];
        assert_eq!(genl_bytes(FouMessage::del(&v4(4789))), want);
    }

    #[test]
    fn dump_request_is_what_ip_fou_show_sends() {
        assert_eq!(genl_bytes(FouMessage::get()), [0x03, 0x01, 0x00, 0x00]);
    }

    #[test]
    fn add_message_parses_back() {
        let l = FouListener {
            port: 40001,
            ipv6: true,
            ipproto: 41,
        };
        let msg = parse(&add_message_bytes(&l));
        assert_eq!(msg, FouMessage::add(&l));
        assert_eq!(msg.listener(), Some(l));
    }

    /// Two entries of `ip fou show`'s dump from kernel 6.1, as fou_fill_info
    /// emits them: AF, PORT, PEER_PORT, IPPROTO, TYPE, IFINDEX, then the
    /// local and peer addresses of the family (all zero: unbound).
    #[test]
    fn decodes_kernel_dump_entries() {
        let v6 = [
            0x03, 0x01, 0x00, 0x00, // genl: cmd GET, version 1
            0x05, 0x00, 0x02, 0x00, 0x0a, 0x00, 0x00, 0x00, // AF AF_INET6
            0x06, 0x00, 0x01, 0x00, 0x12, 0xb6, 0x00, 0x00, // PORT 4790
            0x06, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00, // PEER_PORT 0
            0x05, 0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x00, // IPPROTO 4
            0x05, 0x00, 0x04, 0x00, 0x01, 0x00, 0x00, 0x00, // TYPE DIRECT
            0x08, 0x00, 0x0b, 0x00, 0x00, 0x00, 0x00, 0x00, // IFINDEX 0
            0x14, 0x00, 0x07, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, // LOCAL_V6
            0x14, 0x00, 0x09, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // PEER_V6
        ];
        let v4_entry = [
            0x03, 0x01, 0x00, 0x00, // genl: cmd GET, version 1
            0x05, 0x00, 0x02, 0x00, 0x02, 0x00, 0x00, 0x00, // AF AF_INET
            0x06, 0x00, 0x01, 0x00, 0x12, 0xb5, 0x00, 0x00, // PORT 4789
            0x06, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00, // PEER_PORT 0
            0x05, 0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x00, // IPPROTO 4
            0x05, 0x00, 0x04, 0x00, 0x01, 0x00, 0x00, 0x00, // TYPE DIRECT
            0x08, 0x00, 0x0b, 0x00, 0x00, 0x00, 0x00, 0x00, // IFINDEX 0
            0x08, 0x00, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00, // LOCAL_V4
            0x08, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, // PEER_V4
        ];
        let got = parse(&v6).listener();
        let want = FouListener {
            port: 4790,
            ipv6: true,
            ipproto: IPIP,
        };
        assert_eq!(got, Some(want));
        assert_eq!(parse(&v4_entry).listener(), Some(v4(4789)));
    }

    #[test]
    fn decoding_ignores_unknown_attributes() {
        let entry = [
            0x03, 0x01, 0x00, 0x00, // genl: cmd GET, version 1
            0x06, 0x00, 0x01, 0x00, 0x9c, 0x41, 0x00, 0x00, // PORT 40001
            0x04, 0x00, 0x05, 0x00, // REMCSUM_NOPARTIAL (flag, no value)
            0x05, 0x00, 0x02, 0x00, 0x02, 0x00, 0x00, 0x00, // AF AF_INET
            0x08, 0x00, 0x63, 0x00, 0xde, 0xad, 0xbe, 0xef, // kind 99: not in fou.h
            0x05, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, // IPPROTO 0
            0x05, 0x00, 0x04, 0x00, 0x02, 0x00, 0x00, 0x00, // TYPE GUE
        ];
        let msg = parse(&entry);
        assert_eq!(msg.attrs.len(), 6);
        let want = FouListener {
            port: 40001,
            ipv6: false,
            ipproto: 0,
        };
        assert_eq!(msg.listener(), Some(want));
    }

    #[test]
    fn entry_without_port_is_no_listener() {
        let entry = [
            0x03, 0x01, 0x00, 0x00, 0x05, 0x00, 0x02, 0x00, 0x02, 0x00, 0x00, 0x00,
        ];
        assert_eq!(parse(&entry).listener(), None);
    }

    #[test]
    fn truncated_attribute_is_an_error() {
        // PORT with a one-byte value.
        let entry = [
            0x03, 0x01, 0x00, 0x00, 0x05, 0x00, 0x01, 0x00, 0x12, 0x00, 0x00, 0x00,
        ];
        assert!(GenlMessage::<FouMessage>::parse_with_param(&entry[..], 0).is_err());
    }

    #[test]
    fn missing_error_says_how_to_fix_it() {
        assert_eq!(
            FouError::Missing.to_string(),
            "the kernel has no fou support (generic netlink family \"fou\" is missing): \
             load it with `modprobe fou`"
        );
    }

    /// Against the running kernel: without the fou module `connect` must
    /// say so plainly; with it, add, list and remove a listener inside a
    /// network namespace of this thread's own (root only).
    #[test]
    fn connect_reports_missing_module_or_round_trips() {
        crate::datapath::in_own_netns(round_trip);
    }

    async fn round_trip() {
        let client = match FouClient::connect().await {
            Err(FouError::Missing) => {
                println!("fou is not loaded here: connect() said so");
                return;
            }
            Err(e) => panic!("connect: {e}"),
            Ok(client) => client,
        };
        assert_eq!(client.list().await.expect("list"), []);
        let a = v4(40000);
        let b = FouListener {
            port: 40001,
            ipv6: true,
            ipproto: IPIP,
        };
        client.add(&a).await.expect("add v4");
        client.add(&b).await.expect("add v6");
        assert_eq!(client.list().await.expect("list"), [a, b]);
        let err = client.add(&a).await.expect_err("second add");
        assert!(matches!(err, FouError::Kernel { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("adding fou port 40000 ipproto 4: "),
            "{err}"
        );
        println!("second add refused: {err}");
        client.del(&a).await.expect("del v4");
        assert_eq!(client.list().await.expect("list"), [b]);
        client.del(&b).await.expect("del v6");
        assert_eq!(client.list().await.expect("list"), []);
        let err = client.del(&b).await.expect_err("del of a missing listener");
        assert!(
            err.to_string()
                .starts_with("removing fou port 40001 ipproto 4 -6: "),
            "{err}"
        );
        println!("del of a missing listener refused: {err}");
        println!("fou add/list/del round trip passed on the running kernel");
    }
}
