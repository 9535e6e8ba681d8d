//! Shared by the privileged tests and benchmarks that build their topology with `ip` and friends:
//! running a command that must succeed, and named network namespaces that go away with the test.

#![allow(dead_code)] // each test crate uses a part

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Runs `args` (program first) and returns its stdout; panics with the command and its output
/// when it cannot start or fails.
pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Named namespaces that are deleted when this value is dropped (a panicking test included).
pub struct Namespaces {
    pub prefix: String,
    pub created: Vec<String>,
}

impl Namespaces {
    /// Namespaces `<tag>-<pid>-<role>` for each role, made now.
    pub fn create(tag: &str, roles: &[&str]) -> Namespaces {
        let mut nss = Namespaces {
            prefix: format!("{tag}-{}", std::process::id()),
            created: Vec::new(),
        };
        for role in roles {
            nss.add(role);
        }
        nss
    }

    pub fn name(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    pub fn add(&mut self, role: &str) {
        let name = self.name(role);
        // A leftover of a killed earlier run with the same pid would make `add` fail.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(&["ip", "netns", "add", &name]);
        self.created.push(name);
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.created {
            if let Err(e) = Command::new("ip").args(["netns", "del", name]).output() {
                eprintln!("failed to delete netns {name}: {e}");
            }
        }
    }
}

/// `ip -n <ns> <args>`.
pub fn ip(ns: &str, args: &str) {
    let mut all = vec!["ip", "-n", ns];
    all.extend(args.split_whitespace());
    run(&all);
}

/// Runs `f` on a thread that has entered namespace `ns` (only that thread moves).
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

/// The UDP port of [`echo_server`].
pub const PORT: u16 = 7399;

/// Answers every datagram to `addr` with the source address it came from, until `stop`. Bound to
/// the address itself so that the reply leaves from it: a reply from another address of the
/// namespace would not match the connection's NAT entry.
pub fn echo_server(ns: &str, addr: &str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let addr: IpAddr = addr.parse().expect("ip");
    let ready = Arc::new(AtomicBool::new(false));
    let r = ready.clone();
    let handle = in_netns(ns, move || {
        let sock = UdpSocket::bind((addr, PORT)).expect("bind echo");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        r.store(true, Ordering::SeqCst);
        let mut buf = [0u8; 64];
        while !stop.load(Ordering::SeqCst) {
            if let Ok((_, peer)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(peer.ip().to_string().as_bytes(), peer);
            }
        }
    });
    while !ready.load(Ordering::SeqCst) {
        assert!(!handle.is_finished(), "the echo server on {addr} died");
        std::thread::sleep(Duration::from_millis(10));
    }
    handle
}

/// The source address the echo server at `target` saw, asked from namespace `ns` with source
/// address `from` (explicit: with several addresses on a link, the kernel's choice is not ours).
pub fn seen_by(ns: &str, from: &str, target: &str) -> String {
    ask(ns, from, target).0
}

/// [`seen_by`], and the address the answer came from.
pub fn ask(ns: &str, from: &str, target: &str) -> (String, IpAddr) {
    let target: IpAddr = target.parse().expect("ip");
    let local = SocketAddr::new(from.parse().expect("ip"), 0);
    in_netns(ns, move || {
        let sock = UdpSocket::bind(local).expect("bind client");
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        let mut buf = [0u8; 64];
        for _ in 0..10 {
            sock.send_to(b"?", (target, PORT)).expect("send");
            if let Ok((n, peer)) = sock.recv_from(&mut buf) {
                return (String::from_utf8_lossy(&buf[..n]).into_owned(), peer.ip());
            }
        }
        panic!("no echo from {target}");
    })
    .join()
    .expect("client")
}
