//! The supervised runtime: every controller runs as an owned task. One that returns or panics is
//! logged and started again after an exponential backoff (1 s doubling to 1 min, reset after it
//! has run for 10 min), and while it is down [`Health`] says so — `/readyz` answers 503 naming it.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use tokio::task::JoinSet;

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A controller that ran this long before ending starts again after the first backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(600);

/// What `/readyz` reads: the controllers that are down and why.
#[derive(Clone, Default)]
pub struct Health {
    down: Arc<Mutex<BTreeMap<&'static str, String>>>,
}

impl Health {
    /// `Err` naming every controller that is down, with why and since when.
    pub fn check(&self) -> Result<(), String> {
        let down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        if down.is_empty() {
            return Ok(());
        }
        Err(down.iter().map(|(name, why)| format!("controller {name} is down: {why}")).collect::<Vec<_>>().join("; "))
    }

    fn set(&self, name: &'static str, why: Option<String>) {
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        match why {
            Some(w) => down.insert(name, w),
            None => down.remove(name),
        };
    }
}

/// Owns the controllers' tasks.
pub struct Supervisor {
    tasks: JoinSet<()>,
    pub health: Health,
    first_backoff: Duration,
}

impl Default for Supervisor {
    fn default() -> Self {
        Supervisor { tasks: JoinSet::new(), health: Health::default(), first_backoff: FIRST_BACKOFF }
    }
}

impl Supervisor {
    /// Runs `start()` as controller `name`, again and again, for as long as the supervisor lives.
    pub fn spawn<F, Fut>(&mut self, name: &'static str, start: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let health = self.health.clone();
        let first = self.first_backoff;
        self.tasks.spawn(async move {
            let mut backoff = first;
            loop {
                let started = tokio::time::Instant::now();
                // Its own task, so that a panic is caught here instead of ending the loop.
                let why = match tokio::spawn(start()).await {
                    Ok(()) => "it returned".to_string(),
                    Err(e) if e.is_panic() => format!("it panicked: {}", panic_message(e.into_panic())),
                    Err(e) => format!("it was cancelled: {e}"),
                };
                if started.elapsed() >= HEALTHY_RUN {
                    backoff = first;
                }
                tracing::error!(controller = name, %why, retry_in = ?backoff, "controller stopped; restarting");
                health.set(name, Some(format!("{why} at {}, restarting", Timestamp::now())));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                health.set(name, None);
            }
        });
    }

    /// Stops every controller (at shutdown).
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".into()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_panicking_controller_is_reported_down_and_restarted() {
        let mut s = Supervisor { first_backoff: Duration::from_millis(300), ..Default::default() };
        let starts = Arc::new(AtomicU32::new(0));
        let n = starts.clone();
        s.spawn("flaky", move || {
            let n = n.clone();
            async move {
                if n.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("boom");
                }
                std::future::pending::<()>().await;
            }
        });
        let health = s.health.clone();
        // Down, with the panic's message, during the backoff.
        let mut seen_down = None;
        for _ in 0..50 {
            if let Err(why) = health.check() {
                seen_down = Some(why);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let why = seen_down.expect("the panic was never reported");
        assert!(why.contains("controller flaky is down") && why.contains("boom"), "{why}");
        // Then started again, and healthy.
        for _ in 0..100 {
            if starts.load(Ordering::SeqCst) == 2 && health.check().is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(starts.load(Ordering::SeqCst), 2);
        assert_eq!(health.check(), Ok(()));
        s.shutdown().await;
    }

    #[tokio::test]
    async fn a_controller_that_returns_is_reported_and_restarted() {
        let mut s = Supervisor { first_backoff: Duration::from_millis(20), ..Default::default() };
        let starts = Arc::new(AtomicU32::new(0));
        let n = starts.clone();
        s.spawn("quitter", move || {
            let n = n.clone();
            async move {
                n.fetch_add(1, Ordering::SeqCst);
            }
        });
        let mut reported = false;
        for _ in 0..200 {
            reported |= s.health.check().is_err_and(|w| w.contains("controller quitter is down: it returned"));
            if starts.load(Ordering::SeqCst) >= 3 && reported {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(reported, "the stop was never reported");
        assert!(starts.load(Ordering::SeqCst) >= 3, "not restarted: {} starts", starts.load(Ordering::SeqCst));
        s.shutdown().await;
    }
}
