//! Progress events from long operations. The CLI draws bars from them; controllers turn them into
//! Kubernetes Events and metrics. The engine never prints.

/// One step of a backup or restore.
#[derive(Clone, Debug)]
pub enum Event {
    /// Discovery done: this many resource types will be listed.
    Planned { resources: usize },
    /// One resource type (in one namespace, or cluster-wide) fully listed.
    Listed { resource: String, namespace: Option<String>, items: u64 },
    /// Objects written to the archive so far, and compressed bytes produced.
    Archived { items: u64, bytes: u64 },
    /// The archive is complete and being uploaded / committed.
    Uploading { bytes: u64 },
    /// Restore: objects verified before the first write.
    Verified { items: u64 },
    /// Restore: total objects planned.
    RestorePlanned { total: u64 },
    /// Restore: one object handled.
    Restored { done: u64, total: u64 },
    /// Restore: waiting for something (CRD established, ...).
    Waiting { what: String },
    /// An incremental backup stores its contents as changes since `backup`, which had `deltas`.
    Continuing { backup: String, deltas: usize },
    /// Volume data: bytes of claim `namespace/claim` moved so far, of about `total` (backing up:
    /// the size of its files as its mover measured them; restoring: the stored stream's size).
    VolumeBytes { namespace: String, claim: String, done: u64, total: u64 },
}

/// Receives events. Must be cheap: it is called on the hot path.
pub trait Observer: Send + Sync {
    fn event(&self, event: Event);
}

/// Ignores everything.
pub struct Quiet;

impl Observer for Quiet {
    fn event(&self, _: Event) {}
}
