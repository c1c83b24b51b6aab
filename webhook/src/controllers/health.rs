//! Location health: every `--location-check-interval`, each BackupLocation of the install namespace
//! is opened and checked ([`locations::check`]: listed, and written to and cleaned up unless it is
//! ReadOnly). The result goes to its status (`phase` Available/Unavailable, `message`,
//! `lastValidationTime` and a `Ready` condition); a change of phase is also an Event.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use kubectl_backup_core::crd::BackupLocation;
use kubectl_backup_core::error::redact;
use kubectl_backup_core::locations;
use serde_json::json;

use super::Context;

pub const AVAILABLE: &str = "Available";
pub const UNAVAILABLE: &str = "Unavailable";

pub async fn run(ctx: Arc<Context>, every: Duration) {
    loop {
        check_all(&ctx).await;
        tokio::time::sleep(every).await;
    }
}

async fn check_all(ctx: &Context) {
    let api: Api<BackupLocation> = Api::namespaced(ctx.cluster.client.clone(), &ctx.namespace);
    let list = match api.list(&ListParams::default()).await {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!(error = %e, "no BackupLocations to check");
            return;
        }
    };
    for bl in list.items {
        let outcome = match locations::open(&ctx.cluster.client, &ctx.namespace, &bl, &Default::default()).await {
            Ok(r) => locations::check(&r.store, r.access).await,
            Err(e) => Err(e),
        };
        record(ctx, &api, &bl, outcome.map_err(|e| redact(&e.to_string()))).await;
    }
}

/// Writes the check's outcome to the location's status; an Event when the phase changes.
async fn record(ctx: &Context, api: &Api<BackupLocation>, bl: &BackupLocation, outcome: Result<(), String>) {
    let name = bl.name_any();
    let now = Timestamp::now();
    let (phase, reason, message) = match &outcome {
        Ok(()) => (AVAILABLE, "Checked", "listed and, unless ReadOnly, written to".to_string()),
        Err(why) => (UNAVAILABLE, "CheckFailed", why.clone()),
    };
    let before = bl.status.as_ref().and_then(|s| s.phase.clone());
    let ready = bl.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    let changed = before.as_deref() != Some(phase);
    let condition = Condition {
        type_: "Ready".into(),
        status: if outcome.is_ok() { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.clone(),
        // The time the condition last changed, as Kubernetes conditions mean it.
        last_transition_time: match ready {
            Some(c) if !changed => c.last_transition_time.clone(),
            _ => Time(now),
        },
        observed_generation: bl.metadata.generation,
    };
    let status = json!({"status": {
        "phase": phase, "message": message, "lastValidationTime": now.to_string(), "conditions": [condition],
    }});
    if let Err(e) = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await {
        tracing::warn!(location = %name, error = %e, "could not record the location's health");
    }
    if changed {
        let (kind, event) = match &outcome {
            Ok(()) => (EventType::Normal, "LocationAvailable"),
            Err(_) => (EventType::Warning, "LocationUnavailable"),
        };
        tracing::info!(location = %name, phase, %message, "location health changed");
        ctx.event(&bl.object_ref(&()), kind, event, format!("BackupLocation {name} is {phase}: {message}")).await;
    }
}
