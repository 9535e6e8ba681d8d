//! The pod status the nodelet reports, as a pure function of what it observed.
//!
//! Kept apart from the I/O so the mapping (phase, conditions, container states) is tested on its own.

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

/// The state of one container, as a kubelet reports it.
#[derive(Clone, Debug, PartialEq)]
pub enum CState {
    Waiting {
        reason: String,
        message: String,
    },
    Running {
        started_at: Timestamp,
    },
    Terminated {
        exit_code: i32,
        reason: String,
        started_at: Timestamp,
        finished_at: Timestamp,
    },
}

impl CState {
    pub fn waiting(reason: &str, message: impl Into<String>) -> Self {
        CState::Waiting {
            reason: reason.into(),
            message: message.into(),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            CState::Waiting { reason, message } => {
                json!({"waiting": {"reason": reason, "message": message}})
            }
            CState::Running { started_at } => {
                json!({"running": {"startedAt": started_at.to_string()}})
            }
            CState::Terminated {
                exit_code,
                reason,
                started_at,
                finished_at,
            } => json!({"terminated": {
                "exitCode": exit_code, "reason": reason,
                "startedAt": started_at.to_string(), "finishedAt": finished_at.to_string()
            }}),
        }
    }
}

/// One container's reported status.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerRt {
    pub name: String,
    pub image: String,
    pub state: CState,
    pub last: Option<CState>,
    pub restarts: i32,
    pub ready: bool,
}

impl ContainerRt {
    pub fn new(name: &str, image: &str) -> Self {
        Self {
            name: name.into(),
            image: image.into(),
            state: CState::waiting("ContainerCreating", ""),
            last: None,
            restarts: 0,
            ready: false,
        }
    }
}

/// Everything the nodelet knows about a pod it runs.
#[derive(Clone, Debug, PartialEq)]
pub struct PodRt {
    pub host_ip: String,
    pub pod_ips: Vec<String>,
    pub start_time: Timestamp,
    /// Set once the sandbox (netns + CNI, or volumes for host-network pods) is up.
    pub sandbox_ready: bool,
    /// Why the sandbox could not be created, as the runtime said it.
    pub sandbox_error: Option<String>,
    pub containers: Vec<ContainerRt>,
    /// Terminal phase for pods that do not restart.
    pub terminal: Option<&'static str>,
}

impl PodRt {
    pub fn phase(&self) -> &'static str {
        if let Some(t) = self.terminal {
            return t;
        }
        let running = self
            .containers
            .iter()
            .any(|c| matches!(c.state, CState::Running { .. }));
        if self.sandbox_ready && (running || self.containers.iter().all(|c| c.restarts > 0)) {
            "Running"
        } else {
            "Pending"
        }
    }

    pub fn all_ready(&self) -> bool {
        self.sandbox_ready && !self.containers.is_empty() && self.containers.iter().all(|c| c.ready)
    }
}

fn condition(
    t: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<&str>,
    since: &Timestamp,
) -> Value {
    let mut c = json!({"type": t, "status": if ok { "True" } else { "False" },
        "lastTransitionTime": since.to_string(), "lastProbeTime": null});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    if let Some(m) = message {
        c["message"] = json!(m);
    }
    c
}

/// The strategic-merge patch for the pod's status subresource. `since` is when the readiness last
/// changed (conditions' lastTransitionTime).
pub fn render_status(rt: &PodRt, since: &Timestamp) -> Value {
    let ready = rt.all_ready();
    let not_ready: Vec<&str> = rt
        .containers
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    let reason = (!ready).then_some("ContainersNotReady");
    let msg =
        (!ready).then(|| format!("containers with unready status: [{}]", not_ready.join(" ")));
    let mut conditions = vec![
        condition(
            "PodReadyToStartContainers",
            rt.sandbox_ready,
            None,
            rt.sandbox_error.as_deref(),
            since,
        ),
        condition("Initialized", true, None, None, &rt.start_time),
        condition("ContainersReady", ready, reason, msg.as_deref(), since),
        condition("Ready", ready, reason, msg.as_deref(), since),
    ];
    if rt.sandbox_error.is_some() {
        conditions[0]["reason"] = json!("FailedCreatePodSandBox");
    }
    let statuses: Vec<Value> = rt
        .containers
        .iter()
        .map(|c| {
            let mut s = json!({
                "name": c.name, "image": c.image, "imageID": "", "ready": c.ready,
                "restartCount": c.restarts, "started": matches!(c.state, CState::Running { .. }),
                "state": c.state.to_json(),
                "containerID": format!("weft-nodelet://{}", c.name),
            });
            if let Some(l) = &c.last {
                s["lastState"] = l.to_json();
            }
            s
        })
        .collect();
    let mut status = json!({
        "phase": rt.phase(),
        "hostIP": rt.host_ip,
        "hostIPs": [{"ip": rt.host_ip}],
        "startTime": rt.start_time.to_string(),
        "conditions": conditions,
        "containerStatuses": statuses,
    });
    if let Some(first) = rt.pod_ips.first() {
        status["podIP"] = json!(first);
        status["podIPs"] = json!(
            rt.pod_ips
                .iter()
                .map(|ip| json!({"ip": ip}))
                .collect::<Vec<_>>()
        );
    }
    json!({"status": status})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> PodRt {
        PodRt {
            host_ip: "10.99.0.11".into(),
            pod_ips: vec![],
            start_time: Timestamp::UNIX_EPOCH,
            sandbox_ready: false,
            sandbox_error: None,
            containers: vec![ContainerRt::new("app", "nginx")],
            terminal: None,
        }
    }

    #[test]
    fn pending_until_sandbox_and_a_running_container() {
        let mut r = rt();
        assert_eq!(r.phase(), "Pending");
        r.sandbox_ready = true;
        assert_eq!(r.phase(), "Pending");
        r.containers[0].state = CState::Running {
            started_at: Timestamp::UNIX_EPOCH,
        };
        assert_eq!(r.phase(), "Running");
        assert!(!r.all_ready());
        r.containers[0].ready = true;
        assert!(r.all_ready());
    }

    #[test]
    fn sandbox_error_is_reported_with_the_plugin_message() {
        let mut r = rt();
        r.sandbox_error = Some("plugin type=\"bogus\" failed (add): failed to find plugin".into());
        r.containers[0].state =
            CState::waiting("ContainerCreating", "plugin type=\"bogus\" failed");
        let s = render_status(&r, &Timestamp::UNIX_EPOCH);
        assert_eq!(s["status"]["phase"], "Pending");
        assert_eq!(
            s["status"]["conditions"][0]["reason"],
            "FailedCreatePodSandBox"
        );
        assert!(
            s["status"]["conditions"][0]["message"]
                .as_str()
                .unwrap()
                .contains("bogus")
        );
        assert_eq!(
            s["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
            "ContainerCreating"
        );
        assert!(s["status"].get("podIP").is_none());
    }

    #[test]
    fn ips_and_readiness_are_rendered() {
        let mut r = rt();
        r.sandbox_ready = true;
        r.pod_ips = vec!["10.244.1.5".into(), "fd00::5".into()];
        r.containers[0].state = CState::Running {
            started_at: Timestamp::UNIX_EPOCH,
        };
        r.containers[0].ready = true;
        let s = render_status(&r, &Timestamp::UNIX_EPOCH);
        assert_eq!(s["status"]["podIP"], "10.244.1.5");
        assert_eq!(s["status"]["podIPs"][1]["ip"], "fd00::5");
        assert_eq!(s["status"]["conditions"][3]["type"], "Ready");
        assert_eq!(s["status"]["conditions"][3]["status"], "True");
    }
}
