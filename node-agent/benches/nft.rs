//! The cost of one nftables transaction, measured in a network namespace of its own (created with
//! `unshare(CLONE_NEWNET)` on a dedicated thread and gone when it ends). Needs root and `nft`.
//!
//! `cargo bench -p weft-node-agent --bench nft` (`WEFT_NFT_BENCH_N` sets the transactions per row,
//! default 200). Prints one row per workload: p50, p99 and max in milliseconds of one transaction,
//! the whole `nft` process included (spawn, parse, netlink batch, kernel commit).
//!
//! The workloads are the policy engine's: a table shaped like `weft-policy` (a forward chain with
//! `ct state established,related accept` and a verdict map dispatching by pod address, per-pod
//! chains, a set of selected peer addresses), changed by one set element, or replaced whole with
//! 100 or 10 000 elements in the set; each in nft's text language (what weft uses, through
//! `NftBinary`) and in nft's JSON language (the same ruleset, converted from nft's own JSON listing);
//! plus the read that every sync does first (`list table`), and weft's masquerade sync.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weft_crds::fabric::Masquerade;
use weft_node_agent::masquerade::{plan_masquerade, sync_masquerade};
use weft_node_agent::nft::{Family, NftApplier, NftBinary, render_replace_table};
use weft_node_agent::subnet::{Lease, Networks};

const TABLE: &str = "weft-bench";

fn peer(i: usize) -> String {
    format!("10.{}.{}.{}", 100 + i / 65536, (i / 256) % 256, i % 256)
}

/// The policy-shaped table with `peers` elements in its set; element `variant` makes each
/// replacement differ from the previous one by one element.
fn table_text(peers: usize, variant: usize) -> String {
    let mut elements: Vec<String> = (0..peers.saturating_sub(1)).map(peer).collect();
    elements.push(format!(
        "10.250.{}.{}",
        (variant / 256) % 256,
        variant % 256
    ));
    let pods: Vec<String> = (0..8)
        .map(|p| format!("10.244.1.{} : jump pod-{p}", p + 2))
        .collect();
    let mut out = format!(
        "table inet {TABLE} {{\n\tset peers {{\n\t\ttype ipv4_addr\n\t\telements = {{ {} }}\n\t}}\n\n\tmap ingress {{\n\t\ttype ipv4_addr : verdict\n\t\telements = {{ {} }}\n\t}}\n\n\tchain forward {{\n\t\ttype filter hook forward priority filter; policy accept;\n\t\tct state established,related accept\n\t\tip daddr vmap @ingress\n\t}}\n",
        elements.join(", "),
        pods.join(", ")
    );
    for p in 0..8 {
        out.push_str(&format!(
            "\n\tchain pod-{p} {{\n\t\tip saddr @peers tcp dport {{ 80, 443, 8080 }} accept comment \"networkpolicy default/allow-web\"\n\t\tip saddr @peers udp dport 53 accept\n\t\tdrop\n\t}}\n"
        ));
    }
    out.push_str("}\n");
    out
}

/// The same table in nft's JSON input language: nft's own JSON listing of it, each object wrapped
/// in `add`, handles dropped, chains before the maps that jump to them.
fn table_json(nft: &NftBinary, text: &str) -> Value {
    nft.apply(&render_replace_table(Family::Inet, TABLE, text))
        .expect("apply text");
    let out = Command::new("nft")
        .args(["-j", "list", "table", "inet", TABLE])
        .output()
        .expect("nft -j list");
    let listing: Value = serde_json::from_slice(&out.stdout).expect("json listing");
    let mut objects: Vec<(u8, Value)> = listing["nftables"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|o| {
            let (kind, body) = o.as_object()?.iter().next()?;
            let rank = match kind.as_str() {
                "table" => 0,
                "chain" => 1,
                "set" | "map" => 2,
                "rule" => 3,
                _ => return None,
            };
            let mut body = body.clone();
            body.as_object_mut()?.remove("handle");
            Some((rank, json!({ "add": { kind: body } })))
        })
        .collect();
    objects.sort_by_key(|(rank, _)| *rank);
    let mut cmds = vec![
        json!({"add": {"table": {"family": "inet", "name": TABLE}}}),
        json!({"delete": {"table": {"family": "inet", "name": TABLE}}}),
    ];
    cmds.extend(objects.into_iter().map(|(_, o)| o));
    json!({ "nftables": cmds })
}

fn nft_json(script: &str) {
    let mut child = Command::new("nft")
        .args(["-j", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nft");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "nft -j -f - failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Row {
    name: String,
    bytes: usize,
    samples: Vec<Duration>,
}

/// Times `run` `n` times; `prepare` builds its input outside the timing.
fn measure<P>(
    name: &str,
    n: usize,
    bytes: usize,
    mut prepare: impl FnMut(usize) -> P,
    mut run: impl FnMut(usize, P),
) -> Row {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let input = prepare(i);
        let start = Instant::now();
        run(i, input);
        samples.push(start.elapsed());
    }
    samples.sort();
    Row {
        name: name.to_owned(),
        bytes,
        samples,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn quantile(samples: &[Duration], q: f64) -> Duration {
    let idx = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[idx]
}

fn bench(n: usize) -> Vec<Row> {
    let nft = NftBinary::new();
    let mut rows = Vec::new();

    // The floor of any call through the binary: one process, one netlink round trip, no table.
    rows.push(measure(
        "floor: nft process, list of an absent table",
        n,
        0,
        |_| {},
        |_, ()| {
            assert!(nft.list_table(Family::Inet, TABLE).expect("list").is_none());
        },
    ));

    // One element added or removed on a table with a 10 000-element set: the policy engine's
    // incremental change (a pod appears, its address joins the sets of the selectors it matches).
    for peers in [100, 10_000] {
        nft.apply(&render_replace_table(
            Family::Inet,
            TABLE,
            &table_text(peers, 0),
        ))
        .expect("base table");
        let element = |i: usize| format!("10.251.{}.{}", (i / 2 / 256) % 256, (i / 2) % 256);
        let script = |i: usize| {
            let verb = if i.is_multiple_of(2) { "add" } else { "delete" };
            format!("{verb} element inet {TABLE} peers {{ {} }}\n", element(i))
        };
        rows.push(measure(
            &format!("set change, 1 element (text; set of {peers})"),
            n,
            script(0).len(),
            |_| {},
            |i, ()| nft.apply(&script(i)).expect("element change"),
        ));
        let json_script = |i: usize| {
            let verb = if i.is_multiple_of(2) { "add" } else { "delete" };
            json!({"nftables": [{ verb: {"element": {"family": "inet", "table": TABLE, "name": "peers", "elem": [element(i)]}}}]}).to_string()
        };
        rows.push(measure(
            &format!("set change, 1 element (JSON; set of {peers})"),
            n,
            json_script(0).len(),
            |_| {},
            |i, ()| nft_json(&json_script(i)),
        ));
    }

    // The whole table replaced in one transaction (start-up, resync, a changed rule).
    for peers in [100, 10_000] {
        let text = |i: usize| render_replace_table(Family::Inet, TABLE, &table_text(peers, i + 1));
        let bytes = text(0).len();
        rows.push(measure(
            &format!("full replacement (text; set of {peers})"),
            n,
            bytes,
            text,
            |_, script| nft.apply(&script).expect("replace"),
        ));
        // JSON scripts are prepared outside the timing (each needs a listing of its own).
        let scripts: Vec<String> = (0..n.min(20))
            .map(|i| table_json(&nft, &table_text(peers, i + 1)).to_string())
            .collect();
        rows.push(measure(
            &format!("full replacement (JSON; set of {peers})"),
            n,
            scripts[0].len(),
            |_| {},
            |i, ()| nft_json(&scripts[i % scripts.len()]),
        ));
        rows.push(measure(
            &format!("list table (set of {peers})"),
            n,
            0,
            |_| {},
            |_, ()| {
                nft.list_table(Family::Inet, TABLE)
                    .expect("list")
                    .expect("present");
            },
        ));
    }
    nft.delete_table(Family::Inet, TABLE).expect("cleanup");

    // weft's masquerade sync: read, compare, and either nothing or one replacement.
    let networks = Networks {
        v4: Some("10.244.0.0/16".parse().expect("cidr")),
        v6: Some("fd00:10:244::/56".parse().expect("cidr")),
    };
    let lease = Lease {
        v4: Some("10.244.1.0/24".parse().expect("cidr")),
        v6: Some("fd00:10:244:1::/64".parse().expect("cidr")),
    };
    let settings = Masquerade {
        enabled: true,
        random_fully: false,
    };
    let plan = |i: usize| {
        let nodes = [
            format!("192.168.{}.{}", i / 200, i % 200 + 1)
                .parse()
                .expect("ip"),
            "fd00::1".parse().expect("ip"),
        ];
        plan_masquerade(&networks, &lease, &settings, &nodes).expect("plan")
    };
    let same = plan(0);
    sync_masquerade(&same, &nft).expect("masquerade");
    rows.push(measure(
        "masquerade sync, unchanged (list only)",
        n,
        0,
        |_| {},
        |_, ()| {
            let change = sync_masquerade(&same, &nft).expect("sync");
            assert!(!change.wrote());
        },
    ));
    rows.push(measure(
        "masquerade sync, a node added (list + replace)",
        n,
        0,
        |i| plan(i + 1),
        |_, plan| {
            let change = sync_masquerade(&plan, &nft).expect("sync");
            assert!(change.wrote());
        },
    ));
    rows
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass filters. Nothing to parse.
    if !nix::unistd::geteuid().is_root() {
        println!("nft bench skipped: needs root (it creates a network namespace)");
        return;
    }
    if !Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        println!("nft bench skipped: the nft binary is missing (Debian package nftables)");
        return;
    }
    let n: usize = std::env::var("WEFT_NFT_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let version = Command::new("nft")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    // Every figure is CPU time of a busy 2-core machine; the load says how busy.
    let load = || {
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or("?")
            .to_owned()
    };
    let load_before = load();
    let rows = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        bench(n)
    })
    .join()
    .expect("bench thread");

    println!(
        "one nftables transaction, {n} per row, {version}, kernel {}, load average {load_before} before and {} after",
        kernel.trim(),
        load()
    );
    println!(
        "| {:<48} | {:>9} | {:>8} | {:>8} | {:>8} |",
        "workload", "bytes", "p50 ms", "p99 ms", "max ms"
    );
    println!(
        "|{:-<50}|{:->11}|{:->10}|{:->10}|{:->10}|",
        "", "", "", "", ""
    );
    for row in rows {
        let bytes = if row.bytes == 0 {
            "-".to_owned()
        } else {
            row.bytes.to_string()
        };
        println!(
            "| {:<48} | {:>9} | {:>8} | {:>8} | {:>8} |",
            row.name,
            bytes,
            ms(quantile(&row.samples, 0.50)),
            ms(quantile(&row.samples, 0.99)),
            ms(*row.samples.last().unwrap_or(&Duration::ZERO)),
        );
    }
}
