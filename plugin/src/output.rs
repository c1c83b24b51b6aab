//! Printing: tables like kubectl's, documents as JSON or YAML, human sizes and ages.

use std::io::Write;

use comfy_table::{Cell, ContentArrangement, Table, presets};
use jiff::Timestamp;
use serde::Serialize;

use crate::args::Output;

/// Prints a document as JSON or YAML on stdout.
pub fn print_document<T: Serialize>(value: &T, format: Output) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        Output::Json => {
            serde_json::to_writer_pretty(&mut out, value)?;
            writeln!(out)?;
        }
        Output::Yaml => {
            let text = serde_saphyr::to_string(value)?;
            out.write_all(text.as_bytes())?;
            if !text.ends_with('\n') {
                writeln!(out)?;
            }
        }
        Output::Table => unreachable!("tables are printed by the command"),
    }
    Ok(())
}

/// A borderless table with upper-case headers, like `kubectl get`.
pub fn table(headers: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(presets::NOTHING).set_content_arrangement(ContentArrangement::Disabled);
    t.set_header(headers.iter().map(Cell::new));
    for c in t.column_iter_mut() {
        c.set_padding((0, 3));
    }
    t
}

pub fn print_table(t: &Table) {
    print_table_headers(t, true);
}

/// A table, with or without its header line (`--no-headers`).
pub fn print_table_headers(t: &Table, headers: bool) {
    let text = t.to_string();
    let mut out = std::io::stdout().lock();
    for line in text.lines().skip(usize::from(!headers)) {
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

/// 1536 -> "1.5 KiB".
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

/// Age like kubectl: 45s, 12m, 5h, 3d.
pub fn age(t: Option<Timestamp>) -> String {
    let Some(t) = t else { return "<unknown>".into() };
    let secs = Timestamp::now().as_second() - t.as_second();
    span(secs.max(0))
}

/// Time until `t`: "29d", or "expired".
pub fn until(t: Option<Timestamp>) -> String {
    let Some(t) = t else { return "never".into() };
    let secs = t.as_second() - Timestamp::now().as_second();
    if secs <= 0 { "expired".into() } else { span(secs) }
}

fn span(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// "2024-01-02 03:04:05 UTC"
pub fn time(t: Option<Timestamp>) -> String {
    t.map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()).unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_spans() {
        assert_eq!(size(10), "10 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(5 << 20), "5.0 MiB");
        assert_eq!(span(30), "30s");
        assert_eq!(span(600), "10m");
        assert_eq!(span(5 * 3600), "5h");
        assert_eq!(span(3 * 86400), "3d");
    }
}
