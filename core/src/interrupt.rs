//! A process-wide request to stop (the plugin's first Ctrl-C, the controller's SIGTERM), after which
//! a run ends what it began cleanly instead of being killed mid-way: a running mover Pod is deleted
//! and its claim's post hooks run (a workload frozen by a pre hook is let go), no further claim or
//! restore group is begun, and a backup is not committed (what it wrote is removed, as for any
//! failed run). Runs that move volume data count themselves ([`moving`]), so that a process
//! shutting down can wait for them to end ([`drained`]).

use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::watch;
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

fn moving_now() -> &'static watch::Sender<usize> {
    static MOVING: OnceLock<watch::Sender<usize>> = OnceLock::new();
    MOVING.get_or_init(|| watch::Sender::new(0))
}

/// Counts a run moving volume data (mover Pods, hooks) until dropped.
pub struct Moving(());

/// A run moving volume data begins; it ends when the guard is dropped.
pub fn moving() -> Moving {
    moving_now().send_modify(|n| *n += 1);
    Moving(())
}

impl Drop for Moving {
    fn drop(&mut self) {
        moving_now().send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Waits, at most `limit`, until no run moves volume data; whether none does.
pub async fn drained(limit: Duration) -> bool {
    let mut rx = moving_now().subscribe();
    tokio::time::timeout(limit, rx.wait_for(|n| *n == 0)).await.is_ok()
}
