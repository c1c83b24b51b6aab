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
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(what: &'static str, value: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid { what, value: value.into(), reason: reason.into() }
    }

    pub fn kube(context: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube { context: context.into(), source }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// The HTTP status of a Kubernetes API error, if this is one.
    pub fn kube_status(&self) -> Option<u16> {
        match self {
            Error::Kube { source: kube::Error::Api(status), .. } => Some(status.code),
            _ => None,
        }
    }
}

/// HTTP status code of a kube error, if the API server answered with a Status.
pub fn status_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
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
        other => {
            let mut msg = other.to_string();
            let mut src = std::error::Error::source(other);
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
    }
}
