//! HTTP callbacks, compatible with nginx-rtmp's `on_connect`, `on_publish`, `on_play`,
//! `on_publish_done` and `on_play_done` notifications.
//!
//! A backend that already answers nginx-rtmp works unchanged: it gets a POST of
//! `application/x-www-form-urlencoded` fields (`call`, `addr`, `clientid`, `app`, `name`,
//! `tcurl`, `flashver`, `pageurl`, `type` for publish, `start` and `duration` for play, and
//! every query argument of the client's URL), and its status decides: `2xx` allows, `3xx`
//! with a `Location` renames the stream, anything else refuses, and so does no answer at
//! all within `callback_timeout_ms` (a backend that is down must not open the door).
//!
//! This module is the request and the verdict only. A shard must never wait on a network
//! call, so it hands a [`CallbackRequest`] to its driver (`src/net/callback_client.rs`),
//! keeps the client waiting meanwhile, and gets the [`CallbackAnswer`] back as an input.

use std::net::IpAddr;
use std::time::Duration;

use hyper::Uri;

use super::query::QueryArgs;
use super::{Denial, DenialKind};

/// How many callbacks one shard waits for at once; a client beyond that is refused
/// (`callback_overloaded`) rather than queued, so a slow backend cannot make a shard hold
/// an unbounded crowd of half-connected clients.
pub const MAX_IN_FLIGHT_PER_SHARD: usize = 256;

/// Which notification, by nginx-rtmp's `call` field value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Connect,
    Publish,
    Play,
    PublishDone,
    PlayDone,
}

impl Call {
    pub fn as_str(self) -> &'static str {
        match self {
            Call::Connect => "connect",
            Call::Publish => "publish",
            Call::Play => "play",
            Call::PublishDone => "publish_done",
            Call::PlayDone => "play_done",
        }
    }

    /// Whether the answer decides anything (the `_done` calls only inform).
    pub fn decides(self) -> bool {
        matches!(self, Call::Connect | Call::Publish | Call::Play)
    }
}

/// A callback for the driver to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallbackRequest {
    pub call: Call,
    /// An `http://` URL (checked when the config was read).
    pub url: String,
    /// The form body.
    pub body: String,
    pub timeout: Duration,
}

/// What the fields of a notification are made of.
#[derive(Clone, Copy, Debug)]
pub struct Notice<'a> {
    pub call: Call,
    pub addr: IpAddr,
    pub client_id: u64,
    pub app: &'a str,
    /// The stream name without its query ("" for `connect`).
    pub name: &'a str,
    pub tc_url: &'a str,
    pub flash_ver: &'a str,
    pub page_url: &'a str,
    /// Play's `start` and `duration` arguments.
    pub play_range: Option<(f64, f64)>,
    pub args: &'a QueryArgs,
}

impl Notice<'_> {
    /// The form body, in nginx-rtmp's field order and spelling.
    pub fn form(&self) -> String {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("call", self.call.as_str())
            .append_pair("addr", &self.addr.to_canonical().to_string())
            .append_pair("clientid", &self.client_id.to_string())
            .append_pair("app", self.app)
            .append_pair("flashver", self.flash_ver)
            .append_pair("swfurl", "")
            .append_pair("tcurl", self.tc_url)
            .append_pair("pageurl", self.page_url);
        if self.call != Call::Connect {
            form.append_pair("name", self.name);
        }
        if matches!(self.call, Call::Publish | Call::PublishDone) {
            form.append_pair("type", "live");
        }
        if let Some((start, duration)) = self.play_range {
            form.append_pair("start", &format_number(start))
                .append_pair("duration", &format_number(duration))
                .append_pair("reset", "0");
        }
        for (name, value) in self.args.iter() {
            form.append_pair(name, value);
        }
        form.finish()
    }

    pub fn request(&self, url: &str, timeout: Duration) -> CallbackRequest {
        CallbackRequest {
            call: self.call,
            url: url.to_owned(),
            body: self.form(),
            timeout,
        }
    }
}

/// AMF numbers are doubles; nginx-rtmp prints them as integers.
fn format_number(value: f64) -> String {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        "0".to_owned()
    }
}

/// What the driver learned from the backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallbackAnswer {
    /// The backend answered with this status (and `Location`, if it sent one).
    Status { code: u16, location: Option<String> },
    /// No answer: connection refused, a broken response, or the timeout. The text says
    /// which, for the log.
    Failed(String),
}

/// What an answer means for the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Publish or play this name (of the same application) instead.
    Rename(String),
    Deny(Denial),
}

/// The longest name a `Location` may rename a stream to.
pub const MAX_RENAMED_LEN: usize = 256;

pub fn verdict(answer: &CallbackAnswer) -> Verdict {
    match answer {
        CallbackAnswer::Failed(why) => Verdict::Deny(Denial::new(
            DenialKind::CallbackFailed,
            format!("the callback failed: {why}"),
        )),
        CallbackAnswer::Status { code, .. } if (200..300).contains(code) => Verdict::Allow,
        CallbackAnswer::Status {
            code,
            location: Some(location),
        } if (300..400).contains(code) => match renamed(location) {
            Some(name) => Verdict::Rename(name.to_owned()),
            None => Verdict::Deny(Denial::new(
                DenialKind::CallbackRefused,
                format!(
                    "the callback answered {code} with a Location that is not a plain stream name (redirects to another server are not supported)"
                ),
            )),
        },
        CallbackAnswer::Status { code, .. } => Verdict::Deny(Denial::new(
            DenialKind::CallbackRefused,
            format!("the callback answered {code}"),
        )),
    }
}

/// The stream name a `Location` renames to, if it is a plain one: not a URL, no path, no
/// query, nothing a log or an RTMP command would mangle.
fn renamed(location: &str) -> Option<&str> {
    let name = location.trim();
    let name = name.strip_prefix('/').unwrap_or(name);
    let plain = !name.is_empty()
        && name.len() <= MAX_RENAMED_LEN
        && !name.contains("://")
        && !name
            .chars()
            .any(|c| matches!(c, '/' | '?' | '#' | '\\') || c.is_whitespace() || c.is_control());
    plain.then_some(name)
}

/// Checks a configured callback URL: `http://host[:port]/path`. (No `https://`: the
/// relay has no TLS client; put the backend on a private address.)
pub fn check_url(url: &str) -> Result<(), String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "{url:?} must start with http:// (https is not supported)"
        ));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{url:?} has no host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_has_nginx_rtmp_fields_and_the_client_args() {
        let args = QueryArgs::parse("key=s3cret&user=ann%20b");
        let notice = Notice {
            call: Call::Publish,
            addr: "::ffff:10.0.0.7".parse().unwrap(),
            client_id: 42,
            app: "live",
            name: "demo",
            tc_url: "rtmp://h/live",
            flash_ver: "FMLE/3.0",
            page_url: "",
            play_range: None,
            args: &args,
        };
        let fields: Vec<(String, String)> = form_urlencoded::parse(notice.form().as_bytes())
            .into_owned()
            .collect();
        let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("call"), Some("publish"));
        assert_eq!(get("addr"), Some("10.0.0.7"));
        assert_eq!(get("clientid"), Some("42"));
        assert_eq!(get("app"), Some("live"));
        assert_eq!(get("name"), Some("demo"));
        assert_eq!(get("type"), Some("live"));
        assert_eq!(get("tcurl"), Some("rtmp://h/live"));
        assert_eq!(get("flashver"), Some("FMLE/3.0"));
        assert_eq!(get("pageurl"), Some(""));
        assert_eq!(get("key"), Some("s3cret"));
        assert_eq!(get("user"), Some("ann b"));
        assert_eq!(get("start"), None);
    }

    #[test]
    fn play_sends_start_and_duration() {
        let args = QueryArgs::default();
        let notice = Notice {
            call: Call::Play,
            addr: "127.0.0.1".parse().unwrap(),
            client_id: 1,
            app: "live",
            name: "demo",
            tc_url: "",
            flash_ver: "",
            page_url: "",
            play_range: Some((-2.0, -1.0)),
            args: &args,
        };
        let form = notice.form();
        assert!(form.contains("start=-2&duration=-1"), "{form}");
        assert!(!form.contains("type="), "{form}");
    }

    #[test]
    fn answers_decide() {
        let status = |code, location: Option<&str>| CallbackAnswer::Status {
            code,
            location: location.map(str::to_owned),
        };
        assert_eq!(verdict(&status(200, None)), Verdict::Allow);
        assert_eq!(verdict(&status(204, None)), Verdict::Allow);
        assert_eq!(
            verdict(&status(302, Some("renamed"))),
            Verdict::Rename("renamed".into())
        );
        assert_eq!(
            verdict(&status(301, Some("/renamed"))),
            Verdict::Rename("renamed".into())
        );
        for (answer, kind) in [
            (status(302, None), DenialKind::CallbackRefused),
            (
                status(302, Some("rtmp://other/live/x")),
                DenialKind::CallbackRefused,
            ),
            (status(302, Some("a/b")), DenialKind::CallbackRefused),
            (status(302, Some("")), DenialKind::CallbackRefused),
            (status(403, None), DenialKind::CallbackRefused),
            (status(500, None), DenialKind::CallbackRefused),
            (status(100, None), DenialKind::CallbackRefused),
            (
                CallbackAnswer::Failed("timed out".into()),
                DenialKind::CallbackFailed,
            ),
        ] {
            match verdict(&answer) {
                Verdict::Deny(d) => assert_eq!(d.kind, kind, "{answer:?}"),
                other => panic!("{answer:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn only_plain_http_urls_are_accepted() {
        assert!(check_url("http://127.0.0.1:8000/on_publish").is_ok());
        assert!(check_url("http://auth.internal/cb?x=1").is_ok());
        for bad in ["https://a/b", "ftp://a", "/relative", "", "http://"] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }
}
