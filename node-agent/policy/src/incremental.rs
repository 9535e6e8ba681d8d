//! Pod churn without a compile: the [`Ir`] that [`crate::compile_node`] would produce after some
//! pods changed, derived from the previous one, with the element changes that take the kernel
//! there.
//!
//! ```text
//!   index (after the events) ─┐
//!   old PodInfo per changed pod ─┼─► apply_pod_changes ─► Ir updated in place + [ElemOp]
//!   Ir + Memo (last compile) ─┘          │
//!                                         └─► None: compile in full (nothing was changed)
//! ```
//!
//! A pod's addresses enter or leave the pod sets whose selection matches it (the [`Memo`] says
//! which selection each set holds) and the named-port sets of its ports; a pod of this node also
//! gets (or loses) its verdict-map entries, pointing at the profile chain its selecting policies
//! already have. Everything else needs a full compile, and the function says so by returning
//! `None` before it changes anything:
//! - a local pod whose combination of selecting policies has no profile chain yet;
//! - a profile chain that no local pod would use any more (the full compile drops it, and the
//!   sets only it used);
//! - an address that two live pods hold, now or before the changes (a set's element with two
//!   owners, or one that changes hands).
//!
//! Invariant (checked by `tests/incremental.rs` on random clusters): when it returns `Some`, the
//! updated [`Ir`] equals `compile_node` of the index, and the operations applied to the previous
//! ruleset's elements give the new ruleset's elements.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use weft_crds::IpFamily;
use weft_crds::cidr::family_of;

use crate::compile::{Memo, NodeInput, profile_key, selecting, selects};
use crate::index::{Index, PodInfo, PodKey};
use crate::ir::{Direction, Ir, LocalPod, SetElems};
use crate::model::Proto;
use crate::render::{Elem, ElemOp, node_families};

/// The families' set-name suffixes.
fn sfx(f: IpFamily) -> &'static str {
    match f {
        IpFamily::V4 => "v4",
        IpFamily::V6 => "v6",
    }
}

/// Deletions and additions, kept apart so that every deletion precedes every addition.
#[derive(Default)]
struct Ops {
    del: Vec<ElemOp>,
    add: Vec<ElemOp>,
}

impl Ops {
    fn push(&mut self, add: bool, set: String, elem: Elem) {
        let op = ElemOp { add, set, elem };
        if add {
            self.add.push(op)
        } else {
            self.del.push(op)
        }
    }

    /// `set` (the IR's name) in the families of the node: `gone` deleted, `new` added.
    fn diff(
        &mut self,
        families: &[IpFamily],
        set: &str,
        gone: impl IntoIterator<Item = Elem>,
        new: impl IntoIterator<Item = Elem>,
    ) {
        for (add, elems) in [
            (false, gone.into_iter().collect::<Vec<_>>()),
            (true, new.into_iter().collect()),
        ] {
            for e in elems {
                let f = family_of(e.addr());
                if families.contains(&f) {
                    self.push(add, format!("{set}-{}", sfx(f)), e);
                }
            }
        }
    }
}

/// The local pod entry a pod of this node gets, or `None` when it is not local or not live.
/// `Err(())` when its profiles do not exist yet.
fn local_entry(
    index: &Index,
    memo: &Memo,
    node: &NodeInput,
    key: &PodKey,
    pod: Option<&PodInfo>,
) -> Result<Option<LocalPod>, ()> {
    let Some(pod) = pod.filter(|p| p.node == node.node_name && p.is_live()) else {
        return Ok(None);
    };
    let labels = index.namespace_labels(&key.namespace);
    let mut names = Vec::with_capacity(2);
    for dir in [Direction::Ingress, Direction::Egress] {
        let sel = selecting(index, labels, key, pod, dir);
        let name = memo.profiles.get(&profile_key(&sel, pod, dir)).ok_or(())?;
        names.push(name.clone());
    }
    let egress = names.pop().ok_or(())?;
    let ingress = names.pop().ok_or(())?;
    Ok(Some(LocalPod {
        ips: pod.ips.clone(),
        ingress,
        egress,
    }))
}

/// Whether an address changes hands or has two owners: held, now or before the changes, by two
/// live pods. A set element with two owners cannot follow one of them; a full compile can.
fn shared_address(index: &Index, changed: &BTreeMap<PodKey, Option<PodInfo>>) -> bool {
    let mut owners: BTreeMap<IpAddr, BTreeSet<&PodKey>> = BTreeMap::new();
    for (key, old) in changed {
        let states = [old.as_ref(), index.pod(key)];
        for p in states.into_iter().flatten().filter(|p| p.is_live()) {
            for ip in &p.ips {
                owners.entry(*ip).or_default().insert(key);
            }
        }
    }
    owners.iter().any(|(ip, keys)| {
        keys.len() > 1
            || index.pods_with_ip(ip).any(|other| {
                !keys.contains(other) && index.pod(other).is_some_and(PodInfo::is_live)
            })
    })
}

/// The named-port elements `pod` contributes to the set of port `name` (`proto`: any if `None`).
fn port_elems(pod: Option<&PodInfo>, name: &str, proto: Option<Proto>) -> BTreeSet<Elem> {
    let Some(pod) = pod.filter(|p| p.is_live()) else {
        return BTreeSet::new();
    };
    pod.named_ports
        .iter()
        .filter(|np| np.name == name && proto.is_none_or(|p| p == np.proto))
        .flat_map(|np| {
            pod.ips
                .iter()
                .map(move |ip| Elem::AddrPort(*ip, np.proto, np.port))
        })
        .collect()
}

/// Follows pod changes from the [`Ir`] (and its [`Memo`]) of the last compile. `changed` maps
/// each changed pod to what the index held of it before (`None`: it did not exist); `index` holds
/// every change already. Returns the element operations that take the kernel from the old `ir`
/// to the updated one (empty when nothing this node holds changed), or `None`, with `ir`
/// untouched, when only a full compile can follow (see the module docs).
pub fn apply_pod_changes(
    ir: &mut Ir,
    memo: &Memo,
    index: &Index,
    node: &NodeInput,
    changed: &BTreeMap<PodKey, Option<PodInfo>>,
) -> Option<Vec<ElemOp>> {
    // Check everything first: on `None`, nothing may have been changed.
    if shared_address(index, changed) {
        return None;
    }
    let mut locals: BTreeMap<&PodKey, Option<LocalPod>> = BTreeMap::new();
    for key in changed.keys() {
        let new = index.pod(key);
        let entry = local_entry(index, memo, node, key, new).ok()?;
        if entry.is_some() || ir.pods.contains_key(key) {
            locals.insert(key, entry);
        }
    }
    let in_use: BTreeSet<&str> = ir
        .pods
        .iter()
        .filter(|(k, _)| !locals.contains_key(k))
        .map(|(_, p)| p)
        .chain(locals.values().flatten())
        .flat_map(|p| [p.ingress.as_str(), p.egress.as_str()])
        .collect();
    if ir.chains.keys().any(|c| !in_use.contains(c.as_str())) {
        return None;
    }

    let families = node_families(ir);
    let mut ops = Ops::default();
    // The verdict maps and `self-*`.
    for (key, entry) in locals {
        let old = ir.pods.remove(key);
        let ips = |p: &Option<LocalPod>| -> BTreeSet<IpAddr> {
            p.iter().flat_map(|p| p.ips.iter().copied()).collect()
        };
        let (old_ips, new_ips) = (ips(&old), ips(&entry));
        ops.diff(
            &families,
            "self",
            old_ips.difference(&new_ips).map(|ip| Elem::Pair(*ip)),
            new_ips.difference(&old_ips).map(|ip| Elem::Pair(*ip)),
        );
        for (map, ingress) in [("from-pod", false), ("to-pod", true)] {
            let verdicts = |p: &Option<LocalPod>| -> BTreeMap<IpAddr, String> {
                p.iter()
                    .flat_map(|p| {
                        let chain = if ingress { &p.ingress } else { &p.egress };
                        p.ips.iter().map(move |ip| (*ip, chain.clone()))
                    })
                    .collect()
            };
            let (before, after) = (verdicts(&old), verdicts(&entry));
            ops.diff(
                &families,
                map,
                before
                    .iter()
                    .filter(|(ip, c)| after.get(*ip) != Some(*c))
                    .map(|(ip, c)| Elem::Goto(*ip, c.clone())),
                after
                    .iter()
                    .filter(|(ip, c)| before.get(*ip) != Some(*c))
                    .map(|(ip, c)| Elem::Goto(*ip, c.clone())),
            );
        }
        if let Some(e) = entry {
            ir.pods.insert(key.clone(), e);
        }
    }
    // Pod sets and named-port sets.
    for (key, old) in changed {
        let new = index.pod(key);
        let labels = index.namespace_labels(&key.namespace);
        for (name, sel) in &memo.pod_sets {
            let Some(SetElems::Addrs(set)) = ir.addr_sets.get_mut(name).map(|s| &mut s.elems)
            else {
                continue;
            };
            let member = |p: Option<&PodInfo>| -> BTreeSet<IpAddr> {
                p.filter(|p| selects(sel, key, labels, p))
                    .map(|p| p.ips.iter().copied().collect())
                    .unwrap_or_default()
            };
            let (before, after) = (member(old.as_ref()), member(new));
            if before == after {
                continue;
            }
            let gone: Vec<IpAddr> = before.difference(&after).copied().collect();
            let added: Vec<IpAddr> = after.difference(&before).copied().collect();
            for ip in &gone {
                set.remove(ip);
            }
            set.extend(added.iter().copied());
            ops.diff(
                &families,
                name,
                gone.into_iter().map(Elem::Addr),
                added.into_iter().map(Elem::Addr),
            );
        }
        for (name, (port, proto)) in &memo.port_sets {
            let Some(set) = ir.port_sets.get_mut(name) else {
                continue;
            };
            let (before, after) = (
                port_elems(old.as_ref(), port, *proto),
                port_elems(new, port, *proto),
            );
            if before == after {
                continue;
            }
            let gone: Vec<Elem> = before.difference(&after).cloned().collect();
            let added: Vec<Elem> = after.difference(&before).cloned().collect();
            for e in gone.iter().chain(&added) {
                if let Elem::AddrPort(ip, p, n) = e {
                    if before.contains(e) {
                        set.elems.remove(&(*ip, *p, *n));
                    } else {
                        set.elems.insert((*ip, *p, *n));
                    }
                }
            }
            ops.diff(&families, name, gone, added);
        }
    }
    let mut out = ops.del;
    out.extend(ops.add);
    Some(out)
}
