//! PROXY protocol v2 headers towards targets (`proxy_protocol: v2` on a
//! tcp group), so that upstreams see the real client address as NLB's
//! "preserve client IP" gives them.
//!
//! Only what a balancer sends is here: the `PROXY` command for TCP over
//! IPv4 or IPv6, no TLVs. The header is built into a fixed-size stack
//! buffer (at most 52 bytes, no allocation) and written before any client
//! byte, so the upstream reads it off the front of the stream. A mixed pair (an IPv4 client on an IPv6 socket, which
//! shows as an IPv4-mapped address) is normalised to one family: IPv4 when
//! both addresses are IPv4 or IPv4-mapped, else IPv6 with IPv4 mapped.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The 12-byte signature every v2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Version 2, command PROXY.
const VERSION_PROXY: u8 = 0x21;
/// AF_INET, STREAM.
const TCP_V4: u8 = 0x11;
/// AF_INET6, STREAM.
const TCP_V6: u8 = 0x21;

/// The longest header we send: 16 fixed bytes and two IPv6 addresses with ports.
pub const MAX_LEN: usize = 16 + 36;

/// An encoded header: `bytes[..len]`.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    bytes: [u8; MAX_LEN],
    len: usize,
}

impl Header {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The v2 header saying that `source` (the client) connected to
/// `destination` (the balancer's local address of that connection).
pub fn encode_v2(source: SocketAddr, destination: SocketAddr) -> Header {
    let mut bytes = [0u8; MAX_LEN];
    bytes[..12].copy_from_slice(&SIGNATURE);
    bytes[12] = VERSION_PROXY;
    let (src_ip, dst_ip) = (unmap(source.ip()), unmap(destination.ip()));
    let len = match (src_ip, dst_ip) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            bytes[13] = TCP_V4;
            bytes[14..16].copy_from_slice(&12u16.to_be_bytes());
            bytes[16..20].copy_from_slice(&s.octets());
            bytes[20..24].copy_from_slice(&d.octets());
            bytes[24..26].copy_from_slice(&source.port().to_be_bytes());
            bytes[26..28].copy_from_slice(&destination.port().to_be_bytes());
            28
        }
        (s, d) => {
            bytes[13] = TCP_V6;
            bytes[14..16].copy_from_slice(&36u16.to_be_bytes());
            bytes[16..32].copy_from_slice(&as_v6(s).octets());
            bytes[32..48].copy_from_slice(&as_v6(d).octets());
            bytes[48..50].copy_from_slice(&source.port().to_be_bytes());
            bytes[50..52].copy_from_slice(&destination.port().to_be_bytes());
            52
        }
    };
    Header { bytes, len }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it carries.
fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_layout_matches_the_spec() {
        let h = encode_v2(
            "192.0.2.1:51234".parse().unwrap(),
            "198.51.100.7:6432".parse().unwrap(),
        );
        let mut want = Vec::new();
        want.extend_from_slice(&[
            0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
        ]);
        want.push(0x21); // version 2, PROXY
        want.push(0x11); // TCP over IPv4
        want.extend_from_slice(&[0x00, 0x0C]); // 12 address bytes
        want.extend_from_slice(&[192, 0, 2, 1]);
        want.extend_from_slice(&[198, 51, 100, 7]);
        want.extend_from_slice(&51234u16.to_be_bytes());
        want.extend_from_slice(&6432u16.to_be_bytes());
        assert_eq!(h.as_bytes(), &want[..]);
        assert_eq!(h.as_bytes().len(), 28);
    }

    #[test]
    fn ipv6_layout_matches_the_spec() {
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let h = encode_v2(
            SocketAddr::new(src.into(), 40000),
            SocketAddr::new(dst.into(), 443),
        );
        let b = h.as_bytes();
        assert_eq!(b.len(), 52);
        assert_eq!(&b[..12], b"\r\n\r\n\0\r\nQUIT\n");
        assert_eq!(b[12], 0x21);
        assert_eq!(b[13], 0x21, "TCP over IPv6");
        assert_eq!(&b[14..16], &[0x00, 36]);
        assert_eq!(&b[16..32], &src.octets());
        assert_eq!(&b[32..48], &dst.octets());
        assert_eq!(&b[48..50], &40000u16.to_be_bytes());
        assert_eq!(&b[50..52], &443u16.to_be_bytes());
    }

    #[test]
    fn ipv4_mapped_addresses_are_sent_as_ipv4() {
        let src: Ipv6Addr = "::ffff:10.0.0.9".parse().unwrap();
        let h = encode_v2(
            SocketAddr::new(src.into(), 1000),
            "10.0.0.1:80".parse().unwrap(),
        );
        let b = h.as_bytes();
        assert_eq!(b[13], 0x11);
        assert_eq!(&b[16..20], &[10, 0, 0, 9]);
    }

    #[test]
    fn mixed_families_use_ipv6_with_ipv4_mapped() {
        let h = encode_v2(
            "10.0.0.9:1000".parse().unwrap(),
            "[2001:db8::2]:80".parse().unwrap(),
        );
        let b = h.as_bytes();
        assert_eq!(b[13], 0x21);
        assert_eq!(
            &b[16..32],
            &"::ffff:10.0.0.9".parse::<Ipv6Addr>().unwrap().octets()
        );
    }
}
