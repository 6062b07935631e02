//! Signed, expiring links: `?exp=<unix seconds>&sig=<hex>`.
//!
//! A web backend that knows the application's `secret` can hand a viewer (or an encoder) a
//! link valid for one stream, one action and a limited time, without the relay knowing of
//! it beforehand. `sig` is the lowercase hex HMAC-SHA256, under the secret, of
//! `"{action}:{app}/{stream}:{exp}"`: the action is signed so that a link to play cannot be
//! used to publish, and the expiry is signed so it cannot be pushed back. Any language
//! makes one; in a shell:
//!
//! ```text
//! printf 'publish:live/demo:1767225600' | openssl dgst -sha256 -hmac "$SECRET" | cut -d' ' -f2
//! ```
//!
//! The check compares the hex text in constant time, so a forger learns nothing from how
//! long a refusal took.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::query::QueryArgs;
use super::{Action, Denial, DenialKind};

type HmacSha256 = Hmac<Sha256>;

/// The `sig` of a link allowing `action` on `app/stream` until `exp`.
pub fn signature(secret: &[u8], action: Action, app: &str, stream: &str, exp: u64) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(format!("{}:{app}/{stream}:{exp}", action.as_str()).as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(digest.len() * 2);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

/// Checks the link's `exp` and `sig` arguments. The signature is checked before the expiry,
/// so "expired" is said only of a link the secret's holder really made.
pub fn verify(
    secret: &[u8],
    action: Action,
    app: &str,
    stream: &str,
    args: &QueryArgs,
    unix_now: u64,
) -> Result<(), Denial> {
    let (Some(exp_text), Some(sig)) = (args.get("exp"), args.get("sig")) else {
        return Err(Denial::new(
            DenialKind::BadSignature,
            "the link has no exp and sig arguments",
        ));
    };
    let Ok(exp) = exp_text.parse::<u64>() else {
        return Err(Denial::new(
            DenialKind::BadSignature,
            "the link's exp is not a number of unix seconds",
        ));
    };
    let expected = signature(secret, action, app, stream, exp);
    if !bool::from(expected.as_bytes().ct_eq(sig.as_bytes())) {
        return Err(Denial::new(
            DenialKind::BadSignature,
            format!(
                "the link's signature is wrong (not a {} link for this stream?)",
                action.as_str()
            ),
        ));
    }
    if exp < unix_now {
        return Err(Denial::new(
            DenialKind::LinkExpired,
            format!("the link expired {} s ago", unix_now - exp),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2: the HMAC itself is the standard one.
    #[test]
    fn hmac_matches_rfc_4231() {
        let mut mac = HmacSha256::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    /// The same value `openssl dgst -sha256 -hmac topsecret` prints for
    /// `publish:live/demo:1767225600` (as the README tells operators to make it).
    #[test]
    fn signature_matches_openssl() {
        assert_eq!(
            signature(b"topsecret", Action::Publish, "live", "demo", 1_767_225_600),
            "c9c5d7b955e1ba89f9bec0b104809ec2f7852949fd603e5b82956fcbceee909e"
        );
    }

    fn link(action: Action, exp: u64) -> QueryArgs {
        let sig = signature(b"k", action, "live", "demo", exp);
        QueryArgs::parse(&format!("exp={exp}&sig={sig}"))
    }

    #[test]
    fn a_fresh_link_passes_until_its_second() {
        let args = link(Action::Publish, 100);
        assert_eq!(
            verify(b"k", Action::Publish, "live", "demo", &args, 99),
            Ok(())
        );
        assert_eq!(
            verify(b"k", Action::Publish, "live", "demo", &args, 100),
            Ok(())
        );
        let late = verify(b"k", Action::Publish, "live", "demo", &args, 101).unwrap_err();
        assert_eq!(late.kind, DenialKind::LinkExpired);
    }

    #[test]
    fn a_link_is_for_one_action_stream_and_secret() {
        let args = link(Action::Play, 100);
        for (secret, action, app, stream) in [
            (&b"k"[..], Action::Publish, "live", "demo"),
            (b"k", Action::Play, "live", "demo2"),
            (b"k", Action::Play, "other", "demo"),
            (b"j", Action::Play, "live", "demo"),
        ] {
            let denied = verify(secret, action, app, stream, &args, 50).unwrap_err();
            assert_eq!(denied.kind, DenialKind::BadSignature);
        }
    }

    #[test]
    fn malformed_links_are_refused() {
        let sig = signature(b"k", Action::Play, "live", "demo", 100);
        for query in [
            String::new(),
            "exp=100".to_owned(),
            format!("sig={sig}"),
            format!("exp=soon&sig={sig}"),
            format!("exp=100&sig={}", sig.to_uppercase()),
            "exp=100&sig=00".to_owned(),
            format!("exp=101&sig={sig}"),
        ] {
            let args = QueryArgs::parse(&query);
            let denied = verify(b"k", Action::Play, "live", "demo", &args, 50).unwrap_err();
            assert_eq!(denied.kind, DenialKind::BadSignature, "{query}");
        }
    }
}
