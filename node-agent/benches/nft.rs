//! The cost of one nftables transaction, measured in a network namespace of its own (created with
//! `unshare(CLONE_NEWNET)` on a dedicated thread and gone when it ends). Needs root and `nft`.
//!
//! `cargo bench -p weft-node-agent --bench nft` (`WEFT_NFT_BENCH_N` sets the transactions per row,
//! default 200). Prints one row per workload: p50, p99 and max in milliseconds of one transaction:
//! parse, netlink batch and kernel commit, in-process through libnftables ("library", what the
//! agent does) or with the whole `nft` process ("nft -f": spawn, cache fill, and at its exit the
//! socket's close, which after a deletion waits for the kernel's RCU grace period).
//!
//! The workloads are the policy engine's: a table shaped like `weft-policy` (a forward chain with
//! `ct state established,related accept` and a verdict map dispatching by pod address, per-pod
//! chains, a set of selected peer addresses), changed by one set element, or replaced whole with
//! 100 or 10 000 elements in the set; each in nft's text language (what weft uses, through
//! `Nftables`) and in nft's JSON language (the same ruleset, converted from nft's own JSON listing);
//! plus the read that every sync does first (`list table`), and weft's masquerade sync.
//!
//! The element changes are also written as one native nf_tables netlink batch
//! (`nft::apply_set_elements`, what `Nftables::apply_elements` does for pod churn): no process,
//! no parser, no cache fill. With `WEFT_NFT_BENCH_POLICY=<dir>` (a directory where
//! `WEFT_BENCH_DUMP=<dir> cargo bench -p weft-policy --bench compile` wrote `one-node.nft` and
//! `churn.nft`), two more rows apply that bench's pod event (one pod added: 8 elements in 8 sets
//! and maps) to its one-node ruleset (~80 000 elements in ~160 sets) through `nft -f` and through
//! netlink, added and deleted in turn.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weft_crds::fabric::Masquerade;
use weft_node_agent::masquerade::{plan_masquerade, sync_masquerade};
use weft_node_agent::nft::{
    Family, LibNft, NftApplier, Nftables, TABLE_POLICY, apply_set_elements, render_replace_table,
};
use weft_node_agent::subnet::{Lease, Networks};
use weft_policy::{Elem, ElemOp, Proto};

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
fn table_json(nft: &Nftables, text: &str) -> Value {
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

/// One way of running a transaction.
type Applier = Box<dyn Fn(&str) -> Result<(), weft_node_agent::Error>>;

fn bench(n: usize) -> Vec<Row> {
    let nft = Nftables::new();
    assert!(
        nft.in_process(),
        "libnftables must load where nft is installed"
    );
    // Transactions both ways: in-process (what the agent does) and through the `nft` process.
    // (`LibNft` directly: `Nftables` sends scripts over 64 KiB to the process.)
    let lib = LibNft::load().expect("libnftables");
    let process = Nftables::with_binary("nft");
    let ways: [(&str, Applier); 2] = [
        (
            "library",
            Box::new(move |s: &str| lib.run(s, "bench").map(drop)),
        ),
        ("nft -f", Box::new(move |s: &str| process.apply(s))),
    ];
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
        let op = |i: usize| ElemOp {
            add: i.is_multiple_of(2),
            set: "peers".to_owned(),
            elem: Elem::Addr(element(i).parse().expect("ip")),
        };
        rows.push(measure(
            &format!("set change, 1 element (netlink; set of {peers})"),
            n,
            0,
            |_| {},
            |i, ()| apply_set_elements(Family::Inet, TABLE, &[op(i)]).expect("element change"),
        ));
        // Additions and deletions apart: closing the socket after a transaction that deleted
        // waits for the kernel's grace period, which the `nft` process pays at its exit and the
        // library's long-lived context does not.
        let fresh = |i: usize| format!("10.252.{}.{}", (i / 256) % 256, i % 256);
        for (way, applier) in &ways {
            for add in [true, false] {
                let (verb, nft_verb) = if add {
                    ("added", "add")
                } else {
                    ("deleted", "delete")
                };
                let script = |i: usize| {
                    format!("{nft_verb} element inet {TABLE} peers {{ {} }}\n", fresh(i))
                };
                rows.push(measure(
                    &format!("set change, 1 element {verb} (text, {way}; set of {peers})"),
                    n,
                    script(0).len(),
                    |_| {},
                    |i, ()| applier(&script(i)).expect("element change"),
                ));
            }
        }
        // A policy change as the engine writes it: the pod's new chain, its verdict-map entry
        // pointed there, the old chain flushed and deleted, in one transaction.
        for (way, applier) in &ways {
            let script = |i: usize| {
                let (new, old) = (
                    format!("pod-{}", 100 + i % 2),
                    format!("pod-{}", 100 + (i + 1) % 2),
                );
                let mut s = format!(
                    "add chain inet {TABLE} {new}\nadd rule inet {TABLE} {new} ip saddr @peers tcp dport {{ 80, {} }} accept\nadd rule inet {TABLE} {new} drop\n",
                    8000 + i % 1000
                );
                if i > 0 {
                    s.push_str(&format!(
                        "delete element inet {TABLE} ingress {{ 10.244.1.200 }}\n"
                    ));
                }
                s.push_str(&format!(
                    "add element inet {TABLE} ingress {{ 10.244.1.200 : jump {new} }}\n"
                ));
                if i > 0 {
                    s.push_str(&format!(
                        "flush chain inet {TABLE} {old}\ndelete chain inet {TABLE} {old}\n"
                    ));
                }
                s
            };
            // Untimed: the first chain and its entry; every timed one then swaps.
            applier(&script(0)).expect("first chain");
            rows.push(measure(
                &format!("policy change: chain swapped (text, {way}; set of {peers})"),
                n,
                script(1).len(),
                |_| {},
                |i, ()| applier(&script(i + 1)).expect("chain swap"),
            ));
            applier(&format!(
                    "delete element inet {TABLE} ingress {{ 10.244.1.200 }}\nflush chain inet {TABLE} pod-{0}\ndelete chain inet {TABLE} pod-{0}\n",
                    100 + n % 2
                ))
                .expect("chain swap cleanup");
        }
        for add in [true, false] {
            let verb = if add { "added" } else { "deleted" };
            let op = |i: usize| ElemOp {
                add,
                set: "peers".to_owned(),
                elem: Elem::Addr(fresh(i).parse().expect("ip")),
            };
            rows.push(measure(
                &format!("set change, 1 element {verb} (netlink; set of {peers})"),
                n,
                0,
                |_| {},
                |i, ()| apply_set_elements(Family::Inet, TABLE, &[op(i)]).expect("element change"),
            ));
        }
        if peers == 10_000 {
            rows.extend(bench_large_batch(&nft, n.min(20)));
        }
    }

    // The whole table replaced in one transaction (start-up, resync, a changed rule).
    for peers in [100, 10_000] {
        let text = |i: usize| render_replace_table(Family::Inet, TABLE, &table_text(peers, i + 1));
        let bytes = text(0).len();
        for (way, applier) in &ways {
            rows.push(measure(
                &format!("full replacement (text, {way}; set of {peers})"),
                n,
                bytes,
                text,
                |_, script| applier(&script).expect("replace"),
            ));
        }
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
        // What a metrics scrape does: the table's named counters, by a netlink dump of its
        // counter objects (the agent), and by `nft -j list counters` (before), which fills nft's
        // cache with every set element first.
        rows.push(measure(
            &format!("read counters (netlink dump; set of {peers})"),
            n,
            0,
            |_| {},
            |_, ()| {
                nft.list_counters(Family::Inet, TABLE)
                    .expect("read")
                    .expect("present");
            },
        ));
        rows.push(measure(
            &format!("read counters (nft -j list counters; set of {peers})"),
            n,
            0,
            |_| {},
            |_, ()| {
                let out = std::process::Command::new("nft")
                    .args(["-j", "list", "counters", "table", "inet", TABLE])
                    .output()
                    .expect("nft -j");
                assert!(out.status.success(), "nft -j list counters failed");
            },
        ));
    }
    nft.delete_table(Family::Inet, TABLE).expect("cleanup");

    if let Some(dir) = std::env::var_os("WEFT_NFT_BENCH_POLICY") {
        rows.extend(bench_policy_table(&nft, n, std::path::Path::new(&dir)));
    }

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
    // The same read in-process (what the agent does) and through an `nft` process, as every
    // node sync did before the small tables were listed in-process.
    let by_process = Nftables::with_binary("nft");
    for (how, lister) in [("in-process", &nft), ("nft process", &by_process)] {
        rows.push(measure(
            &format!("masquerade sync, unchanged (list only, {how})"),
            n,
            0,
            |_| {},
            |_, ()| {
                let change = sync_masquerade(&same, lister).expect("sync");
                assert!(!change.wrote());
            },
        ));
    }
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

/// 10 000 elements added to the bench table's set in one transaction, through `nft -f` (one
/// statement) and through netlink (one batch of a few messages); removed untimed between samples.
fn bench_large_batch(nft: &Nftables, n: usize) -> Vec<Row> {
    let addrs: Vec<String> = (0..10_000)
        .map(|i| format!("10.253.{}.{}", i / 256, i % 256))
        .collect();
    let ops = |add: bool| -> Vec<ElemOp> {
        addrs
            .iter()
            .map(|a| ElemOp {
                add,
                set: "peers".to_owned(),
                elem: Elem::Addr(a.parse().expect("ip")),
            })
            .collect()
    };
    let (many, gone) = (ops(true), ops(false));
    let remove = |i: usize| {
        if i > 0 {
            apply_set_elements(Family::Inet, TABLE, &gone).expect("remove the batch");
        }
    };
    let script = format!(
        "add element inet {TABLE} peers {{ {} }}\n",
        addrs.join(", ")
    );
    let mut rows = vec![measure(
        "10 000 elements added in one batch (text; set of 10000)",
        n,
        script.len(),
        remove,
        |_, ()| nft.apply(&script).expect("10 000 elements through nft -f"),
    )];
    remove(1);
    rows.push(measure(
        "10 000 elements added in one batch (netlink; set of 10000)",
        n,
        0,
        remove,
        |_, ()| apply_set_elements(Family::Inet, TABLE, &many).expect("10 000 elements"),
    ));
    remove(1);
    rows
}

/// One `add element inet weft-policy SET { ELEM }` statement of weft-policy's churn script as an
/// [`ElemOp`] (the four element shapes of `Elem::render`).
fn parse_churn_statement(line: &str) -> ElemOp {
    let rest = line
        .strip_prefix(&format!("add element inet {TABLE_POLICY} "))
        .unwrap_or_else(|| panic!("not an element addition: {line}"));
    let (set, body) = rest.split_once(" { ").expect("set name");
    let body = body.trim_end_matches(" }");
    let ip = |s: &str| {
        s.parse()
            .unwrap_or_else(|_| panic!("address {s:?} in {line}"))
    };
    let parts: Vec<&str> = body.split(' ').collect();
    let elem = match parts.as_slice() {
        [a] => Elem::Addr(ip(a)),
        [a, ".", b] if a == b => Elem::Pair(ip(a)),
        [a, ".", proto, ".", port] => Elem::AddrPort(
            ip(a),
            match *proto {
                "tcp" => Proto::Tcp,
                "udp" => Proto::Udp,
                "sctp" => Proto::Sctp,
                other => panic!("protocol {other}"),
            },
            port.parse().expect("port"),
        ),
        [a, ":", "goto", chain] => Elem::Goto(ip(a), (*chain).to_owned()),
        _ => panic!("unknown element shape: {line}"),
    };
    ElemOp {
        add: true,
        set: set.to_owned(),
        elem,
    }
}

/// The policy compile bench's pod event on its one-node ruleset, through `nft -f` and through
/// netlink; even samples add the pod's elements, odd ones delete them.
fn bench_policy_table(nft: &Nftables, n: usize, dir: &std::path::Path) -> Vec<Row> {
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()))
    };
    let ruleset = read("one-node.nft");
    let adds: Vec<ElemOp> = read("churn.nft")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse_churn_statement)
        .collect();
    let dels: Vec<ElemOp> = adds
        .iter()
        .map(|o| ElemOp {
            add: false,
            ..o.clone()
        })
        .collect();
    let elements = ruleset
        .lines()
        .filter(|l| l.starts_with("add element"))
        .map(|l| l.matches(", ").count() + 1)
        .sum::<usize>();
    let sets = ruleset
        .lines()
        .filter(|l| l.trim_start().starts_with("set ") || l.trim_start().starts_with("map "))
        .count();
    nft.apply(&ruleset).expect("load the policy ruleset");
    let what = |how: &str| {
        format!(
            "pod event, {} elements ({how}; policy table, {elements} in {sets} sets)",
            adds.len()
        )
    };
    let text = [
        weft_policy::render_elem_ops(&adds),
        weft_policy::render_elem_ops(&dels),
    ];
    let mut rows = vec![measure(
        &what("text"),
        n,
        text[0].len(),
        |_| {},
        |i, ()| nft.apply(&text[i % 2]).expect("pod churn through nft -f"),
    )];
    rows.push(measure(
        &what("netlink"),
        n,
        0,
        |_| {},
        |i, ()| {
            let ops = if i.is_multiple_of(2) { &adds } else { &dels };
            nft.apply_elements(ops).expect("pod churn through netlink")
        },
    ));
    // The pod's elements added, then deleted, apart; the opposite change is made untimed
    // before each sample. The event starts and ends absent.
    let through_text = |add: bool| {
        nft.apply(&text[usize::from(!add)])
            .expect("pod churn through nft -f")
    };
    let through_netlink = |add: bool| {
        nft.apply_elements(if add { &adds } else { &dels })
            .expect("pod churn through netlink")
    };
    let ways: [(&str, &dyn Fn(bool)); 2] = [("text", &through_text), ("netlink", &through_netlink)];
    for (how, write) in ways {
        for add in [true, false] {
            let verb = if add { "added" } else { "deleted" };
            rows.push(measure(
                &format!("pod {verb}, {} elements ({how}; policy table)", adds.len()),
                n,
                0,
                |i| {
                    if i > 0 {
                        write(!add)
                    }
                },
                |_, ()| write(add),
            ));
        }
    }
    nft.delete_table(Family::Inet, TABLE_POLICY)
        .expect("cleanup");
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
        "| {:<70} | {:>9} | {:>8} | {:>8} | {:>8} |",
        "workload", "bytes", "p50 ms", "p99 ms", "max ms"
    );
    println!(
        "|{:-<72}|{:->11}|{:->10}|{:->10}|{:->10}|",
        "", "", "", "", ""
    );
    for row in rows {
        let bytes = if row.bytes == 0 {
            "-".to_owned()
        } else {
            row.bytes.to_string()
        };
        println!(
            "| {:<70} | {:>9} | {:>8} | {:>8} | {:>8} |",
            row.name,
            bytes,
            ms(quantile(&row.samples, 0.50)),
            ms(quantile(&row.samples, 0.99)),
            ms(*row.samples.last().unwrap_or(&Duration::ZERO)),
        );
    }
}
