//! One error type for the engine. Every message names what was wrong and, where it helps, what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid { what: &'static str, value: String, reason: String },

    #[error("location {location}: {reason}")]
    Location { location: String, reason: String },

    #[error("object store {location}: {source}")]
    Store {
        location: String,
        #[source]
        source: object_store::Error,
    },

    #[error("backup {name:?} not found in {location}{hint}")]
    BackupNotFound { name: String, location: String, hint: String },

    #[error("backup {name:?} already exists in {location}; choose another name or delete it first")]
    BackupExists { name: String, location: String },

    #[error("backup {name:?} in {location} cannot be used: {reason}")]
    Corrupt { name: String, location: String, reason: String },

    /// The commit's put failed in a way that leaves open whether it was stored, and the document
    /// could not be read back to tell: the run's data is kept, in case it was.
    #[error(
        "could not tell whether backup {name:?} was committed to {location} ({reason}); its data is kept: describe the backup to see whether it is there, delete it to remove what is left"
    )]
    CommitUnknown { name: String, location: String, reason: String },

    /// An encrypted data file without a key that opens it (or one that no longer decrypts).
    #[error("backup {name:?} cannot be read: {reason}")]
    Encrypted { name: String, reason: String },

    #[error("{context}: {}", kube_message(source))]
    Kube {
        context: String,
        #[source]
        source: kube::Error,
    },

    #[error("kubeconfig: {0}")]
    Kubeconfig(String),

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("etcd {endpoint}: {reason}")]
    Etcd { endpoint: String, reason: String },

    #[error("{0}")]
    Other(String),

    /// The run stopped at the user's request ([`crate::interrupt`]).
    #[error("{0}")]
    Interrupted(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether a run that failed with this error must leave its data files alone: they may belong
    /// to a committed backup.
    pub fn may_have_committed(&self) -> bool {
        matches!(self, Error::CommitUnknown { .. })
    }

    pub fn invalid(what: &'static str, value: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid { what, value: value.into(), reason: reason.into() }
    }

    pub fn kube(context: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube { context: context.into(), source }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

/// Removes what looks like a credential from a message bound for a log line, an Event or a status:
/// the query of a URL (presigned S3 URLs, Azure SAS tokens), and `key=value` pairs whose key names
/// a signature, a token, a key or a password. Store errors quote request URLs; these messages are
/// readable by anyone who may read Events in a namespace.
pub fn redact(text: &str) -> String {
    use std::sync::LazyLock;
    static URL_QUERY: LazyLock<regex::Regex> = LazyLock::new(|| {
        regex::Regex::new(r#"(?i)\b((?:https?|s3|gs|az|abfss?)://[^\s"'?]+)\?[^\s"']*"#).expect("a valid regex")
    });
    static PAIRS: LazyLock<regex::Regex> = LazyLock::new(|| {
        regex::Regex::new(
            r#"(?i)\b((?:x-amz-)?(?:sig|signature|credential|security-token|token|accountkey|account_key|sharedaccesssignature|password|secret|client_secret|sas)\s*[=:]\s*)[^\s&;,"']+"#,
        )
        .expect("a valid regex")
    });
    let text = URL_QUERY.replace_all(text, "$1?<redacted>");
    PAIRS.replace_all(&text, "$1<redacted>").into_owned()
}

/// A one-line, human message for a kube error (kube's own Display repeats the Debug form).
pub fn kube_message(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => {
            // kube's placeholder reason for a plain-text body (an aggregated API's proxy answering
            // "service unavailable", say) says nothing about the failure: leave it out.
            let reason = if status.reason.is_empty() || status.reason == "Failed to parse error data" {
                String::new()
            } else {
                format!(" {}", status.reason)
            };
            format!("{}{}: {}", status.code, reason, status.message)
        }
        other => chain(other.to_string(), std::error::Error::source(other)),
    }
}

/// `head` followed by the messages of `source` and its sources, each once: one line for a person,
/// without the Debug noise or the repetitions of wrapped errors.
pub fn chain(head: String, source: Option<&(dyn std::error::Error + 'static)>) -> String {
    let mut msg = head;
    let mut src = source;
    while let Some(s) = src {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        src = s.source();
    }
    msg
}

#[cfg(test)]
mod redact_tests {
    use super::redact;

    #[test]
    fn signatures_tokens_and_keys_are_removed() {
        let sas = "Generic HTTP error: GET http://127.0.0.1:10000/devstoreaccount1/missing?restype=container&sv=2021-08-06&sig=AbC%2Fdef%3D&se=2030-01-01 failed: 404";
        let r = redact(sas);
        assert!(!r.contains("AbC") && !r.contains("sv=2021"), "{r}");
        assert!(r.contains("http://127.0.0.1:10000/devstoreaccount1/missing?<redacted>") && r.contains("404"), "{r}");
        let r = redact("auth failed: X-Amz-Signature=deadbeef; AccountKey=Zm9v== password: hunter2");
        assert!(!r.contains("deadbeef") && !r.contains("Zm9v") && !r.contains("hunter2"), "{r}");
        assert_eq!(redact("namespace shop not found"), "namespace shop not found");
    }
}
