//! Shared by the privileged tests and benchmarks that build their topology with `ip` and friends:
//! running a command that must succeed, and named network namespaces that go away with the test.

#![allow(dead_code)] // each test crate uses a part

use std::process::Command;

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
