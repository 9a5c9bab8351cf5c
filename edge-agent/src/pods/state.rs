//! What the agent remembers of a pod across its own restarts (the state file), and the
//! pod phase and restart rules kubelet applies.

use super::*;

/// `10s`, `2m40s`, `300ms`: how kubelet prints a back-off.
pub(super) fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        format!("{ms}ms")
    } else if ms >= 60_000 {
        format!("{}m{}s", ms / 60_000, (ms % 60_000) / 1000)
    } else {
        format!("{}s", ms / 1000)
    }
}

pub(super) fn pods_dir(root: &Path) -> PathBuf {
    root.join("pods")
}

/// Every pod this agent keeps state for: uid and state.
pub fn known_pods(root: &Path) -> Vec<(String, PodState)> {
    std::fs::read_dir(pods_dir(root))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let uid = e.file_name().to_str()?.to_string();
            let st = load_state(root, &uid)?;
            Some((uid, st))
        })
        .collect()
}

pub(super) fn load_state(root: &Path, uid: &str) -> Option<PodState> {
    serde_json::from_slice(&std::fs::read(pods_dir(root).join(uid).join("state.json")).ok()?).ok()
}

pub(super) fn save_state(root: &Path, uid: &str, s: &PodState) {
    let dir = pods_dir(root).join(uid);
    if let Err(e) = std::fs::create_dir_all(&dir)
        .and_then(|_| crate::shim::write_json_atomic(&dir.join("state.json"), s))
    {
        tracing::warn!(pod = %uid, error = %e, "saving pod state failed");
    }
}

/// The pod phase from its container statuses (kubelet's rules).
pub fn phase(
    restart_policy: &str,
    init_pending: bool,
    init_failed: bool,
    statuses: &[Value],
) -> &'static str {
    if init_failed {
        return "Failed";
    }
    if init_pending {
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in statuses {
        if s.pointer("/state/running").is_some() {
            running += 1;
        } else if let Some(t) = s.pointer("/state/terminated") {
            stopped += 1;
            if t["exitCode"] == 0 {
                succeeded += 1;
            }
        } else if s.pointer("/lastState/terminated").is_some() {
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        if restart_policy == "Always" {
            "Running"
        } else if stopped == succeeded {
            "Succeeded"
        } else if restart_policy == "Never" {
            "Failed"
        } else {
            "Running"
        }
    } else {
        "Pending"
    }
}

/// Whether a container that exited with `code` restarts under `policy`.
pub fn restarts(policy: &str, code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
}
