//! SCTP enforcement without SCTP sockets (this kernel has no SCTP module, so nothing can listen on
//! SCTP): a node namespace routing between pod namespaces, with weft's rendered ruleset for a
//! NetworkPolicy that admits SCTP/9000 to x/a from x/b only. Hand-built SCTP packets (an INIT
//! chunk behind the common header, IP protocol 132, CRC32c checksum) leave the sources through a
//! raw socket; at x/a a raw socket bound to protocol 132 reports what arrives (the kernel hands
//! every packet of a protocol to its raw sockets, registered handler or not). The allowed INIT
//! must arrive intact; one from another pod, one to another port and a TCP SYN to port 9000 must
//! not, and each must count one packet into the ruleset's `dropped-ingress` counter. So nft's
//! `sctp dport` match works on these packets. Needs root, `nft` and `python3`; skipped otherwise.

mod support;

use std::time::Duration;

use serde_json::json;
use support::netns::{NodeNs, exec, skip_unless_privileged};
use support::*;
use weft_policy::{compile_node, render_ruleset};

/// IP protocol number of SCTP.
const IPPROTO_SCTP: u8 = 132;

/// CRC32c (Castagnoli, reflected polynomial 0x82F63B78), as SCTP's checksum (RFC 9260 §6.8,
/// Appendix A).
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in data {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Fills in the checksum of an SCTP packet (common header + chunks). The CRC32c is stored least
/// significant byte first, as Linux (`cpu_to_le32`) and scapy do.
fn with_checksum(mut packet: Vec<u8>) -> Vec<u8> {
    packet[8..12].fill(0);
    let crc = crc32c(&packet);
    packet[8..12].copy_from_slice(&crc.to_le_bytes());
    packet
}

/// An SCTP packet with one INIT chunk: the first packet of an association (verification tag 0).
fn sctp_init(src_port: u16, dst_port: u16, initiate_tag: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(32);
    p.extend_from_slice(&src_port.to_be_bytes());
    p.extend_from_slice(&dst_port.to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes()); // verification tag: 0 in an INIT
    p.extend_from_slice(&0u32.to_be_bytes()); // checksum, filled in below
    p.push(1); // chunk type INIT
    p.push(0); // flags
    p.extend_from_slice(&20u16.to_be_bytes()); // chunk length
    p.extend_from_slice(&initiate_tag.to_be_bytes());
    p.extend_from_slice(&65_535u32.to_be_bytes()); // advertised receiver window
    p.extend_from_slice(&10u16.to_be_bytes()); // outbound streams
    p.extend_from_slice(&10u16.to_be_bytes()); // inbound streams
    p.extend_from_slice(&1u32.to_be_bytes()); // initial TSN
    with_checksum(p)
}

/// What the raw socket at the destination saw: source address, SCTP ports, first chunk type,
/// whether the checksum holds.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    src: String,
    src_port: u16,
    dst_port: u16,
    chunk: u8,
    checksum_ok: bool,
}

/// Parses one IPv4 packet as a raw socket returns it (IP header included).
fn parse(src: &str, packet: &[u8]) -> Option<Seen> {
    let ihl = usize::from(packet.first()? & 0x0f) * 4;
    if packet.get(9) != Some(&IPPROTO_SCTP) {
        return None;
    }
    let sctp = packet.get(ihl..)?;
    if sctp.len() < 16 {
        return None;
    }
    let stored = u32::from_le_bytes([sctp[8], sctp[9], sctp[10], sctp[11]]);
    let mut zeroed = sctp.to_vec();
    zeroed[8..12].fill(0);
    Some(Seen {
        src: src.to_owned(),
        src_port: u16::from_be_bytes([sctp[0], sctp[1]]),
        dst_port: u16::from_be_bytes([sctp[2], sctp[3]]),
        chunk: sctp[12],
        checksum_ok: crc32c(&zeroed) == stored,
    })
}

#[test]
fn crc32c_and_its_byte_order_match_reference_vectors() {
    // The CRC-32C check value (RFC 3720 B.4 lists the same polynomial).
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    // scapy's regression test "SCTP - Chunk Init - build": IP()/SCTP()/SCTPChunkInit(params=
    // [SCTPChunkParamIPv4Addr()]) carries the checksum bytes 40 2c 0b 5f.
    let mut packet = vec![0u8; 12];
    packet.extend_from_slice(&[1, 0, 0, 0x1c]);
    packet.extend_from_slice(&[0; 16]);
    packet.extend_from_slice(&[0, 5, 0, 8, 0x7f, 0, 0, 1]);
    assert_eq!(with_checksum(packet)[8..12], [0x40, 0x2c, 0x0b, 0x5f]);
    let init = sctp_init(40000, 9000, 0x1234_5678);
    assert_eq!(init.len(), 32);
    let mut ip = vec![0x45, 0, 0, 52, 0, 0, 0, 0, 64, IPPROTO_SCTP, 0, 0];
    ip.extend_from_slice(&[10, 244, 1, 11, 10, 244, 1, 10]);
    ip.extend_from_slice(&init);
    assert_eq!(
        parse("10.244.1.11", &ip),
        Some(Seen {
            src: "10.244.1.11".into(),
            src_port: 40000,
            dst_port: 9000,
            chunk: 1,
            checksum_ok: true,
        })
    );
}

const RECEIVER: &str = "
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 132)
print('ready', flush=True)
while True:
    data, addr = s.recvfrom(65535)
    print(addr[0], data.hex(), flush=True)
";

const SENDER: &str = "
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 132)
s.bind((sys.argv[1], 0))
s.sendto(bytes.fromhex(sys.argv[3]), (sys.argv[2], 0))
";

const TCP_SYN: &str = "
import socket, sys
s = socket.socket(); s.settimeout(0.3)
s.bind((sys.argv[1], 0))
try:
    s.connect((sys.argv[2], int(sys.argv[3]))); sys.exit(0)
except Exception:
    sys.exit(1)
";

#[test]
fn raw_sctp_inits_pass_or_drop_as_the_policy_says() {
    skip_unless_privileged!("nft", "python3");
    let mut node = NodeNs::new("sc");
    let xa = node.pod("xa", &["10.244.1.10"]);
    let xb = node.pod("xb", &["10.244.1.11"]);
    let ya = node.pod("ya", &["10.244.1.20"]);

    let mut ix = cluster();
    ix.apply_network_policy(&network_policy(
        "x",
        "sctp-from-b",
        json!({"podSelector": {"matchLabels": {"app": "a"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "b"}}}],
                            "ports": [{"protocol": "SCTP", "port": 9000}]}]}),
    ));
    let ruleset = render_ruleset(&compile_node(&ix, &node1()));
    assert!(
        ruleset.contains("sctp dport 9000 ct mark set ct mark | 0x00010000 accept"),
        "the rule under test:\n{ruleset}"
    );
    node.load(&ruleset);

    let rx = node.listen(&xa, &["python3", "-u", "-c", RECEIVER]);
    // Everything that reaches x/a's raw socket within `wait`.
    let arrivals = |wait: Duration| -> Vec<Seen> {
        let mut out = Vec::new();
        while let Ok(line) = rx.recv_timeout(wait) {
            let (src, hex) = line.split_once(' ').expect("address and packet");
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect();
            out.extend(parse(src, &bytes));
        }
        out
    };
    let send = |from_ns: &str, from: &str, packet: &[u8]| {
        let hex: String = packet.iter().map(|b| format!("{b:02x}")).collect();
        let out = exec(
            from_ns,
            &["python3", "-c", SENDER, from, "10.244.1.10", &hex],
        );
        assert!(
            out.status.success(),
            "raw send from {from}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let dropped = || node.counters()["dropped-ingress"].0;

    // Allowed: x/b → x/a SCTP/9000 arrives, intact.
    let before = dropped();
    send(&xb, "10.244.1.11", &sctp_init(40001, 9000, 0xA1));
    let seen = arrivals(Duration::from_secs(1));
    assert_eq!(
        seen,
        [Seen {
            src: "10.244.1.11".into(),
            src_port: 40001,
            dst_port: 9000,
            chunk: 1,
            checksum_ok: true,
        }],
        "the allowed INIT must arrive"
    );
    assert_eq!(dropped(), before, "an allowed INIT was counted as dropped");

    // Denied: another source, another port, another protocol on the allowed port.
    let cases: [(&str, &str, &str, Option<u16>); 3] = [
        (
            "y/a -> x/a SCTP/9000 (source not allowed)",
            &ya,
            "10.244.1.20",
            Some(9000),
        ),
        (
            "x/b -> x/a SCTP/9001 (port not allowed)",
            &xb,
            "10.244.1.11",
            Some(9001),
        ),
        (
            "x/b -> x/a TCP/9000 (protocol not allowed)",
            &xb,
            "10.244.1.11",
            None,
        ),
    ];
    for (i, (what, ns, from, sctp_port)) in cases.into_iter().enumerate() {
        let before = dropped();
        match sctp_port {
            Some(port) => {
                let sport = 40010 + u16::try_from(i).expect("few cases");
                send(ns, from, &sctp_init(sport, port, 0xB0 + i as u32));
            }
            None => {
                let ok = exec(ns, &["python3", "-c", TCP_SYN, from, "10.244.1.10", "9000"])
                    .status
                    .success();
                assert!(!ok, "{what}: the connection was opened");
            }
        }
        let seen = arrivals(Duration::from_secs(1));
        assert!(seen.is_empty(), "{what}: x/a received {seen:?}");
        assert_eq!(
            dropped(),
            before + 1,
            "{what}: one packet counted into dropped-ingress"
        );
    }

    // And the allowed INIT still arrives afterwards (the receiver was listening all along).
    send(&xb, "10.244.1.11", &sctp_init(40002, 9000, 0xA2));
    let seen = arrivals(Duration::from_secs(1));
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!((seen[0].src_port, seen[0].dst_port), (40002, 9000));
}
