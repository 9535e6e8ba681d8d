//! kube-router v2.1.0's network-policy controller, the peer the policy benchmark compares weft
//! with (k3s ships it): what the benchmark reads from it. The binary is built from its Go module by
//! [`crate::gobuild::ensure_kube_router`]; it is never part of weft.
//!
//! Pure helpers: the names of kube-router's ipsets, so that the benchmark can ask the kernel
//! whether an address is in one (`ipset test`), and the durations its log prints.

use sha2::{Digest, Sha256};

/// kube-router's name of a policy's ipset (pkg/controllers/netpol/policy.go): `prefix` and the
/// first 16 characters of the standard base32 of SHA-256(namespace + policy + `what`), where
/// `what` is e.g. `ingressrule0IPv4pod` (peers of ingress rule 0) or `ingressrule2IPv4ipblock`.
pub fn ipset_name(prefix: &str, namespace: &str, policy: &str, what: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let hash = Sha256::digest(format!("{namespace}{policy}{what}"));
    let mut out = String::with_capacity(16);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in hash.iter() {
        acc = (acc << 8) | u32::from(*b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((acc >> bits) & 31) as usize]));
        }
        acc &= (1 << bits) - 1;
        if out.len() >= 16 {
            break;
        }
    }
    out.truncate(16);
    format!("{prefix}{out}")
}

/// The source set of ingress rule `rule`'s pod peers of `namespace/policy` (IPv4).
pub fn ingress_pod_peers_set(namespace: &str, policy: &str, rule: usize) -> String {
    ipset_name(
        "KUBE-SRC-",
        namespace,
        policy,
        &format!("ingressrule{rule}IPv4pod"),
    )
}

/// The source set of ingress rule `rule`'s ipBlock peers of `namespace/policy` (IPv4).
pub fn ingress_ipblock_set(namespace: &str, policy: &str, rule: usize) -> String {
    ipset_name(
        "KUBE-SRC-",
        namespace,
        policy,
        &format!("ingressrule{rule}IPv4ipblock"),
    )
}

/// A Go `time.Duration` as printed ("1.5s", "850.1ms", "950µs", "1m2.5s"), in ms.
pub fn go_duration_ms(s: &str) -> Option<f64> {
    let s = s.split_whitespace().next()?;
    let mut total = 0.0;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(ch) = chars.next() {
        if ch.is_ascii_digit() || ch == '.' {
            num.push(ch);
            continue;
        }
        let mut unit = ch.to_string();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_digit() || n == '.' {
                break;
            }
            unit.push(n);
            chars.next();
        }
        let v: f64 = num.parse().ok()?;
        num.clear();
        total += v * match unit.as_str() {
            "h" => 3_600_000.0,
            "m" => 60_000.0,
            "s" => 1_000.0,
            "ms" => 1.0,
            "µs" | "us" => 1e-3,
            "ns" => 1e-6,
            _ => return None,
        };
    }
    num.is_empty().then_some(total)
}

/// The durations of the full syncs in kube-router's log (`-v=1`: "sync iptables took …"), in ms.
pub fn full_syncs_ms(log: &str) -> Vec<f64> {
    log.lines()
        .filter_map(|l| go_duration_ms(l.split("sync iptables took ").nth(1)?.trim()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_names_are_kube_routers() {
        // Python: base64.b32encode(hashlib.sha256(b"ns1np0ingressrule0IPv4pod").digest())[:16]
        assert_eq!(
            ingress_pod_peers_set("ns1", "np0", 0),
            "KUBE-SRC-25DXNGFHSZIDN2LA"
        );
        assert_eq!(
            ingress_ipblock_set("ns50", "np0", 2),
            "KUBE-SRC-QYOJXGKG2O54JXMQ"
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration_ms("1.5s"), Some(1500.0));
        assert_eq!(go_duration_ms("850.5ms"), Some(850.5));
        assert_eq!(go_duration_ms("1m2s"), Some(62000.0));
        assert!(go_duration_ms("950µs").is_some_and(|v| (v - 0.95).abs() < 1e-9));
        assert_eq!(go_duration_ms("x"), None);
        assert_eq!(go_duration_ms("12"), None);
    }

    #[test]
    fn syncs_from_the_log() {
        let log = "I1202 00:01:02.000 1 network_policy_controller.go:236] sync iptables took 1.25s\n\
                   I1202 00:01:03.000 1 x.go:1] something else\n\
                   I1202 00:01:04.000 1 network_policy_controller.go:236] sync iptables took 980ms\n";
        assert_eq!(full_syncs_ms(log), vec![1250.0, 980.0]);
    }
}
