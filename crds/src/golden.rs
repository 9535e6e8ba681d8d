//! Golden-file comparison shared by weft's tests (CRD YAML, rendered manifests, conflists).
//!
//! A golden file is reviewed like code: a test renders what weft would produce and compares it with
//! the committed file. With `WEFT_UPDATE_GOLDEN` set, the file is rewritten instead, so an intended
//! change is one command and one diff to review.

use std::path::Path;

/// Set to rewrite golden files instead of comparing them.
pub const UPDATE_ENV: &str = "WEFT_UPDATE_GOLDEN";

/// Compares `generated` with the committed file at `path` (or rewrites it when [`UPDATE_ENV`] is
/// set). The error names the first differing line and `regenerate`, the command that rewrites it.
pub fn check_golden(path: &Path, generated: &str, regenerate: &str) -> Result<(), String> {
    if std::env::var_os(UPDATE_ENV).is_some() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("failed to create {}: {e}", dir.display()))?;
        }
        return std::fs::write(path, generated)
            .map_err(|e| format!("failed to write {}: {e}", path.display()));
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    if committed == generated {
        return Ok(());
    }
    let hint = committed
        .lines()
        .zip(generated.lines())
        .enumerate()
        .find(|(_, (a, b))| a != b)
        .map(|(i, (a, b))| {
            format!(
                "first difference at line {}:\n  committed: {a}\n  generated: {b}",
                i + 1
            )
        })
        .unwrap_or_else(|| {
            format!(
                "one file is a prefix of the other ({} vs {} lines)",
                committed.lines().count(),
                generated.lines().count()
            )
        });
    Err(format!(
        "{} differs from what weft renders now.\n{hint}\nIf the change is intended, regenerate with\n  {UPDATE_ENV}=1 {regenerate}\nand review the diff.",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_first_difference_and_the_command() {
        if std::env::var_os(UPDATE_ENV).is_some() {
            return; // rewriting, not comparing
        }
        let dir = std::env::temp_dir().join(format!("weft-golden-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let f = dir.join("x.yaml");
        std::fs::write(&f, "a\nb\nc\n").expect("write");
        assert_eq!(check_golden(&f, "a\nb\nc\n", "cargo test"), Ok(()));
        let err = check_golden(&f, "a\nB\nc\n", "cargo test -p x").expect_err("differs");
        assert!(
            err.contains("line 2")
                && err.contains("committed: b")
                && err.contains("cargo test -p x"),
            "{err}"
        );
        let err = check_golden(&dir.join("missing.yaml"), "a\n", "t").expect_err("missing");
        assert!(err.contains("prefix"), "{err}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
