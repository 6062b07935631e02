//! Byte ranges of a stored file (`GET /vod/{app}/{name}.mp4` with `Range:`), RFC 9110
//! §14: what part of a file of a known length a request asks for.
//!
//! One range per request is served, in any of its three forms: `bytes=a-b` (from `a` to
//! `b`, inclusive, `b` cut to the end of the file), `bytes=a-` (from `a` to the end) and
//! `bytes=-n` (the last `n` bytes). That is what players and `ffprobe` send: a first
//! request `bytes=0-`, then seeks. What the RFC lets a server ignore is ignored, and the
//! whole file answered with 200: no `Range`, a unit other than `bytes`, a malformed value,
//! several ranges (`bytes=0-1,5-9`: a multipart answer is more than any player needs).
//! A well formed range that starts at or past the end of the file (or a suffix of 0
//! bytes, or any range of an empty file) cannot be satisfied: 416.

/// What to send of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// All of it: 200.
    Whole,
    /// Bytes `start..=end`: 206 with `Content-Range: bytes start-end/len`.
    Part { start: u64, end: u64 },
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

impl ByteRange {
    /// The bytes to send, as `start..end` (exclusive), for a file of `len` bytes.
    pub fn span(self, len: u64) -> Option<(u64, u64)> {
        match self {
            ByteRange::Whole => Some((0, len)),
            ByteRange::Part { start, end } => Some((start, end + 1)),
            ByteRange::Unsatisfiable => None,
        }
    }
}

/// Resolves the value of a request's `Range` header (None: no header) against a file of
/// `len` bytes.
pub fn resolve(header: Option<&str>, len: u64) -> ByteRange {
    let Some(value) = header else {
        return ByteRange::Whole;
    };
    let value = value.trim();
    let Some((unit, spec)) = value.split_once('=') else {
        return ByteRange::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return ByteRange::Whole;
    }
    let spec = spec.trim();
    if spec.contains(',') {
        return ByteRange::Whole;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return ByteRange::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Too many digits for a u64 is past the end of any file.
        Some(s.parse().unwrap_or(u64::MAX))
    };
    match (first.is_empty(), last.is_empty()) {
        // `-n`: the last n bytes.
        (true, false) => {
            let Some(n) = number(last) else {
                return ByteRange::Whole;
            };
            if n == 0 || len == 0 {
                return ByteRange::Unsatisfiable;
            }
            ByteRange::Part {
                start: len.saturating_sub(n),
                end: len - 1,
            }
        }
        // `a-`: from a to the end.
        (false, true) => {
            let Some(start) = number(first) else {
                return ByteRange::Whole;
            };
            if start >= len {
                return ByteRange::Unsatisfiable;
            }
            ByteRange::Part {
                start,
                end: len - 1,
            }
        }
        // `a-b`.
        (false, false) => {
            let (Some(start), Some(end)) = (number(first), number(last)) else {
                return ByteRange::Whole;
            };
            if end < start {
                // Invalid, so ignored (RFC 9110 §14.1.1).
                return ByteRange::Whole;
            }
            if start >= len {
                return ByteRange::Unsatisfiable;
            }
            ByteRange::Part {
                start,
                end: end.min(len - 1),
            }
        }
        (true, true) => ByteRange::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_forms() {
        assert_eq!(
            resolve(Some("bytes=0-99"), 1000),
            ByteRange::Part { start: 0, end: 99 }
        );
        assert_eq!(
            resolve(Some("bytes=900-"), 1000),
            ByteRange::Part {
                start: 900,
                end: 999
            }
        );
        assert_eq!(
            resolve(Some("bytes=-100"), 1000),
            ByteRange::Part {
                start: 900,
                end: 999
            }
        );
        // An end past the file is cut; a suffix longer than the file is all of it.
        assert_eq!(
            resolve(Some("bytes=990-5000"), 1000),
            ByteRange::Part {
                start: 990,
                end: 999
            }
        );
        assert_eq!(
            resolve(Some("bytes=-5000"), 1000),
            ByteRange::Part { start: 0, end: 999 }
        );
        assert_eq!(
            resolve(Some(" Bytes = 5 - 9 "), 1000),
            ByteRange::Part { start: 5, end: 9 }
        );
        assert_eq!(
            ByteRange::Part { start: 5, end: 9 }.span(1000),
            Some((5, 10))
        );
        assert_eq!(ByteRange::Whole.span(1000), Some((0, 1000)));
    }

    #[test]
    fn unsatisfiable() {
        for v in [
            "bytes=1000-",
            "bytes=1000-2000",
            "bytes=-0",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(resolve(Some(v), 1000), ByteRange::Unsatisfiable, "{v}");
        }
        assert_eq!(resolve(Some("bytes=0-"), 0), ByteRange::Unsatisfiable);
        assert_eq!(resolve(Some("bytes=-1"), 0), ByteRange::Unsatisfiable);
        assert_eq!(ByteRange::Unsatisfiable.span(10), None);
    }

    #[test]
    fn ignored_means_the_whole_file() {
        for v in [
            "items=0-1",
            "bytes=0-1,5-9",
            "bytes=9-5",
            "bytes=-",
            "bytes=a-b",
            "bytes=+1-2",
            "bytes",
            "",
        ] {
            assert_eq!(resolve(Some(v), 1000), ByteRange::Whole, "{v}");
        }
        assert_eq!(resolve(None, 1000), ByteRange::Whole);
    }
}
