//! Set and map element changes written to the kernel as one native nf_tables netlink batch, without
//! the `nft` process: the policy engine's hot path (pod churn).
//!
//! ```text
//!   &[ElemOp] ──build_batch (pure)──► BATCH_BEGIN · NEWSETELEM/DELSETELEM × n · BATCH_END
//!                                         │ one sendto() on a NETLINK_NETFILTER socket
//!                                         ▼
//!                      kernel: every message checked, then one commit (or one abort)
//!                                         │ one ack per message, queued before sendto() returns
//!                                         ▼
//!   Ok(()) or Error naming the set, the element and the errno ◄──judge_replies (pure)
//! ```
//!
//! Why only elements: a change of pod membership only adds and deletes elements of sets and
//! verdict maps whose types are fixed (addresses, address pairs, address·protocol·port, address :
//! goto chain), whose encoding is a handful of attributes; rules, chains and set declarations keep
//! going through `nft -f` and its text language (read-back, golden files, nft's own checks). See
//! `docs/adr/0303-nftables-applier.md`, addendum of 2026-12-02, for the measurements.
//!
//! Invariants:
//! - one call is one batch, one `sendto()`, hence one kernel transaction: all of `ops` is in force
//!   afterwards, or none of it (the kernel aborts the batch when any message fails);
//! - ops are applied in the order given: consecutive ops on the same set with the same verb share
//!   a message (split so that no attribute outgrows its 16-bit length), nothing is reordered;
//! - `add` does not set `NLM_F_EXCL`: adding an element already present with the same value is not
//!   an error (as `nft add element`); deleting an absent element is (`ENOENT`, as nft);
//! - every message asks for an ack and every ack is read (the receive buffer is sized for all of
//!   them); the kernel processes the batch synchronously inside `sendto()`, so the acks are all
//!   queued when it returns and reading stops when the socket has nothing more;
//! - the socket is the calling thread's network namespace's, kept open between calls
//!   (`super::session`: closing it after deletions waits for an RCU grace period) and dropped when
//!   a call fails; the acks of a call are told apart by their sequence numbers, unique per
//!   process.
//!
//! Key encoding (checked against `nft --debug=netlink`): the fields of a concatenation each take a
//! whole number of 32-bit registers — IPv4 4 bytes, IPv6 16, `inet_proto` 1 byte and 3 zero bytes,
//! `inet_service` 2 bytes in network order and 2 zero bytes.

use std::io;
use std::mem::size_of;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

use weft_policy::{Elem, ElemOp, Proto};

use super::Family;
use super::session::PerNetns;
use crate::Error;

// Netlink and nfnetlink (linux/netlink.h, linux/netfilter/nfnetlink.h).
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x01;
const NLM_F_ACK: u16 = 0x04;
const NLM_F_CREATE: u16 = 0x400;
/// `NLM_F_ROOT | NLM_F_MATCH`.
const NLM_F_DUMP: u16 = 0x300;
/// In an ack: the original message was not echoed (we set `NETLINK_CAP_ACK`).
const NLM_F_CAPPED: u16 = 0x100;
/// In an ack: extended-ack attributes follow (we set `NETLINK_EXT_ACK`).
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLA_F_NESTED: u16 = 1 << 15;
const SOL_NETLINK: libc::c_int = 270;
const NETLINK_NETFILTER: libc::c_int = 12;
const NETLINK_CAP_ACK: libc::c_int = 10;
const NETLINK_EXT_ACK: libc::c_int = 11;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLMSGERR_ATTR_OFFS: u16 = 2;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNETLINK_V0: u8 = 0;

// nf_tables (linux/netfilter/nf_tables.h).
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_NEWOBJ: u16 = 18;
const NFT_MSG_GETOBJ: u16 = 19;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_OBJ_TABLE: u16 = 1;
const NFTA_OBJ_NAME: u16 = 2;
const NFTA_OBJ_TYPE: u16 = 3;
const NFTA_OBJ_DATA: u16 = 4;
const NFT_OBJECT_COUNTER: u32 = 1;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFT_GOTO: i32 = -4;
const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
/// Longest table, set or chain name the kernel accepts (`NFT_NAME_MAXLEN` - 1).
const NAME_MAX: usize = 255;

/// Most bytes of element attributes in one message. The elements are one nested attribute whose
/// length is a `u16`; well below that, a run of one set is split into several messages (still one
/// batch). 32 KiB holds 2 048 IPv4 address elements.
const ELEMENTS_BYTES_MAX: usize = 32 * 1024;
/// What one ack may cost in the receive buffer (its skb's truesize, well above the ~1 KiB a
/// small ack takes): the buffer is sized for one per message so that none is dropped.
const ACK_BUDGET: usize = 2048;
/// Room above the batch itself in the send buffer, and above the acks in the receive buffer.
const BUFFER_SLACK: usize = 64 * 1024;
/// How long a dump's reader waits for the kernel's next datagram.
const DUMP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// Size of one receive (an ack without the echoed request is well under 1 KiB).
const RECV_BUFFER: usize = 64 * 1024;

/// Sequence numbers are unique per process, so that a trace of several calls reads unambiguously.
static NEXT_SEQ: AtomicU32 = AtomicU32::new(1);

/// Adds and deletes the elements of `ops`, in order, in sets and verdict maps of table
/// `table_family table`, as ONE nf_tables batch on a `NETLINK_NETFILTER` socket of the calling
/// thread's network namespace: all of them are in force afterwards, or none.
///
/// An error names the first refused operation (its set, its element) and the kernel's errno,
/// e.g. "adding 10.0.0.5 to set p-…-v4 of inet weft-policy: No such file or directory (the set
/// does not exist)".
pub fn apply_set_elements(table_family: Family, table: &str, ops: &[ElemOp]) -> Result<(), Error> {
    if ops.is_empty() {
        return Ok(());
    }
    let seq = NEXT_SEQ.fetch_add(ops.len() as u32 + 2, Ordering::Relaxed);
    let batch = build_batch(table_family, table, ops, seq)?;
    tracing::trace!(
        bytes = batch.bytes.len(),
        messages = batch.messages.len(),
        ops = ops.len(),
        "nf_tables element batch"
    );
    SOCKETS.with(NfSocket::open, |socket| {
        socket.size_buffers(batch.bytes.len(), batch.messages.len())?;
        socket.send(&batch.bytes)?;
        let replies = socket.receive_all()?;
        judge_replies(table_family, table, ops, &batch, &replies)
    })
}

/// The named counters of table `family table` (name → (packets, bytes)), read by one netlink dump
/// of its counter objects (`NFT_MSG_GETOBJ`, filtered by table and type in the kernel), or `None`
/// when the table does not exist. `nft -j list counters` fills its cache with every set element
/// of the table first (hundreds of milliseconds with a policy table's tens of thousands); this
/// reads the counters and nothing else.
pub fn read_counters(family: Family, table: &str) -> Result<Option<super::Counters>, Error> {
    check_name("table", table)?;
    let seq = NEXT_SEQ.fetch_add(2, Ordering::Relaxed);
    let mut dump = Vec::new();
    let start = begin_message(
        &mut dump,
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETOBJ,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        nfproto(family),
        0,
    );
    put_str(&mut dump, NFTA_OBJ_TABLE, table);
    put_attr(&mut dump, NFTA_OBJ_TYPE, &NFT_OBJECT_COUNTER.to_be_bytes());
    end_message(&mut dump, start);
    SOCKETS.with(NfSocket::open, |socket| {
        socket.send(&dump)?;
        let objects = socket.receive_dump(seq, "dump the counters")?;
        let mut counters = super::Counters::new();
        for msg in &objects {
            if let Some((name, packets, bytes)) = parse_counter(msg) {
                counters.insert(name, (packets, bytes));
            }
        }
        if !counters.is_empty() {
            return Ok(Some(counters));
        }
        // No counter: a table without any, or no table (the dump's filter does not tell).
        let mut get = Vec::new();
        let start = begin_message(
            &mut get,
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE,
            NLM_F_REQUEST | NLM_F_ACK,
            seq + 1,
            nfproto(family),
            0,
        );
        put_str(&mut get, NFTA_TABLE_NAME, table);
        end_message(&mut get, start);
        socket.send(&get)?;
        let received = socket.receive_all()?;
        match received.replies.iter().find(|r| r.seq == seq + 1) {
            Some(r) if r.errno == libc::ENOENT => Ok(None),
            Some(r) if r.errno != 0 => Err(Error::NftNetlinkIo {
                what: format!("look up table {family} {table}"),
                source: io::Error::from_raw_os_error(r.errno),
            }),
            _ => Ok(Some(counters)),
        }
    })
}

/// A counter object's name, packets and bytes from one `NFT_MSG_NEWOBJ` message (header
/// included); `None` for anything else.
fn parse_counter(msg: &[u8]) -> Option<(String, u64, u64)> {
    if u16_at(msg, 4)? != (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWOBJ {
        return None;
    }
    let (mut name, mut kind, mut data) = (None, None, None);
    for (ty, payload) in attributes(msg.get(NLMSG_HDRLEN + 4..)?) {
        match ty {
            NFTA_OBJ_NAME => name = Some(c_string(payload)),
            NFTA_OBJ_TYPE => kind = Some(u32::from_be_bytes(payload.get(..4)?.try_into().ok()?)),
            NFTA_OBJ_DATA => data = Some(payload),
            _ => {}
        }
    }
    if kind? != NFT_OBJECT_COUNTER {
        return None;
    }
    let (mut packets, mut bytes) = (0, 0);
    for (ty, payload) in attributes(data?) {
        let value = || Some(u64::from_be_bytes(payload.get(..8)?.try_into().ok()?));
        match ty {
            NFTA_COUNTER_PACKETS => packets = value()?,
            NFTA_COUNTER_BYTES => bytes = value()?,
            _ => {}
        }
    }
    Some((name?, packets, bytes))
}

/// A NUL-terminated string attribute's text.
fn c_string(payload: &[u8]) -> String {
    let text = payload.split(|b| *b == 0).next().unwrap_or_default();
    String::from_utf8_lossy(text).into_owned()
}

/// The (type without flags, payload) of each netlink attribute in `buf`, up to the first
/// malformed one.
fn attributes(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let (len, ty) = (u16_at(buf, at)? as usize, u16_at(buf, at + 2)?);
        if len < 4 || at + len > buf.len() {
            return None;
        }
        let payload = &buf[at + 4..at + len];
        at += align4(len);
        Some((ty & !NLA_F_NESTED, payload))
    })
}

/// The element writer's sockets, one per network namespace.
static SOCKETS: PerNetns<NfSocket> = PerNetns::new();

/// One message of a batch, and what is needed to trace a kernel error back to an op.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Message {
    seq: u32,
    /// Index in `ops` of the message's first element; its elements are consecutive ops.
    first_op: usize,
    /// Offset (from the message's header) of each element's `NFTA_LIST_ELEM` attribute.
    elem_offsets: Vec<u32>,
    /// Offsets of the table and the set name attributes.
    table_offset: u32,
    set_offset: u32,
}

/// A whole batch, ready for one `sendto()`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Batch {
    bytes: Vec<u8>,
    /// The element messages, in order (not the begin and end markers).
    messages: Vec<Message>,
    /// Sequence number of `NFNL_MSG_BATCH_BEGIN` (a commit failure is reported against it).
    begin_seq: u32,
}

/// The nfgenmsg family of a table family.
fn nfproto(family: Family) -> u8 {
    match family {
        Family::Inet => NFPROTO_INET,
        Family::Ip => NFPROTO_IPV4,
        Family::Ip6 => NFPROTO_IPV6,
    }
}

fn proto_number(proto: Proto) -> u8 {
    match proto {
        Proto::Tcp => libc::IPPROTO_TCP as u8,
        Proto::Udp => libc::IPPROTO_UDP as u8,
        Proto::Sctp => libc::IPPROTO_SCTP as u8,
    }
}

fn push_addr(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
    }
}

/// The key of `elem` as the kernel compares it: each field of a concatenation padded to 32-bit
/// registers.
fn build_key(elem: &Elem) -> Vec<u8> {
    let mut key = Vec::with_capacity(24);
    match elem {
        Elem::Addr(ip) | Elem::Goto(ip, _) => push_addr(&mut key, *ip),
        Elem::Pair(ip) => {
            push_addr(&mut key, *ip);
            push_addr(&mut key, *ip);
        }
        Elem::AddrPort(ip, proto, port) => {
            push_addr(&mut key, *ip);
            key.extend_from_slice(&[proto_number(*proto), 0, 0, 0]);
            key.extend_from_slice(&port.to_be_bytes());
            key.extend_from_slice(&[0, 0]);
        }
    }
    key
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Appends a netlink attribute (length and type in host order, payload padded to 4 bytes).
fn put_attr(out: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(align4(out.len()), 0);
}

fn put_str(out: &mut Vec<u8>, ty: u16, s: &str) {
    let mut z = Vec::with_capacity(s.len() + 1);
    z.extend_from_slice(s.as_bytes());
    z.push(0);
    put_attr(out, ty, &z);
}

/// Opens a nested attribute; [`end_nest`] writes its length.
fn begin_nest(out: &mut Vec<u8>, ty: u16) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    start
}

fn end_nest(out: &mut [u8], start: usize) {
    let len = (out.len() - start) as u16;
    out[start..start + 2].copy_from_slice(&len.to_ne_bytes());
}

/// The `NFTA_LIST_ELEM` attribute of one op.
fn build_element(op: &ElemOp) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    let elem = begin_nest(&mut out, NFTA_LIST_ELEM);
    let key = begin_nest(&mut out, NFTA_SET_ELEM_KEY);
    put_attr(&mut out, NFTA_DATA_VALUE, &build_key(&op.elem));
    end_nest(&mut out, key);
    if let (true, Elem::Goto(_, chain)) = (op.add, &op.elem) {
        let data = begin_nest(&mut out, NFTA_SET_ELEM_DATA);
        let verdict = begin_nest(&mut out, NFTA_DATA_VERDICT);
        put_attr(&mut out, NFTA_VERDICT_CODE, &NFT_GOTO.to_be_bytes());
        put_str(&mut out, NFTA_VERDICT_CHAIN, chain);
        end_nest(&mut out, verdict);
        end_nest(&mut out, data);
    }
    end_nest(&mut out, elem);
    out
}

/// Appends a netlink header and an nfgenmsg; returns the header's offset (its length is written by
/// [`end_message`]).
fn begin_message(
    out: &mut Vec<u8>,
    ty: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
) -> usize {
    let start = out.len();
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&[family, NFNETLINK_V0]);
    out.extend_from_slice(&res_id.to_be_bytes());
    start
}

fn end_message(out: &mut [u8], start: usize) {
    let len = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

fn check_name(what: &str, name: &str) -> Result<(), Error> {
    if name.is_empty() || name.len() > NAME_MAX || name.contains('\0') {
        return Err(Error::NftNetlinkIo {
            what: format!("encode the {what} name {name:?}"),
            source: io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("nftables names have 1 to {NAME_MAX} bytes and no NUL"),
            ),
        });
    }
    Ok(())
}

/// The batch for `ops`, sequence numbers from `seq` (begin) to `seq + messages + 1` (end).
fn build_batch(family: Family, table: &str, ops: &[ElemOp], seq: u32) -> Result<Batch, Error> {
    check_name("table", table)?;
    for op in ops {
        check_name("set", &op.set)?;
        if let (true, Elem::Goto(_, chain)) = (op.add, &op.elem) {
            check_name("chain", chain)?;
        }
    }
    let mut out = Vec::with_capacity(64 + ops.len() * 48);
    let begin = begin_message(
        &mut out,
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        libc::AF_UNSPEC as u8,
        NFNL_SUBSYS_NFTABLES,
    );
    end_message(&mut out, begin);

    let mut messages = Vec::new();
    let mut i = 0;
    while i < ops.len() {
        let first = &ops[i];
        let (ty, flags) = if first.add {
            (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK)
        } else {
            (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK)
        };
        let msg_seq = seq.wrapping_add(messages.len() as u32 + 1);
        let start = begin_message(
            &mut out,
            (NFNL_SUBSYS_NFTABLES << 8) | ty,
            flags,
            msg_seq,
            nfproto(family),
            0,
        );
        let table_offset = (out.len() - start) as u32;
        put_str(&mut out, NFTA_SET_ELEM_LIST_TABLE, table);
        let set_offset = (out.len() - start) as u32;
        put_str(&mut out, NFTA_SET_ELEM_LIST_SET, &first.set);
        let elements = begin_nest(&mut out, NFTA_SET_ELEM_LIST_ELEMENTS);
        let mut elem_offsets = Vec::new();
        while let Some(op) = ops.get(i) {
            if op.add != first.add || op.set != first.set {
                break;
            }
            let elem = build_element(op);
            if !elem_offsets.is_empty() && out.len() - elements + elem.len() > ELEMENTS_BYTES_MAX {
                break;
            }
            elem_offsets.push((out.len() - start) as u32);
            out.extend_from_slice(&elem);
            i += 1;
        }
        end_nest(&mut out, elements);
        end_message(&mut out, start);
        messages.push(Message {
            seq: msg_seq,
            first_op: i - elem_offsets.len(),
            elem_offsets,
            table_offset,
            set_offset,
        });
    }

    let end_seq = seq.wrapping_add(messages.len() as u32 + 1);
    let end = begin_message(
        &mut out,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        end_seq,
        libc::AF_UNSPEC as u8,
        NFNL_SUBSYS_NFTABLES,
    );
    end_message(&mut out, end);
    Ok(Batch {
        bytes: out,
        messages,
        begin_seq: seq,
    })
}

/// One ack or error from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reply {
    seq: u32,
    /// 0 for an ack, a positive errno for an error.
    errno: i32,
    /// `NLMSGERR_ATTR_OFFS`: offset of the offending attribute in the request.
    offset: Option<u32>,
    /// `NLMSGERR_ATTR_MSG`: the kernel's message, if it gave one.
    message: Option<String>,
}

fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(buf.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

/// The replies in one datagram (acks and errors; other message types are ignored).
fn parse_replies(buf: &[u8], out: &mut Vec<Reply>) {
    let mut at = 0;
    while at + NLMSG_HDRLEN <= buf.len() {
        let (Some(len), Some(ty), Some(flags), Some(seq)) = (
            u32_at(buf, at),
            u16_at(buf, at + 4),
            u16_at(buf, at + 6),
            u32_at(buf, at + 8),
        ) else {
            return;
        };
        let len = len as usize;
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            // A truncated datagram still carries the errno in its first bytes.
            if ty == NLMSG_ERROR
                && let Some(e) = u32_at(buf, at + NLMSG_HDRLEN)
            {
                out.push(Reply {
                    seq,
                    errno: -(e as i32),
                    offset: None,
                    message: None,
                });
            }
            return;
        }
        let msg = &buf[at..at + len];
        if ty == NLMSG_ERROR
            && let Some(e) = u32_at(msg, NLMSG_HDRLEN)
        {
            let mut reply = Reply {
                seq,
                errno: -(e as i32),
                offset: None,
                message: None,
            };
            // nlmsgerr = error (4) + the request's header (16) [+ its payload unless capped].
            let mut tlv = NLMSG_HDRLEN + 4;
            let request_len = u32_at(msg, tlv).unwrap_or(0) as usize;
            tlv += if flags & NLM_F_CAPPED != 0 {
                NLMSG_HDRLEN
            } else {
                align4(request_len.max(NLMSG_HDRLEN))
            };
            if flags & NLM_F_ACK_TLVS != 0 {
                for (aty, payload) in attributes(msg.get(tlv..).unwrap_or_default()) {
                    match aty {
                        NLMSGERR_ATTR_OFFS => reply.offset = u32_at(payload, 0),
                        NLMSGERR_ATTR_MSG => reply.message = Some(c_string(payload)),
                        _ => {}
                    }
                }
            }
            out.push(reply);
        }
        at += align4(len);
    }
}

/// The errno's text without Rust's " (os error N)" suffix.
fn errno_text(errno: i32) -> String {
    let text = io::Error::from_raw_os_error(errno).to_string();
    match text.rfind(" (os error ") {
        Some(cut) => text[..cut].to_owned(),
        None => text,
    }
}

fn noun(elem: &Elem) -> &'static str {
    match elem {
        Elem::Goto(..) => "map",
        _ => "set",
    }
}

fn describe(op: &ElemOp, family: Family, table: &str) -> String {
    let (verb, prep) = if op.add {
        ("adding", "to")
    } else {
        ("deleting", "from")
    };
    format!(
        "{verb} {} {prep} {} {} of {family} {table}",
        op.elem.render(op.add),
        noun(&op.elem),
        op.set
    )
}

/// What the offending attribute says about the failure, when the kernel pointed at one.
fn hint(errno: i32, op: &ElemOp, culprit: Culprit) -> Option<String> {
    let thing = noun(&op.elem);
    Some(match (culprit, errno) {
        (Culprit::Table, libc::ENOENT) => "the table does not exist".to_owned(),
        (Culprit::Set, libc::ENOENT) => format!("the {thing} does not exist"),
        (Culprit::Element, libc::ENOENT) if !op.add => format!("the element is not in the {thing}"),
        (Culprit::Element, libc::ENOENT) => match &op.elem {
            Elem::Goto(_, chain) => format!("chain {chain} does not exist"),
            _ => return None,
        },
        (Culprit::Element, libc::EEXIST) => {
            format!("the key is already in the {thing} with another value")
        }
        (Culprit::Element, libc::EINVAL | libc::ERANGE) => {
            format!("the element does not fit the {thing}'s type")
        }
        (Culprit::Element, libc::ENFILE | libc::ENOSPC) => format!("the {thing} is full"),
        _ => return None,
    })
}

/// Which part of a message the kernel's error points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Culprit {
    Table,
    Set,
    Element,
    Unknown,
}

/// The outcome of a batch from its replies: Ok when every message was acknowledged without an
/// error, otherwise the first refused operation (in batch order) as an error.
fn judge_replies(
    family: Family,
    table: &str,
    ops: &[ElemOp],
    batch: &Batch,
    replies: &Received,
) -> Result<(), Error> {
    let refused = |what: String, errno: i32, reason: String| Error::NftNetlink {
        what,
        errno,
        reason,
        ops: ops.len(),
    };
    let errors: Vec<&Reply> = replies.replies.iter().filter(|r| r.errno != 0).collect();
    let first = errors
        .iter()
        .filter_map(|r| {
            let index = batch.messages.iter().position(|m| m.seq == r.seq)?;
            Some((index, *r))
        })
        .min_by_key(|(index, _)| *index);
    if let Some((index, reply)) = first {
        let msg = &batch.messages[index];
        let (op_index, culprit) = match reply.offset {
            Some(o) if o == msg.table_offset => (msg.first_op, Culprit::Table),
            Some(o) if o == msg.set_offset => (msg.first_op, Culprit::Set),
            Some(o) if msg.elem_offsets.first().is_some_and(|first| o >= *first) => {
                let k = msg.elem_offsets.partition_point(|start| *start <= o) - 1;
                (msg.first_op + k, Culprit::Element)
            }
            _ => (msg.first_op, Culprit::Unknown),
        };
        let op = &ops[op_index];
        let mut what = describe(op, family, table);
        if culprit == Culprit::Unknown && msg.elem_offsets.len() > 1 {
            what.push_str(&format!(
                " (or one of the {} other elements of the same message)",
                msg.elem_offsets.len() - 1
            ));
        }
        let mut reason = errno_text(reply.errno);
        let detail = hint(reply.errno, op, culprit).or_else(|| reply.message.clone());
        if let Some(detail) = detail {
            reason.push_str(&format!(" ({detail})"));
        }
        if errors.len() > 1 {
            reason.push_str(&format!(
                "; {} more operations were refused",
                errors.len() - 1
            ));
        }
        return Err(refused(what, reply.errno, reason));
    }
    if let Some(reply) = errors.first() {
        // Not one of the element messages: the batch itself (commit failure) or a stray one.
        let what = if reply.seq == batch.begin_seq {
            format!(
                "committing {} element changes to {family} {table}",
                ops.len()
            )
        } else {
            format!(
                "writing {} element changes to {family} {table} (a reply to unknown message {})",
                ops.len(),
                reply.seq
            )
        };
        return Err(refused(what, reply.errno, errno_text(reply.errno)));
    }
    let acked = batch
        .messages
        .iter()
        .filter(|m| replies.replies.iter().any(|r| r.seq == m.seq))
        .count();
    if acked < batch.messages.len() {
        let why = if replies.overrun {
            "the receive buffer overflowed (ENOBUFS) and acks were lost"
        } else {
            "acks are missing"
        };
        return Err(Error::NftNetlinkIo {
            what: format!(
                "confirm {} element changes to {family} {table}: {why}, {acked} of {} messages acknowledged; whether the batch was committed is unknown",
                ops.len(),
                batch.messages.len()
            ),
            source: io::Error::from_raw_os_error(if replies.overrun {
                libc::ENOBUFS
            } else {
                libc::EPROTO
            }),
        });
    }
    Ok(())
}

/// Everything read back after a batch.
#[derive(Debug, Default)]
struct Received {
    replies: Vec<Reply>,
    /// The kernel dropped replies for want of receive buffer (ENOBUFS).
    overrun: bool,
}

/// A `NETLINK_NETFILTER` socket, closed on drop.
struct NfSocket {
    fd: OwnedFd,
}

fn last_error(what: &str) -> Error {
    Error::NftNetlinkIo {
        what: what.to_owned(),
        source: io::Error::last_os_error(),
    }
}

fn set_int(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: a valid fd, a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn get_int(fd: &OwnedFd, level: libc::c_int, name: libc::c_int) -> io::Result<usize> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid fd, a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value.max(0) as usize)
    } else {
        Err(io::Error::last_os_error())
    }
}

fn kernel_address() -> libc::sockaddr_nl {
    // SAFETY: sockaddr_nl is plain data; all zeros is the kernel's address (pid 0, no groups).
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr
}

impl NfSocket {
    fn open() -> Result<NfSocket, Error> {
        // SAFETY: plain socket(2) call; the fd is owned right away.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            )
        };
        if raw < 0 {
            return Err(last_error("open a NETLINK_NETFILTER socket"));
        }
        // SAFETY: `raw` is a fresh fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let addr = kernel_address();
        // SAFETY: a valid fd and a sockaddr_nl of the right size (pid 0: the kernel picks ours).
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(last_error("bind a NETLINK_NETFILTER socket"));
        }
        // Acks without the echoed request (small and bounded), with the offending attribute.
        set_int(&fd, SOL_NETLINK, NETLINK_CAP_ACK, 1).map_err(|source| Error::NftNetlinkIo {
            what: "set NETLINK_CAP_ACK".to_owned(),
            source,
        })?;
        // A dump's reader waits for the kernel's next datagram; acks are read without waiting.
        let timeout = libc::timeval {
            tv_sec: DUMP_WAIT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        // SAFETY: a valid fd and a timeval of the right size.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(last_error(
                "set a NETLINK_NETFILTER socket's receive timeout",
            ));
        }
        // Extended acks are a help for the error message, not a requirement.
        if let Err(e) = set_int(&fd, SOL_NETLINK, NETLINK_EXT_ACK, 1) {
            tracing::debug!(error = %e, "NETLINK_EXT_ACK not available");
        }
        Ok(NfSocket { fd })
    }

    /// Makes room for the whole batch in one send and for one ack per message. The forced variants
    /// (CAP_NET_ADMIN, which writing nftables needs anyway) pass over `net.core.[rw]mem_max`.
    fn size_buffers(&self, batch_len: usize, messages: usize) -> Result<(), Error> {
        let want = |n: usize| n.min(i32::MAX as usize / 2) as libc::c_int;
        for (name, forced, need) in [
            (
                libc::SO_SNDBUF,
                libc::SO_SNDBUFFORCE,
                batch_len + BUFFER_SLACK,
            ),
            (
                libc::SO_RCVBUF,
                libc::SO_RCVBUFFORCE,
                messages * ACK_BUDGET + BUFFER_SLACK,
            ),
        ] {
            // The kernel doubles what it is given; what getsockopt reports is the doubled value.
            if get_int(&self.fd, libc::SOL_SOCKET, name).unwrap_or(0) >= 2 * need {
                continue;
            }
            if let Err(e) = set_int(&self.fd, libc::SOL_SOCKET, forced, want(need)) {
                tracing::debug!(error = %e, need, "forcing a netlink socket buffer failed; trying within the sysctl limit");
                set_int(&self.fd, libc::SOL_SOCKET, name, want(need)).map_err(|source| {
                    Error::NftNetlinkIo {
                        what: format!("size a netlink socket buffer to {need} bytes"),
                        source,
                    }
                })?;
            }
        }
        Ok(())
    }

    fn send(&self, bytes: &[u8]) -> Result<(), Error> {
        let addr = kernel_address();
        loop {
            // SAFETY: a valid fd, a live buffer with its length, a sockaddr_nl of the right size.
            let rc = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    bytes.as_ptr().cast(),
                    bytes.len(),
                    0,
                    (&addr as *const libc::sockaddr_nl).cast(),
                    size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            if rc >= 0 {
                if rc as usize != bytes.len() {
                    return Err(Error::NftNetlinkIo {
                        what: format!("send a batch of {} bytes", bytes.len()),
                        source: io::Error::other(format!("only {rc} bytes were sent")),
                    });
                }
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(Error::NftNetlinkIo {
                    what: format!("send a batch of {} bytes", bytes.len()),
                    source: e,
                });
            }
        }
    }

    /// Reads the messages of the dump with sequence number `seq` until its `NLMSG_DONE`: each
    /// message whole, header included. The kernel fills the queue as it is read, so this waits
    /// (up to [`DUMP_WAIT`] for each datagram, the socket's receive timeout) instead of stopping
    /// at an empty queue.
    fn receive_dump(&self, seq: u32, what: &str) -> Result<Vec<Vec<u8>>, Error> {
        let io_err = |source| Error::NftNetlinkIo {
            what: what.to_owned(),
            source,
        };
        let mut messages = Vec::new();
        let mut buf = vec![0u8; RECV_BUFFER];
        loop {
            // SAFETY: a valid fd and a live buffer with its length.
            let rc =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(io_err(e));
            }
            let got = &buf[..rc as usize];
            let mut at = 0;
            while at + NLMSG_HDRLEN <= got.len() {
                let (Some(len), Some(ty), Some(msg_seq)) =
                    (u32_at(got, at), u16_at(got, at + 4), u32_at(got, at + 8))
                else {
                    break;
                };
                let len = len as usize;
                if len < NLMSG_HDRLEN || at + len > got.len() {
                    break;
                }
                let msg = &got[at..at + len];
                at += align4(len);
                if msg_seq != seq {
                    continue; // left over from an earlier exchange
                }
                match ty {
                    NLMSG_DONE => return Ok(messages),
                    NLMSG_ERROR => {
                        let errno = -(u32_at(msg, NLMSG_HDRLEN).unwrap_or(0) as i32);
                        if errno != 0 {
                            return Err(io_err(io::Error::from_raw_os_error(errno)));
                        }
                    }
                    _ => messages.push(msg.to_vec()),
                }
            }
        }
    }

    /// Reads every queued reply. The kernel answered inside `sendto()`, so an empty queue means
    /// there is nothing more to come.
    fn receive_all(&self) -> Result<Received, Error> {
        let mut received = Received::default();
        let mut buf = vec![0u8; RECV_BUFFER];
        loop {
            // SAFETY: sockaddr_nl is plain data, filled by recvfrom.
            let mut from: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
            let mut from_len = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            // SAFETY: a valid fd, a live buffer with its length, a sockaddr_nl and its size.
            let rc = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                    (&mut from as *mut libc::sockaddr_nl).cast(),
                    &mut from_len,
                )
            };
            if rc < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) => return Ok(received),
                    Some(libc::ENOBUFS) => {
                        received.overrun = true;
                        continue;
                    }
                    _ => {
                        return Err(Error::NftNetlinkIo {
                            what: "read the kernel's acks".to_owned(),
                            source: e,
                        });
                    }
                }
            }
            if from.nl_pid != 0 {
                continue; // not from the kernel
            }
            // MSG_TRUNC reports the datagram's full length; only what fits was copied.
            let got = (rc as usize).min(buf.len());
            if rc as usize > buf.len() {
                tracing::debug!(
                    len = rc,
                    "a netlink reply was longer than the receive buffer"
                );
            }
            parse_replies(&buf[..got], &mut received.replies);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(add: bool, set: &str, elem: Elem) -> ElemOp {
        ElemOp {
            add,
            set: set.to_owned(),
            elem,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    /// A NEWOBJ message as the kernel sends it for a counter (attributes as in
    /// `nft --debug=netlink list counters`: table, name, type, nested packets/bytes).
    fn counter_message(name: &str, kind: u32, packets: u64, bytes: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let start = begin_message(
            &mut out,
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWOBJ,
            0,
            7,
            NFPROTO_INET,
            0,
        );
        put_str(&mut out, NFTA_OBJ_TABLE, "weft-policy");
        put_str(&mut out, NFTA_OBJ_NAME, name);
        put_attr(&mut out, NFTA_OBJ_TYPE, &kind.to_be_bytes());
        let nest = begin_nest(&mut out, NFTA_OBJ_DATA);
        put_attr(&mut out, NFTA_COUNTER_BYTES, &bytes.to_be_bytes());
        put_attr(&mut out, NFTA_COUNTER_PACKETS, &packets.to_be_bytes());
        end_nest(&mut out, nest);
        end_message(&mut out, start);
        out
    }

    #[test]
    fn counter_objects_are_parsed_and_other_objects_skipped() {
        assert_eq!(
            parse_counter(&counter_message(
                "dropped-ingress",
                NFT_OBJECT_COUNTER,
                3,
                252
            )),
            Some(("dropped-ingress".to_owned(), 3, 252))
        );
        // A quota (type 2) is not a counter; a message cut short is nothing.
        assert_eq!(parse_counter(&counter_message("q", 2, 1, 1)), None);
        let whole = counter_message("c", NFT_OBJECT_COUNTER, u64::MAX, 1);
        assert_eq!(parse_counter(&whole), Some(("c".to_owned(), u64::MAX, 1)));
        assert_eq!(parse_counter(&whole[..NLMSG_HDRLEN + 2]), None);
    }

    #[test]
    fn keys_are_encoded_as_nft_encodes_them() {
        // Each expected key is what `nft --debug=netlink add element …` printed for the same
        // element (nft prints 32-bit words in host order; these are the bytes).
        let cases: &[(Elem, &str)] = &[
            (Elem::Addr(ip("10.0.0.7")), "0a000007"),
            (Elem::Pair(ip("10.0.0.5")), "0a000005 0a000005"),
            (
                Elem::AddrPort(ip("10.0.0.5"), Proto::Tcp, 8080),
                "0a000005 06000000 1f900000",
            ),
            (
                Elem::AddrPort(ip("fd00::1"), Proto::Udp, 53),
                "fd000000 00000000 00000000 00000001 11000000 00350000",
            ),
            (
                Elem::AddrPort(ip("10.0.0.1"), Proto::Sctp, 65535),
                "0a000001 84000000 ffff0000",
            ),
            (Elem::Goto(ip("10.0.0.5"), "c1".into()), "0a000005"),
        ];
        for (elem, hex) in cases {
            let want: Vec<u8> = hex
                .replace(' ', "")
                .as_bytes()
                .chunks(2)
                .map(|c| {
                    u8::from_str_radix(std::str::from_utf8(c).expect("ascii"), 16).expect("hex")
                })
                .collect();
            assert_eq!(build_key(elem), want, "{elem:?}");
        }
    }

    #[test]
    fn a_goto_addition_carries_the_verdict_and_a_deletion_only_the_key() {
        let add = build_element(&op(
            true,
            "to-pod-v4",
            Elem::Goto(ip("10.0.0.5"), "in-x".into()),
        ));
        #[rustfmt::skip]
        let want: Vec<u8> = [
            &[44u8, 0, 1, 0x80][..],                  // LIST_ELEM, nested, 44 bytes
            &[12, 0, 1, 0x80],                        //   KEY
            &[8, 0, 1, 0], &[10, 0, 0, 5],            //     DATA_VALUE 10.0.0.5
            &[28, 0, 2, 0x80],                        //   DATA
            &[24, 0, 2, 0x80],                        //     VERDICT
            &[8, 0, 1, 0], &[0xff, 0xff, 0xff, 0xfc], //       CODE = NFT_GOTO, big endian
            &[9, 0, 2, 0], b"in-x", &[0, 0, 0, 0],    //       CHAIN "in-x\0", padded
        ]
        .concat();
        assert_eq!(add, want);
        let del = build_element(&op(
            false,
            "to-pod-v4",
            Elem::Goto(ip("10.0.0.5"), "in-x".into()),
        ));
        #[rustfmt::skip]
        let want: Vec<u8> = [
            &[16u8, 0, 1, 0x80][..],
            &[12, 0, 1, 0x80],
            &[8, 0, 1, 0], &[10, 0, 0, 5],
        ]
        .concat();
        assert_eq!(del, want);
    }

    #[test]
    fn runs_of_one_set_and_verb_share_a_message_in_order() {
        let ops = vec![
            op(false, "a-v4", Elem::Addr(ip("10.0.0.1"))),
            op(false, "a-v4", Elem::Addr(ip("10.0.0.2"))),
            op(true, "a-v4", Elem::Addr(ip("10.0.0.1"))),
            op(true, "b-v4", Elem::Addr(ip("10.0.0.3"))),
            op(true, "a-v4", Elem::Addr(ip("10.0.0.4"))),
        ];
        let batch = build_batch(Family::Inet, "weft-policy", &ops, 100).expect("batch");
        let firsts: Vec<(u32, usize, usize)> = batch
            .messages
            .iter()
            .map(|m| (m.seq, m.first_op, m.elem_offsets.len()))
            .collect();
        assert_eq!(
            firsts,
            vec![(101, 0, 2), (102, 2, 1), (103, 3, 1), (104, 4, 1)]
        );
        assert_eq!(batch.begin_seq, 100);
        // Walk the messages: begin, 4 element messages, end; lengths add up to the whole.
        let mut at = 0;
        let mut types = Vec::new();
        while at < batch.bytes.len() {
            let len = u32_at(&batch.bytes, at).expect("len") as usize;
            types.push((
                u16_at(&batch.bytes, at + 4).expect("type"),
                u16_at(&batch.bytes, at + 6).expect("flags"),
                u32_at(&batch.bytes, at + 8).expect("seq"),
            ));
            at += len;
        }
        assert_eq!(at, batch.bytes.len());
        let (new, del) = (0x0a00 | NFT_MSG_NEWSETELEM, 0x0a00 | NFT_MSG_DELSETELEM);
        assert_eq!(
            types,
            vec![
                (NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 100),
                (del, NLM_F_REQUEST | NLM_F_ACK, 101),
                (new, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK, 102),
                (new, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK, 103),
                (new, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK, 104),
                (NFNL_MSG_BATCH_END, NLM_F_REQUEST, 105),
            ]
        );
        // The batch begin addresses nf_tables; element messages are of family inet.
        assert_eq!(&batch.bytes[16..20], &[0, 0, 0, 10]);
        assert_eq!(batch.bytes[20 + 16], NFPROTO_INET);
    }

    #[test]
    fn a_long_run_is_split_below_the_attribute_limit() {
        let ops: Vec<ElemOp> = (0..10_000u32)
            .map(|i| {
                op(
                    true,
                    "to-pod-v6",
                    Elem::Goto(
                        IpAddr::V6((0xfd00_u128 << 112 | i as u128).into()),
                        "in-0123456789abcdef".into(),
                    ),
                )
            })
            .collect();
        let batch = build_batch(Family::Inet, "weft-policy", &ops, 1).expect("batch");
        assert!(batch.messages.len() > 1);
        let total: usize = batch.messages.iter().map(|m| m.elem_offsets.len()).sum();
        assert_eq!(total, ops.len());
        let mut next = 0;
        for m in &batch.messages {
            assert_eq!(m.first_op, next, "messages cover the ops in order");
            next += m.elem_offsets.len();
        }
        let mut at = 0;
        while at < batch.bytes.len() {
            let len = u32_at(&batch.bytes, at).expect("len") as usize;
            assert!(len <= ELEMENTS_BYTES_MAX + 1024, "message of {len} bytes");
            at += len;
        }
    }

    #[test]
    fn bad_names_are_refused_before_anything_is_sent() {
        let long = "x".repeat(256);
        for ops in [
            vec![op(true, &long, Elem::Addr(ip("10.0.0.1")))],
            vec![op(true, "a", Elem::Goto(ip("10.0.0.1"), long.clone()))],
            vec![op(true, "", Elem::Addr(ip("10.0.0.1")))],
        ] {
            let err = build_batch(Family::Inet, "t", &ops, 1).expect_err("refused");
            assert!(err.to_string().contains("name"), "{err}");
        }
    }

    /// An error reply as the kernel sends it with NETLINK_CAP_ACK and NETLINK_EXT_ACK.
    fn error_reply(seq: u32, errno: i32, offset: Option<u32>) -> Vec<u8> {
        let mut tlvs = Vec::new();
        if let Some(o) = offset {
            put_attr(&mut tlvs, NLMSGERR_ATTR_OFFS, &o.to_ne_bytes());
        }
        let flags = NLM_F_CAPPED | if offset.is_some() { NLM_F_ACK_TLVS } else { 0 };
        let len = (16 + 4 + 16 + tlvs.len()) as u32;
        let mut out = Vec::new();
        out.extend_from_slice(&len.to_ne_bytes());
        out.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        out.extend_from_slice(&flags.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&7u32.to_ne_bytes());
        out.extend_from_slice(&(-errno).to_ne_bytes());
        out.extend_from_slice(&[0u8; 16]);
        out.extend_from_slice(&tlvs);
        out
    }

    fn received(datagrams: &[Vec<u8>]) -> Received {
        let mut r = Received::default();
        for d in datagrams {
            parse_replies(d, &mut r.replies);
        }
        r
    }

    #[test]
    fn replies_are_judged_and_errors_traced_to_the_op() {
        let ops = vec![
            op(true, "a-v4", Elem::Addr(ip("10.0.0.1"))),
            op(true, "a-v4", Elem::Addr(ip("10.0.0.2"))),
            op(
                false,
                "to-pod-v4",
                Elem::Goto(ip("10.0.0.9"), "in-x".into()),
            ),
            op(true, "p-v4", Elem::AddrPort(ip("10.0.0.5"), Proto::Tcp, 80)),
        ];
        let batch = build_batch(Family::Inet, "weft-policy", &ops, 10).expect("batch");
        let m = &batch.messages;
        let ok = |seq| error_reply(seq, 0, None);
        let judge =
            |r: &[Vec<u8>]| judge_replies(Family::Inet, "weft-policy", &ops, &batch, &received(r));

        judge(&[ok(11), ok(12), ok(13)]).expect("all acked");

        let cases: Vec<(Vec<Vec<u8>>, &str)> = vec![
            (
                vec![
                    ok(11),
                    ok(12),
                    error_reply(13, libc::ENOENT, Some(m[2].set_offset)),
                ],
                "adding 10.0.0.5 . tcp . 80 to set p-v4 of inet weft-policy: No such file or directory (the set does not exist); the batch of 4 element changes was not applied",
            ),
            (
                vec![
                    ok(11),
                    error_reply(12, libc::ENOENT, Some(m[1].elem_offsets[0] + 8)),
                    ok(13),
                ],
                "deleting 10.0.0.9 from map to-pod-v4 of inet weft-policy: No such file or directory (the element is not in the map)",
            ),
            (
                vec![
                    error_reply(11, libc::EINVAL, Some(m[0].elem_offsets[1])),
                    ok(12),
                    ok(13),
                ],
                "adding 10.0.0.2 to set a-v4 of inet weft-policy: Invalid argument (the element does not fit the set's type)",
            ),
            (
                vec![
                    error_reply(11, libc::ENOENT, Some(m[0].table_offset)),
                    error_reply(12, libc::ENOENT, Some(m[1].table_offset)),
                    ok(13),
                ],
                "adding 10.0.0.1 to set a-v4 of inet weft-policy: No such file or directory (the table does not exist); 1 more operations were refused",
            ),
            (
                vec![ok(11), ok(12), error_reply(13, libc::EPERM, None)],
                "adding 10.0.0.5 . tcp . 80 to set p-v4 of inet weft-policy: Operation not permitted",
            ),
            (
                vec![error_reply(11, libc::EPERM, None)],
                "adding 10.0.0.1 to set a-v4 of inet weft-policy (or one of the 1 other elements of the same message): Operation not permitted",
            ),
            (
                vec![error_reply(10, libc::ENOMEM, None)],
                "committing 4 element changes to inet weft-policy: Cannot allocate memory",
            ),
        ];
        for (replies, want) in cases {
            let err = judge(&replies).expect_err(want).to_string();
            assert!(err.starts_with(want), "got {err:?}\nwant {want:?}");
        }

        let missing = judge(&[ok(11), ok(13)])
            .expect_err("an ack is missing")
            .to_string();
        assert!(
            missing.contains("2 of 3 messages acknowledged"),
            "{missing}"
        );
        let mut lost = received(&[ok(11)]);
        lost.overrun = true;
        let lost = judge_replies(Family::Inet, "weft-policy", &ops, &batch, &lost)
            .expect_err("overrun")
            .to_string();
        assert!(
            lost.contains("ENOBUFS") && lost.contains("unknown"),
            "{lost}"
        );
    }

    #[test]
    fn a_truncated_error_still_yields_its_errno() {
        let full = error_reply(5, libc::ENOENT, Some(40));
        let mut r = Vec::new();
        parse_replies(&full[..24], &mut r);
        assert_eq!(
            r,
            vec![Reply {
                seq: 5,
                errno: libc::ENOENT,
                offset: None,
                message: None
            }]
        );
        r.clear();
        parse_replies(&full, &mut r);
        assert_eq!(r[0].offset, Some(40));
    }
}
