//! Stream keys: a fixed secret per stream name, the way most operators start.
//!
//! `[app.live.auth] publish_keys = { demo = "s3cret" }` lets `demo?key=s3cret` publish and
//! nothing else: once the table lists any name, a name it does not list is refused too,
//! so a typo in an encoder's settings cannot open a stream nobody watches over. The
//! comparison takes the same time whatever the key's first wrong byte is, so a key cannot
//! be found one byte at a time by timing refusals.

use std::collections::BTreeMap;

use subtle::ConstantTimeEq;

use super::{Denial, DenialKind};

/// Checks the key a client presented for `stream` against `table` (stream name → key).
pub fn check(
    table: &BTreeMap<String, String>,
    stream: &str,
    presented: Option<&str>,
) -> Result<(), Denial> {
    if table.is_empty() {
        return Ok(());
    }
    let Some(expected) = table.get(stream) else {
        return Err(Denial::new(
            DenialKind::BadKey,
            "the stream name has no key in the application's key table",
        ));
    };
    let Some(presented) = presented else {
        return Err(Denial::new(DenialKind::BadKey, "no key argument was given"));
    };
    if bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(Denial::new(DenialKind::BadKey, "the key is wrong"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> BTreeMap<String, String> {
        BTreeMap::from([("demo".to_owned(), "s3cret".to_owned())])
    }

    #[test]
    fn an_empty_table_lets_anything_through() {
        assert_eq!(check(&BTreeMap::new(), "any", None), Ok(()));
    }

    #[test]
    fn the_right_key_passes() {
        assert_eq!(check(&table(), "demo", Some("s3cret")), Ok(()));
    }

    #[test]
    fn wrong_missing_and_unlisted_are_refused() {
        for (stream, key) in [
            ("demo", Some("s3cre")),
            ("demo", Some("s3cret ")),
            ("demo", Some("")),
            ("demo", None),
            ("other", Some("s3cret")),
        ] {
            let denied = check(&table(), stream, key).unwrap_err();
            assert_eq!(denied.kind, DenialKind::BadKey, "{stream} {key:?}");
            assert!(!denied.why.contains("s3cret"));
        }
    }
}
