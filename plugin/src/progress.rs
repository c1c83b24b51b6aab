//! Progress on a terminal (indicatif), silent otherwise: one bar for every command that runs a
//! backup or a restore, of objects or of etcd keys.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kubectl_backup_core::progress::{Event, Observer, Quiet};

use crate::args::Output;
use crate::output::size;

/// An observer that draws a spinner (a bar once a restore knows its total) on stderr when it is a
/// terminal and the output is for people; otherwise a no-op. `unit` names what is counted:
/// "objects", "keys".
pub fn observer(output: Output, unit: &'static str) -> Arc<dyn Observer> {
    if output != Output::Table || !std::io::stderr().is_terminal() {
        return Arc::new(Quiet);
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(8));
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    Arc::new(Bar {
        bar,
        unit,
        started: Instant::now(),
        source: Mutex::new(String::new()),
        planned: AtomicU64::new(0),
        listed: AtomicU64::new(0),
        items: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        uploaded: AtomicU64::new(0),
    })
}

struct Bar {
    bar: ProgressBar,
    unit: &'static str,
    started: Instant,
    /// What is being read, as the last `Waiting` named it (e.g. "etcd at https://...").
    source: Mutex<String>,
    /// Resource lists planned and listed (object backups).
    planned: AtomicU64,
    listed: AtomicU64,
    items: AtomicU64,
    bytes: AtomicU64,
    uploaded: AtomicU64,
}

impl Bar {
    /// The running message of a backup.
    fn backup_message(&self) -> String {
        let items = self.items.load(Ordering::Relaxed);
        let bytes = self.bytes.load(Ordering::Relaxed);
        let planned = self.planned.load(Ordering::Relaxed);
        if planned > 0 {
            let listed = self.listed.load(Ordering::Relaxed);
            return format!("listed {listed}/{planned} resource lists, {items} {}, {}", self.unit, size(bytes));
        }
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let counted = if items > 0 { format!("{items} {}, ", self.unit) } else { String::new() };
        let source = self.source.lock().map(|w| w.clone()).unwrap_or_default();
        format!(
            "{source}: {counted}{} ({}/s), {} uploaded",
            size(bytes),
            size((bytes as f64 / secs) as u64),
            size(self.uploaded.load(Ordering::Relaxed))
        )
    }
}

impl Observer for Bar {
    fn event(&self, event: Event) {
        match event {
            Event::Planned { resources } => self.planned.store(resources as u64, Ordering::Relaxed),
            Event::Listed { .. } => {
                self.listed.fetch_add(1, Ordering::Relaxed);
            }
            Event::Archived { items, bytes } => {
                self.items.store(items, Ordering::Relaxed);
                self.bytes.store(bytes, Ordering::Relaxed);
            }
            Event::Uploading { bytes } => self.uploaded.store(bytes, Ordering::Relaxed),
            Event::Continuing { .. } => {}
            Event::Verified { items } => {
                self.bar.set_message(format!("verified {items} {}", self.unit));
                return;
            }
            Event::RestorePlanned { total } => {
                self.bar.set_length(total);
                let template = format!("{{spinner}} {{elapsed:>4}} [{{bar:30}}] {{pos}}/{{len}} {} {{msg}}", self.unit);
                self.bar.set_style(
                    ProgressStyle::with_template(&template)
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                self.bar.set_message("");
                return;
            }
            Event::Restored { done, total } => {
                self.bar.set_length(total);
                self.bar.set_position(done);
                return;
            }
            Event::VolumeBytes { namespace, claim, done, total } => {
                let percent = (done * 100).checked_div(total).unwrap_or(0);
                self.bar.set_message(format!(
                    "the data of PersistentVolumeClaim {namespace}/{claim}: {} of {} ({percent}%)",
                    size(done),
                    size(total)
                ));
                return;
            }
            Event::Waiting { what } => {
                self.bar.set_message(format!("waiting for {what}"));
                if let Ok(mut w) = self.source.lock() {
                    *w = what;
                }
                return;
            }
        }
        self.bar.set_message(self.backup_message());
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
