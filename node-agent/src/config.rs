//! Loading the agent configuration (`/etc/weft/agent.yaml`) and noticing when it changes.
//!
//! The file is a ConfigMap volume: the kubelet swaps a `..data` symlink when the ConfigMap changes,
//! which inotify on the file path misses, so the agent polls the content instead (a few hundred bytes
//! every few seconds). Invariant: a change is reported once per distinct content, and a file that
//! does not parse is reported as an error without replacing the last good configuration.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;
use weft_crds::AgentConfig;

use crate::Error;

/// Reads and parses the configuration file.
pub fn load_config(path: &Path) -> Result<AgentConfig, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReadConfig {
        path: path.to_owned(),
        source,
    })?;
    parse_config(path, &text)
}

/// Parses and validates a configuration: a file that breaks the API's rules (e.g. two IPv4 pod
/// CIDRs, an MTU of 100) is refused as a whole rather than half-applied.
fn parse_config(path: &Path, text: &str) -> Result<AgentConfig, Error> {
    let config = AgentConfig::parse(text).map_err(|source| Error::ParseConfig {
        path: path.to_owned(),
        source,
    })?;
    let violations = config.validate();
    if !violations.is_empty() {
        return Err(Error::InvalidConfig {
            path: path.to_owned(),
            violations: violations
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        });
    }
    Ok(config)
}

/// Polls `path` every `interval` and sends each new content, parsed, on the returned channel. The
/// content the agent started with is `initial`, so an unchanged file sends nothing.
pub fn sync_config_watch(
    path: PathBuf,
    initial: &AgentConfig,
    interval: Duration,
) -> mpsc::Receiver<Result<AgentConfig, Error>> {
    let (tx, rx) = mpsc::channel(4);
    let mut last = std::fs::read_to_string(&path).ok();
    let mut last_good = initial.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let text = match tokio::fs::read_to_string(&path).await {
                Ok(t) => t,
                Err(source) => {
                    // Missing for a moment while the kubelet swaps the symlink: report only a
                    // change from what was there.
                    if last.take().is_some() {
                        let e = Error::ReadConfig {
                            path: path.clone(),
                            source,
                        };
                        if tx.send(Err(e)).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
            };
            if last.as_deref() == Some(text.as_str()) {
                continue;
            }
            last = Some(text.clone());
            let parsed = parse_config(&path, &text);
            if let Ok(cfg) = &parsed {
                if *cfg == last_good {
                    continue;
                }
                last_good = cfg.clone();
            }
            if tx.send(parsed).await.is_err() {
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "apiVersion: weft.dev/v1alpha1\nkind: AgentConfig\nfabric: f\npodNetwork: {cidrs: [10.244.0.0/16]}\noverlay: {}\nmasquerade: {}\npolicy: {}\ncni: {}\ncompatibility: {}\nlogLevel: info\nmetricsPort: 9641\nhealthPort: 9642\n";

    #[tokio::test]
    async fn reports_changes_once_and_bad_files_as_errors() {
        let dir =
            std::env::temp_dir().join(format!("weft-agent-test-config-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("agent.yaml");
        std::fs::write(&path, YAML).expect("write");
        let initial = load_config(&path).expect("load");
        let mut rx = sync_config_watch(path.clone(), &initial, Duration::from_millis(20));
        std::fs::write(&path, YAML.replace("logLevel: info", "logLevel: debug")).expect("write");
        let changed = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("in time")
            .expect("open")
            .expect("parses");
        assert_eq!(changed.log_level.as_str(), "debug");
        std::fs::write(&path, "kind: Nope\n").expect("write");
        let bad = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("in time")
            .expect("open");
        assert!(bad.is_err());
        std::fs::write(&path, YAML.replace("overlay: {}", "overlay: {mtu: 100}")).expect("write");
        let invalid = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("in time")
            .expect("open")
            .expect_err("mtu 100 breaks the API's rules");
        assert!(invalid.to_string().contains("mtu"), "{invalid}");
        let err = load_config(&dir.join("absent.yaml")).expect_err("absent");
        assert!(err.to_string().contains("absent.yaml"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
