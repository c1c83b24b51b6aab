//! Progress on a terminal (indicatif), silent otherwise.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kubectl_backup_core::progress::{Event, Observer, Quiet};

use crate::args::Output;
use crate::output::size;

/// An observer that draws a spinner or bar on stderr when it is a terminal and the output is for
/// people; otherwise a no-op.
pub fn observer(output: Output) -> Arc<dyn Observer> {
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
        planned: AtomicU64::new(0),
        listed: AtomicU64::new(0),
        items: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
    })
}

struct Bar {
    bar: ProgressBar,
    planned: AtomicU64,
    listed: AtomicU64,
    items: AtomicU64,
    bytes: AtomicU64,
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
            Event::Uploading { bytes } => self.bytes.store(bytes, Ordering::Relaxed),
            Event::Verified { items } => {
                self.bar.set_message(format!("verified {items} objects"));
                return;
            }
            Event::RestorePlanned { total } => {
                self.bar.set_length(total);
                self.bar.set_style(
                    ProgressStyle::with_template("{spinner} {elapsed:>4} [{bar:30}] {pos}/{len} objects {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                return;
            }
            Event::Restored { done, total } => {
                self.bar.set_length(total);
                self.bar.set_position(done);
                return;
            }
            Event::Waiting { what } => {
                self.bar.set_message(format!("waiting for {what}"));
                return;
            }
        }
        self.bar.set_message(format!(
            "listed {}/{} resource lists, {} objects, {}",
            self.listed.load(Ordering::Relaxed),
            self.planned.load(Ordering::Relaxed),
            self.items.load(Ordering::Relaxed),
            size(self.bytes.load(Ordering::Relaxed)),
        ));
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
