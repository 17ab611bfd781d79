//! Text helpers: escaping arbitrary bytes for a terminal, parsing and formatting times,
//! and human-readable sizes.

use std::fmt::Write as _;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Escapes `b` for display inside double quotes: printable ASCII stays as it is (except `\`
/// and `"`), common controls become `\n`, `\r`, `\t`, everything else `\xNN`. At most `max`
/// input bytes are shown; if more were cut, `…` follows.
pub fn escape_bytes(b: &[u8], max: usize) -> String {
    let shown = &b[..b.len().min(max)];
    let mut s = String::with_capacity(shown.len() + 2);
    for &c in shown {
        match c {
            b'\\' => s.push_str("\\\\"),
            b'"' => s.push_str("\\\""),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            0x20..=0x7e => s.push(c as char),
            _ => {
                let _ = write!(s, "\\x{c:02x}");
            }
        }
    }
    if b.len() > shown.len() {
        s.push('…');
    }
    s
}

/// Parses a point in time given as RFC 3339 (`2026-11-25T10:00:00Z`,
/// `2026-11-25T11:00:00.250+01:00`) or as milliseconds since the Unix epoch
/// (`1795600800000`). Returns milliseconds since the epoch.
pub fn parse_time_ms(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .map_err(|e| format!("{s:?} is not a valid number of milliseconds: {e}"));
    }
    let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|e| {
        format!(
            "{s:?} is not an RFC 3339 time ({e}); write it like 2026-11-25T10:00:00Z or 2026-11-25T11:00:00+01:00, or as milliseconds since the Unix epoch"
        )
    })?;
    let ms = t.unix_timestamp_nanos() / 1_000_000;
    u64::try_from(ms).map_err(|_| format!("{s:?} is before 1970"))
}

/// Formats milliseconds since the epoch as RFC 3339 in UTC, with milliseconds
/// (`2026-11-25T10:00:00.123Z`). Out-of-range values are shown as `@<ms>ms`.
pub fn format_time_ms(ms: u64) -> String {
    let formatted = i128::from(ms)
        .checked_mul(1_000_000)
        .and_then(|ns| OffsetDateTime::from_unix_timestamp_nanos(ns).ok())
        .and_then(|t| {
            let t = t.replace_nanosecond((ms % 1000) as u32 * 1_000_000).ok()?;
            t.format(&Rfc3339).ok()
        });
    formatted.unwrap_or_else(|| format!("@{ms}ms"))
}

/// A byte count for people: `512 B`, `1.5 KiB`, `3.2 MiB`, `1.1 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_shows_every_byte_unambiguously() {
        assert_eq!(escape_bytes(b"key-1", 64), "key-1");
        assert_eq!(
            escape_bytes(b"a\"b\\c\n\0\xff", 64),
            "a\\\"b\\\\c\\n\\x00\\xff"
        );
        assert_eq!(escape_bytes(b"abcdef", 3), "abc…");
        assert_eq!(escape_bytes(b"", 3), "");
    }

    #[test]
    fn times_parse_as_rfc3339_or_milliseconds() {
        assert_eq!(parse_time_ms("1795600800000"), Ok(1_795_600_800_000));
        assert_eq!(parse_time_ms("1970-01-01T00:00:01Z"), Ok(1000));
        assert_eq!(parse_time_ms("1970-01-01T01:00:01.5+01:00"), Ok(1500));
        assert_eq!(
            parse_time_ms("2026-11-25T10:00:00Z"),
            parse_time_ms("2026-11-25T11:00:00+01:00")
        );
        assert!(parse_time_ms("yesterday").is_err());
        assert!(parse_time_ms("1969-12-31T23:59:59Z").is_err());
        assert!(parse_time_ms("").is_err());
    }

    #[test]
    fn times_format_back() {
        let ms = parse_time_ms("2026-11-25T10:00:00.123Z").expect("parse");
        assert_eq!(format_time_ms(ms), "2026-11-25T10:00:00.123Z");
        assert_eq!(parse_time_ms(&format_time_ms(ms)), Ok(ms));
        assert_eq!(format_time_ms(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
