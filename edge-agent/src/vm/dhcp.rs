//! The VM's DHCP server: one lease (the pod's address) for one MAC (the guest's NIC), served
//! on the pod's VM bridge inside the pod's network namespace. It runs as a thread of the VM's
//! shim, so it lives exactly as long as qemu and outlives agent restarts as qemu does.
//!
//! Everything that arrives is the guest's (a tenant's) and is parsed as untrusted: packets that
//! do not decode, are not requests, or come from another MAC are dropped.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dhcp4r::options::{DhcpOption, MessageType};
use dhcp4r::packet::Packet;

/// The one lease a VM's DHCP server hands out.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lease {
    /// The interface it serves on (the pod's VM bridge).
    pub device: String,
    /// The guest NIC's MAC (`02:a7:...`).
    pub mac: String,
    /// The address.
    pub ip: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
    /// The default gateway (also the server identifier).
    pub gateway: Ipv4Addr,
    /// DNS servers.
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    /// The guest's host name (the pod's name).
    #[serde(default)]
    pub hostname: String,
}

/// Longest DHCP message accepted (a full Ethernet frame's payload).
const MAX_MESSAGE: usize = 1500;
/// Lease time handed out (the address is the pod's for its whole life: a day, renewed).
const LEASE_SECS: u32 = 86_400;

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

fn mask(prefix: u8) -> Ipv4Addr {
    let bits = match prefix.min(32) {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p)),
    };
    Ipv4Addr::from(bits)
}

/// The answer to `req` (already decoded) under `lease`, if it gets one.
pub fn answer(lease: &Lease, req: &Packet) -> Option<Packet> {
    let mac = parse_mac(&lease.mac)?;
    if req.reply || req.chaddr != mac {
        return None;
    }
    let kind = match req.message_type().ok()? {
        MessageType::Discover => MessageType::Offer,
        MessageType::Request => {
            let asked = match req.option(dhcp4r::options::REQUESTED_IP_ADDRESS) {
                Some(DhcpOption::RequestedIpAddress(a)) => *a,
                _ => req.ciaddr,
            };
            if asked == lease.ip {
                MessageType::Ack
            } else {
                MessageType::Nak
            }
        }
        _ => return None,
    };
    let mut options = vec![
        DhcpOption::DhcpMessageType(kind),
        DhcpOption::ServerIdentifier(lease.gateway),
    ];
    if kind != MessageType::Nak {
        options.extend([
            DhcpOption::IpAddressLeaseTime(LEASE_SECS),
            DhcpOption::SubnetMask(mask(lease.prefix)),
            DhcpOption::Router(vec![lease.gateway]),
        ]);
        if !lease.dns.is_empty() {
            options.push(DhcpOption::DomainNameServer(lease.dns.clone()));
        }
        if !lease.hostname.is_empty() && lease.hostname.len() <= 63 {
            options.push(DhcpOption::HostName(lease.hostname.clone()));
        }
    }
    Some(Packet {
        reply: true,
        hops: 0,
        xid: req.xid,
        secs: 0,
        broadcast: req.broadcast,
        ciaddr: Ipv4Addr::UNSPECIFIED,
        yiaddr: if kind == MessageType::Nak {
            Ipv4Addr::UNSPECIFIED
        } else {
            lease.ip
        },
        siaddr: Ipv4Addr::UNSPECIFIED,
        giaddr: req.giaddr,
        chaddr: req.chaddr,
        options,
    })
}

/// Decode a datagram (nothing from the guest may panic the server).
pub fn decode(buf: &[u8]) -> Option<Packet> {
    if buf.len() < 240 || buf.len() > MAX_MESSAGE {
        return None;
    }
    std::panic::catch_unwind(|| Packet::from(buf).ok())
        .ok()
        .flatten()
}

/// Serve `lease` in the network namespace at `netns` (a path such as `/run/netns/NAME`) until
/// `stop` is set. Runs on the calling thread, which it moves into that namespace.
pub fn serve(lease: &Lease, netns: &Path, stop: Arc<AtomicBool>) -> std::io::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    let ns = std::fs::File::open(netns)?;
    rustix::thread::move_into_link_name_space(
        std::os::fd::AsFd::as_fd(&ns),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )?;
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_broadcast(true)?;
    s.bind_device(Some(lease.device.as_bytes()))?;
    s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 67).into())?;
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    let sock: std::net::UdpSocket = s.into();
    let mut buf = vec![0u8; MAX_MESSAGE + 1];
    let mut out = vec![0u8; MAX_MESSAGE];
    while !stop.load(Ordering::Relaxed) {
        let n = match sock.recv_from(&mut buf) {
            Ok((n, _)) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        let Some(reply) = decode(&buf[..n]).and_then(|req| answer(lease, &req)) else {
            continue;
        };
        // The guest has no address yet: answer by broadcast on the bridge.
        let bytes = reply.encode(&mut out);
        if let Err(e) = sock.send_to(bytes, SocketAddrV4::new(Ipv4Addr::BROADCAST, 68)) {
            eprintln!("dhcp: answering: {e}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> Lease {
        Lease {
            device: "vmbr0".into(),
            mac: "02:a7:0a:58:00:05".into(),
            ip: "10.88.0.5".parse().unwrap(),
            prefix: 24,
            gateway: "10.88.0.1".parse().unwrap(),
            dns: vec!["10.96.0.10".parse().unwrap()],
            hostname: "guest".into(),
        }
    }

    fn request(kind: MessageType, mac: [u8; 6], asked: Option<Ipv4Addr>) -> Vec<u8> {
        let mut options = vec![DhcpOption::DhcpMessageType(kind)];
        if let Some(a) = asked {
            options.push(DhcpOption::RequestedIpAddress(a));
        }
        let p = Packet {
            reply: false,
            hops: 0,
            xid: 0x1234,
            secs: 0,
            broadcast: false,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: mac,
            options,
        };
        let mut buf = vec![0u8; 1500];
        p.encode(&mut buf).to_vec()
    }

    #[test]
    fn offers_and_acks_the_one_lease_to_the_one_mac() {
        let l = lease();
        let mac = parse_mac(&l.mac).unwrap();
        let offer = answer(
            &l,
            &decode(&request(MessageType::Discover, mac, None)).unwrap(),
        )
        .expect("an offer");
        assert!(matches!(offer.message_type(), Ok(MessageType::Offer)));
        assert_eq!(offer.yiaddr, l.ip);
        assert_eq!(offer.xid, 0x1234);
        let mut buf = vec![0u8; 1500];
        // What goes on the wire decodes back (mask, router, DNS, lease time).
        let back = decode(offer.encode(&mut buf)).unwrap();
        let raw = |code: u8| back.option(code).map(|o| o.to_raw().data);
        assert_eq!(
            raw(dhcp4r::options::SUBNET_MASK),
            Some(vec![255, 255, 255, 0])
        );
        assert_eq!(raw(dhcp4r::options::ROUTER), Some(vec![10, 88, 0, 1]));
        assert_eq!(
            raw(dhcp4r::options::IP_ADDRESS_LEASE_TIME),
            Some(LEASE_SECS.to_be_bytes().to_vec())
        );
        let ack = answer(
            &l,
            &decode(&request(MessageType::Request, mac, Some(l.ip))).unwrap(),
        )
        .unwrap();
        assert!(matches!(ack.message_type(), Ok(MessageType::Ack)));
        let nak = answer(
            &l,
            &decode(&request(
                MessageType::Request,
                mac,
                Some("10.88.0.9".parse().unwrap()),
            ))
            .unwrap(),
        )
        .unwrap();
        assert!(matches!(nak.message_type(), Ok(MessageType::Nak)));
        assert_eq!(nak.yiaddr, Ipv4Addr::UNSPECIFIED);
        // Another MAC gets nothing.
        let other = [2, 0, 0, 0, 0, 1];
        assert!(answer(
            &l,
            &decode(&request(MessageType::Discover, other, None)).unwrap()
        )
        .is_none());
    }

    #[test]
    fn garbage_is_dropped_without_a_panic() {
        let l = lease();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mac = parse_mac(&l.mac).unwrap();
        let good = request(MessageType::Discover, mac, None);
        for i in 0..2000 {
            let mut b = good.clone();
            // xorshift: flip bytes anywhere, truncate sometimes.
            for _ in 0..(i % 8 + 1) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = (seed as usize) % b.len();
                b[at] = (seed >> 32) as u8;
            }
            if i % 5 == 0 {
                b.truncate(240 + (seed as usize) % 40);
            }
            if let Some(p) = decode(&b) {
                let _ = answer(&l, &p);
            }
        }
        assert!(decode(&[0u8; 10]).is_none());
        assert!(decode(&vec![0u8; 4000]).is_none());
    }
}
