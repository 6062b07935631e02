//! The query arguments a client puts after `?` in its stream name or tcUrl, and how to show
//! a URL without the secrets in it.
//!
//! RTMP has no place for credentials, so every server reads them from the URL:
//! `rtmp://host/live/demo?key=s3cret`, where OBS's "stream key" field holds `demo?key=s3cret`.
//! The same URL is what ends up in logs and dashboards, so anything that shows one goes
//! through [`redact_url`] first. Parsing is `form_urlencoded`'s (the WHATWG rules), capped:
//! the query is peer input, so it gets no more memory than [`MAX_QUERY_BYTES`] and
//! [`MAX_ARGS`] arguments allow.

use std::borrow::Cow;

/// A longer query is cut here before parsing: no legitimate link needs more.
pub const MAX_QUERY_BYTES: usize = 4096;
/// Arguments past this many are ignored.
pub const MAX_ARGS: usize = 64;
/// Arguments whose values are credentials: never logged, never shown.
pub const SECRET_ARGS: [&str; 3] = ["key", "sig", "token"];

/// Query arguments in the order the client sent them. A name sent twice keeps its first
/// value for [`QueryArgs::get`] (so a later duplicate cannot override a checked one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryArgs(Vec<(String, String)>);

impl QueryArgs {
    pub fn parse(query: &str) -> QueryArgs {
        let mut args = QueryArgs::default();
        args.extend_from(query);
        args
    }

    /// Adds the arguments of `query` after the ones already here.
    pub fn extend_from(&mut self, query: &str) {
        let query = truncate(query.strip_prefix('?').unwrap_or(query), MAX_QUERY_BYTES);
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            if self.0.len() >= MAX_ARGS {
                break;
            }
            self.0.push((name.into_owned(), value.into_owned()));
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The part of `url` after its first `?`, or "".
pub fn query_of(url: &str) -> &str {
    url.split_once('?').map_or("", |(_, q)| q)
}

/// `url` with the values of [`SECRET_ARGS`] replaced by `***`; a URL without a query
/// comes back as it was.
pub fn redact_url(url: &str) -> Cow<'_, str> {
    let Some((base, query)) = url.split_once('?') else {
        return Cow::Borrowed(url);
    };
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (name, value) in form_urlencoded::parse(truncate(query, MAX_QUERY_BYTES).as_bytes()) {
        if SECRET_ARGS.contains(&name.as_ref()) {
            out.append_pair(&name, "***");
        } else {
            out.append_pair(&name, &value);
        }
    }
    Cow::Owned(format!("{base}?{}", out.finish()))
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_obs_sends() {
        let args = QueryArgs::parse("key=s3cret&exp=17&name=a%20b+c");
        assert_eq!(args.get("key"), Some("s3cret"));
        assert_eq!(args.get("exp"), Some("17"));
        assert_eq!(args.get("name"), Some("a b c"));
        assert_eq!(args.get("sig"), None);
    }

    #[test]
    fn the_first_of_two_values_wins() {
        let mut args = QueryArgs::parse("key=stream");
        args.extend_from("?key=tcurl&token=t");
        assert_eq!(args.get("key"), Some("stream"));
        assert_eq!(args.get("token"), Some("t"));
    }

    #[test]
    fn hostile_queries_are_capped() {
        let long = "a=b&".repeat(10_000);
        assert_eq!(QueryArgs::parse(&long).iter().count(), MAX_ARGS);
        let huge = format!("key={}", "é".repeat(MAX_QUERY_BYTES));
        let args = QueryArgs::parse(&huge);
        assert!(args.get("key").unwrap().len() <= MAX_QUERY_BYTES);
        assert!(QueryArgs::parse("&&=&%ff%fe=\u{0}").iter().count() <= 3);
    }

    #[test]
    fn redacts_secrets_and_keeps_the_rest() {
        assert_eq!(
            redact_url("rtmp://h/live?key=s3cret&exp=5&sig=abc&token=t%20x"),
            "rtmp://h/live?key=***&exp=5&sig=***&token=***"
        );
        assert_eq!(redact_url("rtmp://h/live"), "rtmp://h/live");
        assert_eq!(query_of("rtmp://h/live?a=1"), "a=1");
        assert_eq!(query_of("rtmp://h/live"), "");
    }
}
