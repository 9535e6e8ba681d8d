//! Shared by the privileged tests and benchmarks that build their topology with `ip` and friends:
//! running a command that must succeed.

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
