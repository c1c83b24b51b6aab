//! A process-wide request to stop (the plugin's first Ctrl-C), after which a run ends what it began
//! cleanly instead of being killed mid-way: a running mover Pod is deleted and its claim's post
//! hooks run (a workload frozen by a pre hook is let go), no further claim or restore group is
//! begun, and a backup is not committed (what it wrote is removed, as for any failed run).

use std::sync::OnceLock;

use tokio_util::sync::CancellationToken;

fn token() -> &'static CancellationToken {
    static TOKEN: OnceLock<CancellationToken> = OnceLock::new();
    TOKEN.get_or_init(CancellationToken::new)
}

/// Asks every run in this process to stop.
pub fn request() {
    token().cancel();
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    token().is_cancelled()
}

/// Resolves once a stop is asked for.
pub async fn wait() {
    token().cancelled().await;
}

/// The error of a run that stopped: `what` it left as it is.
pub fn stopped(what: &str) -> crate::Error {
    crate::Error::Interrupted(format!("interrupted: {what}"))
}
