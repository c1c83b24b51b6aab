//! Backup hooks: commands run in a workload's container (through `pods/exec`, with the user's own
//! RBAC) just before its volume is read and just after, for data that is consistent on disk
//! (`fsfreeze`, `sqlite3 db '.backup …'`, a database's checkpoint).
//!
//! A Pod asks for them with annotations (the `post.` ones are the same, run after the read):
//!
//! | annotation | value | default |
//! |---|---|---|
//! | `pre.hook.backup.kubectl-backup.dev/command` | a JSON array, e.g. `["sh","-c","sync"]` | none: no hook |
//! | `pre.hook.backup.kubectl-backup.dev/container` | the container to run it in | the first |
//! | `pre.hook.backup.kubectl-backup.dev/timeout` | a duration, e.g. `30s` | `30s` |
//! | `pre.hook.backup.kubectl-backup.dev/on-error` | `Fail` or `Continue` | `Fail` |
//!
//! A failed hook with `Fail` fails the backup (nothing is committed); with `Continue` the backup
//! goes on and is PartiallyFailed, saying which hook failed and why. Every hook's exit code and
//! output are recorded with the volume's data (`describe`).

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use crate::error::kube_message;
use crate::input::parse_duration;

/// Output kept per hook (the end of it, where errors are).
const OUTPUT_KEPT: usize = 2048;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// When a hook runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum When {
    Pre,
    Post,
}

impl When {
    fn prefix(self) -> &'static str {
        match self {
            When::Pre => "pre.hook.backup.kubectl-backup.dev",
            When::Post => "post.hook.backup.kubectl-backup.dev",
        }
    }
}

/// What to do when a hook fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnError {
    Fail,
    Continue,
}

/// A hook a Pod asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hook {
    pub when: When,
    pub pod: String,
    pub container: String,
    pub command: Vec<String>,
    pub timeout: Duration,
    pub on_error: OnError,
}

/// What a hook did: recorded with the volume's data.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookRun {
    pub when: Option<When>,
    pub pod: String,
    pub container: String,
    pub command: Vec<String>,
    /// The command's exit code; none when it could not be run or timed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The end of its output (stdout, then stderr).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output: String,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The `when` hook of `pod`, from its annotations: `Ok(None)` when it asks for none, `Err` naming
/// the annotation when one is not valid.
pub fn from_pod(pod: &Pod, when: When) -> Result<Option<Hook>, String> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let get = |key: &str| annotations.get(&format!("{}/{key}", when.prefix())).map(|v| v.trim().to_string());
    let Some(command) = get("command") else { return Ok(None) };
    let bad = |key: &str, why: String| format!("annotation {}/{key} of Pod {name:?}: {why}", when.prefix());
    let command: Vec<String> = serde_json::from_str(&command)
        .map_err(|e| bad("command", format!("not a JSON array of strings ({e}), e.g. [\"sh\",\"-c\",\"sync\"]")))?;
    if command.is_empty() {
        return Err(bad("command", "an empty command".into()));
    }
    let containers: Vec<String> = pod.spec.iter().flat_map(|s| s.containers.iter().map(|c| c.name.clone())).collect();
    let container = match get("container") {
        Some(c) if containers.contains(&c) => c,
        Some(c) => return Err(bad("container", format!("the Pod has no container {c:?} (it has {containers:?})"))),
        None => containers.first().cloned().ok_or_else(|| bad("container", "the Pod has no containers".into()))?,
    };
    let timeout = match get("timeout") {
        Some(t) => parse_duration("hook timeout", &t).map_err(|e| bad("timeout", e.to_string()))?.unsigned_abs(),
        None => DEFAULT_TIMEOUT,
    };
    let on_error = match get("on-error").as_deref() {
        None | Some("Fail") => OnError::Fail,
        Some("Continue") => OnError::Continue,
        Some(other) => return Err(bad("on-error", format!("{other:?} is neither Fail nor Continue"))),
    };
    Ok(Some(Hook { when, pod: name, container, command, timeout, on_error }))
}

/// Runs `hook` through `pods/exec` and reports what it did; `error` is set when it could not run,
/// timed out or exited with a code other than 0.
pub async fn run(pods: &Api<Pod>, hook: &Hook) -> HookRun {
    let mut out = HookRun {
        when: Some(hook.when),
        pod: hook.pod.clone(),
        container: hook.container.clone(),
        command: hook.command.clone(),
        ..Default::default()
    };
    match tokio::time::timeout(hook.timeout, exec(pods, hook)).await {
        Ok(Ok((code, output))) => {
            out.exit_code = Some(code);
            out.output = output;
            if code != 0 {
                out.error = Some(format!("exited with code {code}"));
            }
        }
        Ok(Err(e)) => out.error = Some(e),
        Err(_) => out.error = Some(format!("did not finish within {:?}", hook.timeout)),
    }
    out
}

async fn exec(pods: &Api<Pod>, hook: &Hook) -> Result<(i32, String), String> {
    let ap = AttachParams::default().container(hook.container.clone()).stdin(false).stdout(true).stderr(true);
    let mut process = pods
        .exec(&hook.pod, hook.command.clone(), &ap)
        .await
        .map_err(|e| format!("cannot exec in Pod {:?}: {}", hook.pod, kube_message(&e)))?;
    let (mut stdout, mut stderr) = (process.stdout(), process.stderr());
    let status = process.take_status();
    let read = |r: Option<tokio::io::ReadHalf<tokio::io::SimplexStream>>| async move {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut buf).await;
        }
        buf
    };
    let (out, err) = tokio::join!(read(stdout.take()), read(stderr.take()));
    let status = match status {
        Some(s) => s.await,
        None => None,
    };
    let _ = process.join().await;
    let mut text = String::from_utf8_lossy(&out).into_owned();
    text.push_str(&String::from_utf8_lossy(&err));
    Ok((exit_code(status.as_ref()), tail(&text)))
}

/// The exit code in the Status the API server sends at the end of an exec: `Success` is 0, a
/// failure carries it as the `ExitCode` cause (or none: -1).
fn exit_code(status: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>) -> i32 {
    let Some(s) = status else { return -1 };
    if s.status.as_deref() == Some("Success") {
        return 0;
    }
    s.details
        .as_ref()
        .and_then(|d| d.causes.as_ref())
        .and_then(|c| c.iter().find(|c| c.reason.as_deref() == Some("ExitCode")))
        .and_then(|c| c.message.as_ref())
        .and_then(|m| m.parse().ok())
        .unwrap_or(-1)
}

fn tail(text: &str) -> String {
    let text = text.trim_end();
    if text.len() <= OUTPUT_KEPT {
        return text.to_string();
    }
    let mut start = text.len() - OUTPUT_KEPT;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(annotations: &[(&str, &str)]) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db", "annotations": annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<std::collections::BTreeMap<_, _>>()},
            "spec": {"containers": [{"name": "main"}, {"name": "sidecar"}]},
        }))
        .unwrap()
    }

    #[test]
    fn hooks_are_read_from_annotations_with_defaults() {
        let p = pod(&[("pre.hook.backup.kubectl-backup.dev/command", r#"["sh","-c","sync"]"#)]);
        let h = from_pod(&p, When::Pre).unwrap().unwrap();
        assert_eq!(h.command, ["sh", "-c", "sync"]);
        assert_eq!((h.container.as_str(), h.timeout, h.on_error), ("main", DEFAULT_TIMEOUT, OnError::Fail));
        assert_eq!(from_pod(&p, When::Post).unwrap(), None);
        let p = pod(&[
            ("post.hook.backup.kubectl-backup.dev/command", r#"["true"]"#),
            ("post.hook.backup.kubectl-backup.dev/container", "sidecar"),
            ("post.hook.backup.kubectl-backup.dev/timeout", "2m"),
            ("post.hook.backup.kubectl-backup.dev/on-error", "Continue"),
        ]);
        let h = from_pod(&p, When::Post).unwrap().unwrap();
        assert_eq!(
            (h.container.as_str(), h.timeout, h.on_error),
            ("sidecar", Duration::from_secs(120), OnError::Continue)
        );
    }

    #[test]
    fn invalid_annotations_are_named() {
        let cases = [
            (("command", "sync"), "pre.hook.backup.kubectl-backup.dev/command of Pod \"db\": not a JSON array"),
            (("command", "[]"), "an empty command"),
            (("container", "nope"), "has no container \"nope\""),
            (("on-error", "Ignore"), "\"Ignore\" is neither Fail nor Continue"),
            (("timeout", "soon"), "pre.hook.backup.kubectl-backup.dev/timeout"),
        ];
        for ((key, value), want) in cases {
            let mut a = vec![("pre.hook.backup.kubectl-backup.dev/command", r#"["true"]"#)];
            let k = format!("pre.hook.backup.kubectl-backup.dev/{key}");
            a.retain(|(x, _)| *x != k);
            a.push((k.as_str(), value));
            let e = from_pod(&pod(&a), When::Pre).unwrap_err();
            assert!(e.contains(want), "{key}={value}: {e}");
        }
    }

    #[test]
    fn exit_codes_come_from_the_status() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
        let s = |v: serde_json::Value| serde_json::from_value::<Status>(v).unwrap();
        assert_eq!(exit_code(Some(&s(serde_json::json!({"status": "Success"})))), 0);
        let failed = s(serde_json::json!({"status": "Failure", "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}}));
        assert_eq!(exit_code(Some(&failed)), 3);
        assert_eq!(exit_code(None), -1);
        assert_eq!(tail(&"x".repeat(5000)).chars().count(), OUTPUT_KEPT + 1);
    }
}
