//! etcd keys as zip entry names, and back.
//!
//! A key is any non-empty byte string; an entry name must be one safe, relative file name. The
//! escape keeps lowercase ASCII letters, digits, `-` and `_` as they are, and `.` unless it starts
//! the name; every other byte becomes `%XX` (upper-case hex). So a name never holds `/` or `\`,
//! never is `.` or `..`, never starts with a dot, is the same on case-insensitive file systems, and
//! maps back to exactly one key: `/registry/pods/default/web` is stored as
//! `%2Fregistry%2Fpods%2Fdefault%2Fweb`.

/// Entry name of a key. `None` for the empty key, which etcd does not allow.
pub fn escape(key: &[u8]) -> Option<String> {
    if key.is_empty() {
        return None;
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(key.len() + key.len() / 2);
    for (i, &b) in key.iter().enumerate() {
        if keeps(b, i == 0) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        }
    }
    Some(out)
}

/// The key an entry name stands for. Refuses any name [`escape`] cannot have made, so a name maps
/// to one key and a key to one name.
pub fn unescape(name: &str) -> Result<Vec<u8>, String> {
    let bytes = name.as_bytes();
    if bytes.is_empty() {
        return Err("empty entry name".into());
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(&hi), Some(&lo)) = (bytes.get(i + 1), bytes.get(i + 2)) else {
                return Err(format!("entry {name:?}: '%' at byte {i} is not followed by two hex digits"));
            };
            let (Some(hi), Some(lo)) = (hex_digit(hi), hex_digit(lo)) else {
                return Err(format!("entry {name:?}: '%' at byte {i} is not followed by two upper-case hex digits"));
            };
            let decoded = (hi << 4) | lo;
            if keeps(decoded, out.is_empty()) {
                return Err(format!("entry {name:?}: byte {decoded:#04x} is escaped but should not be"));
            }
            out.push(decoded);
            i += 3;
        } else if keeps(b, out.is_empty()) {
            out.push(b);
            i += 1;
        } else {
            return Err(format!("entry {name:?}: byte {b:#04x} at {i} should have been escaped"));
        }
    }
    Ok(out)
}

/// True for bytes kept as they are: `a-z 0-9 - _`, and `.` except as the first byte.
fn keeps(b: u8, first: bool) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || (b == b'.' && !first)
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A key for people: itself when it is UTF-8 without control characters, else with `\xNN` escapes.
pub fn display(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(s) if !s.chars().any(char::is_control) => s.to_string(),
        _ => key.escape_ascii().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kubernetes_keys_read_well() {
        assert_eq!(escape(b"/registry/pods/default/web").unwrap(), "%2Fregistry%2Fpods%2Fdefault%2Fweb");
        assert_eq!(escape(b"compact_rev_key").unwrap(), "compact_rev_key");
        assert_eq!(escape(b"v1.apps").unwrap(), "v1.apps");
    }

    #[test]
    fn dangerous_keys_become_safe_names() {
        for (key, name) in [
            (&b"."[..], "%2E"),
            (b"..", "%2E."),
            (b"../../etc/passwd", "%2E.%2F..%2Fetc%2Fpasswd"),
            (b".hidden", "%2Ehidden"),
            (b"a/../b", "a%2F..%2Fb"),
            (b"C:\\x", "%43%3A%5Cx"),
            (b"Name", "%4Eame"),
            (b"\0\xff", "%00%FF"),
            (b"%41", "%2541"),
            (b"a b", "a%20b"),
        ] {
            assert_eq!(escape(key).unwrap(), name, "{key:?}");
            assert_eq!(unescape(name).unwrap(), key, "{name}");
        }
        assert_eq!(escape(b""), None);
    }

    #[test]
    fn names_escape_could_not_make_are_refused() {
        for bad in ["", "%", "%4", "%zz", "%4e", "a/b", ".x", "A", "%61", "x%2", "a\\b", ".", ".."] {
            assert!(unescape(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn display_is_readable_and_lossless_for_binary() {
        assert_eq!(display(b"/registry/x"), "/registry/x");
        assert_eq!(display(b"a\xffb"), "a\\xffb");
        assert_eq!(display(b"a\nb"), "a\\nb");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn escape_round_trips_and_is_a_safe_relative_name(key in proptest::collection::vec(any::<u8>(), 1..80)) {
            let name = escape(&key).unwrap();
            prop_assert_eq!(unescape(&name).unwrap(), key);
            prop_assert!(!name.starts_with('.'));
            prop_assert!(name != "." && name != "..");
            prop_assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()
                || matches!(b, b'-' | b'_' | b'.' | b'%' | b'A'..=b'F')), "{}", name);
            let path = std::path::Path::new(&name);
            let parts: Vec<_> = path.components().collect();
            prop_assert_eq!(parts.len(), 1);
            prop_assert!(matches!(parts[0], std::path::Component::Normal(_)));
        }

        #[test]
        fn printable_keys_round_trip(key in "[ -~]{1,60}") {
            let name = escape(key.as_bytes()).unwrap();
            prop_assert_eq!(unescape(&name).unwrap(), key.as_bytes());
        }

        #[test]
        fn distinct_keys_get_distinct_names(a in proptest::collection::vec(any::<u8>(), 1..12),
                                            b in proptest::collection::vec(any::<u8>(), 1..12)) {
            prop_assume!(a != b);
            prop_assert_ne!(escape(&a), escape(&b));
        }
    }
}
