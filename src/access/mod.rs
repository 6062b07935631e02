//! Who may publish or play what: the relay's access control, as plain decisions.
//!
//! An operator puts an ingest on the internet only if strangers cannot publish to it, nor
//! watch what is private. Four rules do that, each optional, all combinable, per
//! application (`[app.NAME.auth]`):
//!
//! - [`network_rules`]: CIDR allow and deny lists, checked first because they are the
//!   cheapest and need nothing from the client but its address;
//! - [`keys`]: a stream key per stream name, which the client sends as the `key` query
//!   argument (`demo?key=s3cret`, as OBS sends it);
//! - [`signed_link`]: links that carry their own expiry and an HMAC over what they allow,
//!   so a web backend can hand out short-lived links without telling the relay about each;
//! - [`callback`]: ask the operator's HTTP service (nginx-rtmp's `on_publish`, `on_play`...),
//!   for anything the first three cannot express.
//!
//! Nothing here touches a socket or reads a clock: the shard (`src/relay/shard.rs`) passes
//! in the client's address, the query arguments it sent and the unix time, and gets back
//! `Ok` or a [`Denial`] that says which rule refused and why. A callback becomes a request
//! value that the driver (`src/net/callback_client.rs`) performs; its answer comes back as
//! a [`callback::CallbackAnswer`] that [`callback::verdict`] turns into a decision.
//!
//! Secrets stay out of logs by construction: a [`Denial`]'s text never includes what the
//! client sent, and [`query::redact_url`] hides the values of `key`, `sig` and `token`
//! wherever a URL must be shown.

pub mod callback;
pub mod keys;
pub mod network_rules;
pub mod query;
pub mod signed_link;

use std::net::IpAddr;

use crate::config::AuthConfig;
use query::QueryArgs;

/// What a client asks to do with a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Publish,
    Play,
}

impl Action {
    /// The word signed links sign, and logs show.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Play => "play",
        }
    }
}

/// Which rule refused a client. Each is its own `reason` label of
/// `shardcast_connections_rejected_total`, so an operator can tell a misconfigured encoder
/// (`bad_key`) from an attack (`address_denied`) from an outage of their backend
/// (`callback_failed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DenialKind {
    AddressDenied,
    BadKey,
    BadSignature,
    LinkExpired,
    CallbackRefused,
    CallbackFailed,
    /// Too many callbacks already in flight on the shard.
    CallbackOverloaded,
}

/// A refusal, with a reason fit for a log line: it names the rule, never a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    pub kind: DenialKind,
    pub why: String,
}

impl Denial {
    pub fn new(kind: DenialKind, why: impl Into<String>) -> Denial {
        Denial {
            kind,
            why: why.into(),
        }
    }
}

/// What the rules that need no outside service look at.
#[derive(Clone, Copy, Debug)]
pub struct AccessRequest<'a> {
    pub action: Action,
    pub app: &'a str,
    /// The stream's name, without its query.
    pub stream: &'a str,
    /// The query arguments of the stream name and of the tcUrl.
    pub args: &'a QueryArgs,
    pub peer: IpAddr,
    /// Seconds since the unix epoch, as the driver read the wall clock.
    pub unix_now: u64,
}

/// Applies the network rules, the stream keys and the signed links of `auth`, in that
/// order (cheapest first). Callbacks are the shard's to start, after these passed.
pub fn check(auth: &AuthConfig, request: &AccessRequest<'_>) -> Result<(), Denial> {
    let (allow, deny) = match request.action {
        Action::Publish => (&auth.allow_publish, &auth.deny_publish),
        Action::Play => (&auth.allow_play, &auth.deny_play),
    };
    network_rules::check(allow, deny, request.peer)?;
    let table = match request.action {
        Action::Publish => &auth.publish_keys,
        Action::Play => &auth.play_keys,
    };
    keys::check(table, request.stream, request.args.get("key"))?;
    let signed = match request.action {
        Action::Publish => auth.sign_publish,
        Action::Play => auth.sign_play,
    };
    if signed {
        signed_link::verify(
            auth.secret.as_bytes(),
            request.action,
            request.app,
            request.stream,
            request.args,
            request.unix_now,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(action: Action, args: &'a QueryArgs, peer: &str) -> AccessRequest<'a> {
        AccessRequest {
            action,
            app: "live",
            stream: "demo",
            args,
            peer: peer.parse().unwrap(),
            unix_now: 1_000,
        }
    }

    #[test]
    fn an_empty_auth_table_allows_everything() {
        let auth = AuthConfig::default();
        let args = QueryArgs::default();
        assert_eq!(
            check(&auth, &request(Action::Publish, &args, "10.0.0.1")),
            Ok(())
        );
    }

    #[test]
    fn network_rules_come_before_keys() {
        let mut auth = AuthConfig::default();
        auth.publish_keys.insert("demo".into(), "s3cret".into());
        auth.deny_publish.push("10.0.0.0/8".parse().unwrap());
        let args = QueryArgs::parse("key=s3cret");
        let denied = check(&auth, &request(Action::Publish, &args, "10.1.2.3")).unwrap_err();
        assert_eq!(denied.kind, DenialKind::AddressDenied);
        assert_eq!(
            check(&auth, &request(Action::Publish, &args, "192.168.1.1")),
            Ok(())
        );
        // Play has its own lists and keys: none here.
        assert_eq!(
            check(
                &auth,
                &request(Action::Play, &QueryArgs::default(), "10.1.2.3")
            ),
            Ok(())
        );
    }

    #[test]
    fn a_signed_play_link_cannot_publish() {
        let mut auth = AuthConfig {
            secret: "topsecret".into(),
            sign_publish: true,
            sign_play: true,
            ..AuthConfig::default()
        };
        auth.callback_timeout_ms = 5000;
        let sig = signed_link::signature(b"topsecret", Action::Play, "live", "demo", 2_000);
        let args = QueryArgs::parse(&format!("exp=2000&sig={sig}"));
        assert_eq!(check(&auth, &request(Action::Play, &args, "::1")), Ok(()));
        let denied = check(&auth, &request(Action::Publish, &args, "::1")).unwrap_err();
        assert_eq!(denied.kind, DenialKind::BadSignature);
    }
}
