//! The webhook's mark on a new workspace: who created it (as the API server authenticated them),
//! when, and which annotations they tried to set themselves, signed with HMAC-SHA256 under a key
//! only the controller holds (a Secret in its namespace, created on first start).
//!
//! The restore worker acts only on a valid mark, and restores as the person it names: a user who
//! writes `restore-from` or a copied mark on their own namespace gains nothing. A mark is bound to
//! the workspace's kind, namespace and name, and to its creation time (the API server stamps
//! `creationTimestamp` right after admission), so it cannot be replayed on another object or on a
//! later object of the same name.

use std::collections::BTreeMap;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use serde::{Deserialize, Serialize};

/// The annotation carrying the signed mark.
pub const MARK_ANNOTATION: &str = "kubectl-backup.dev/admission";
/// The Secret (in the webhook's namespace) holding the signing key.
pub const KEY_SECRET: &str = kubectl_backup_core::install::SIGNING_KEY_SECRET;
const KEY_FIELD: &str = "hmac-sha256";
/// How far a workspace's `creationTimestamp` may be from the mark's time: it is stamped right
/// after admission, in whole seconds.
const CREATED_BEFORE: SignedDuration = SignedDuration::from_secs(2);
const CREATED_AFTER: SignedDuration = SignedDuration::from_secs(60);

/// Who created a workspace, as the API server told the webhook (AdmissionReview `userInfo`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requester {
    pub user: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
}

/// What the webhook decided and signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// `namespaces`, or `<plural>.<group>` of a workspace custom resource.
    pub kind: String,
    /// The namespace of a namespaced workspace custom resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The object's name: the workspace (namespace) to restore.
    pub name: String,
    pub requester: Requester,
    /// When the webhook admitted it; the restore takes the newest backup made before.
    pub at: Timestamp,
    /// Our annotations the creator set themselves, which the webhook removed and ignored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<String>,
    /// Backup and Restore requests: the SHA-256 of the spec as created ([`spec_digest`]). The
    /// controller acts only on that spec, so nobody can edit a request afterwards and have it run
    /// as its creator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<String>,
}

/// The SHA-256 (hex) of a request's spec in its canonical form (the typed spec serialized again,
/// so the key order the client sent does not matter).
pub fn spec_digest<T: Serialize>(spec: &T) -> String {
    let bytes = serde_json::to_vec(spec).expect("a spec serializes");
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a mark is not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Invalid {
    #[error("the mark is not in the webhook's format")]
    Malformed,
    #[error("the mark's signature is wrong: it was not made by this webhook")]
    Signature,
    #[error("the mark was made for {0}, not for this object")]
    OtherObject(String),
    #[error("the mark was made at {at}, but the object was created at {created}: it was copied from an earlier object")]
    Replayed { at: Timestamp, created: Timestamp },
}

/// The signing key.
pub struct Key(hmac::Key);

impl Key {
    pub fn new(secret: &[u8]) -> Key {
        Key(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// The mark as an annotation value: `<payload>.<tag>`, both base64url.
    pub fn sign(&self, mark: &Mark) -> String {
        let payload = B64.encode(serde_json::to_vec(mark).expect("a mark serializes"));
        let tag = hmac::sign(&self.0, payload.as_bytes());
        format!("{payload}.{}", B64.encode(tag.as_ref()))
    }

    /// Checks the signature of an annotation value (constant-time) and decodes it.
    pub fn open(&self, value: &str) -> Result<Mark, Invalid> {
        let (payload, tag) = value.split_once('.').ok_or(Invalid::Malformed)?;
        let tag = B64.decode(tag).map_err(|_| Invalid::Malformed)?;
        hmac::verify(&self.0, payload.as_bytes(), &tag).map_err(|_| Invalid::Signature)?;
        let json = B64.decode(payload).map_err(|_| Invalid::Malformed)?;
        serde_json::from_slice(&json).map_err(|_| Invalid::Malformed)
    }

    /// The mark on an object, checked against that object: its kind, namespace, name and
    /// creation time. `Ok(None)` when it carries no mark.
    pub fn verify(
        &self,
        meta: &ObjectMeta,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Mark>, Invalid> {
        let Some(value) = meta.annotations.as_ref().and_then(|a| a.get(MARK_ANNOTATION)) else {
            return Ok(None);
        };
        let mark = self.open(value)?;
        if mark.kind != kind || mark.namespace.as_deref() != namespace || mark.name != name {
            let what = match &mark.namespace {
                Some(ns) => format!("{} {ns}/{}", mark.kind, mark.name),
                None => format!("{} {}", mark.kind, mark.name),
            };
            return Err(Invalid::OtherObject(what));
        }
        let created = meta.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(Timestamp::UNIX_EPOCH);
        if created < mark.at.saturating_sub(CREATED_BEFORE).unwrap_or(mark.at)
            || created > mark.at.saturating_add(CREATED_AFTER).unwrap_or(mark.at)
        {
            return Err(Invalid::Replayed { at: mark.at, created });
        }
        Ok(Some(mark))
    }

    /// Reads the key from its Secret in `namespace`, creating it with 32 random bytes on first
    /// start. Two webhooks starting at once agree: the loser of the create reads the winner's key.
    pub async fn load_or_create(client: &kube::Client, namespace: &str) -> kubectl_backup_core::Result<Key> {
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let context = |e| kubectl_backup_core::Error::kube(format!("reading Secret {namespace}/{KEY_SECRET}"), e);
        for _ in 0..3 {
            if let Some(s) = api.get_opt(KEY_SECRET).await.map_err(context)? {
                let bytes = s.data.as_ref().and_then(|d| d.get(KEY_FIELD)).map(|b| b.0.clone()).unwrap_or_default();
                if bytes.len() < 32 {
                    return Err(kubectl_backup_core::Error::Other(format!(
                        "Secret {namespace}/{KEY_SECRET} has no {KEY_FIELD} key of at least 32 bytes; delete it and the webhook makes a new one"
                    )));
                }
                return Ok(Key::new(&bytes));
            }
            let mut secret = [0u8; 32];
            aws_lc_rs::rand::fill(&mut secret)
                .map_err(|_| kubectl_backup_core::Error::Other("no system randomness for the signing key".into()))?;
            let obj = Secret {
                metadata: ObjectMeta {
                    name: Some(KEY_SECRET.into()),
                    namespace: Some(namespace.into()),
                    labels: Some([("app.kubernetes.io/part-of".to_string(), "kubectl-backup".to_string())].into()),
                    ..Default::default()
                },
                data: Some([(KEY_FIELD.to_string(), ByteString(secret.to_vec()))].into()),
                ..Default::default()
            };
            match api.create(&PostParams::default(), &obj).await {
                Ok(_) => return Ok(Key::new(&secret)),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => {
                    return Err(kubectl_backup_core::Error::kube(
                        format!("creating Secret {namespace}/{KEY_SECRET}"),
                        e,
                    ));
                }
            }
        }
        Err(kubectl_backup_core::Error::Other(format!("could not read or create Secret {namespace}/{KEY_SECRET}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn mark(at: Timestamp) -> Mark {
        Mark {
            kind: "namespaces".into(),
            namespace: None,
            name: "shop".into(),
            requester: Requester { user: "alice".into(), groups: vec!["developers".into()], extra: BTreeMap::new() },
            at,
            ignored: vec![],
            spec: None,
        }
    }

    fn meta(value: &str, created: Timestamp) -> ObjectMeta {
        ObjectMeta {
            annotations: Some([(MARK_ANNOTATION.to_string(), value.to_string())].into()),
            creation_timestamp: Some(Time(created)),
            ..Default::default()
        }
    }

    #[test]
    fn a_signed_mark_verifies_on_its_object() {
        let key = Key::new(&[7; 32]);
        let at: Timestamp = "2026-12-01T10:00:00.400Z".parse().unwrap();
        let v = key.sign(&mark(at));
        let created: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        assert_eq!(key.verify(&meta(&v, created), "namespaces", None, "shop").unwrap(), Some(mark(at)));
        assert_eq!(key.verify(&ObjectMeta::default(), "namespaces", None, "shop").unwrap(), None);
    }

    #[test]
    fn forged_copied_and_replayed_marks_are_refused_by_reason() {
        let key = Key::new(&[7; 32]);
        let at: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        // Signed with another key (a user's own HMAC).
        let forged = Key::new(&[8; 32]).sign(&mark(at));
        assert_eq!(key.verify(&meta(&forged, at), "namespaces", None, "shop"), Err(Invalid::Signature));
        // The payload changed (another user), the tag kept.
        let good = key.sign(&mark(at));
        let mut other = mark(at);
        other.requester.user = "admin".into();
        let tampered =
            format!("{}.{}", B64.encode(serde_json::to_vec(&other).unwrap()), good.split_once('.').unwrap().1);
        assert_eq!(key.verify(&meta(&tampered, at), "namespaces", None, "shop"), Err(Invalid::Signature));
        // Copied onto another namespace.
        assert!(matches!(key.verify(&meta(&good, at), "namespaces", None, "bank"), Err(Invalid::OtherObject(_))));
        // Copied onto a later namespace of the same name.
        let later: Timestamp = "2026-12-01T11:00:00Z".parse().unwrap();
        assert!(matches!(key.verify(&meta(&good, later), "namespaces", None, "shop"), Err(Invalid::Replayed { .. })));
        assert_eq!(key.verify(&meta("garbage", at), "namespaces", None, "shop"), Err(Invalid::Malformed));
    }
}
