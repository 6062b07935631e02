//! Configuration from the environment: every key of the file can be set by a variable named
//! `SHARDCAST_` + its dotted path in upper case with `_` for the dots, as SRS (`SRS_*`) and
//! MediaMTX (`MTX_*`) do, so a container can be configured without writing a file:
//!
//! | variable | key |
//! | --- | --- |
//! | `SHARDCAST_SERVER_LISTEN=0.0.0.0:1935` | `server.listen` |
//! | `SHARDCAST_SERVER_NODE_ID=edge-7` | `server.node_id` |
//! | `SHARDCAST_APP_LIVE_GOP_CACHE=false` | `app.live.gop_cache` |
//! | `SHARDCAST_APP_LIVE_AUTH_PUBLISH_KEYS=cam1=s3cret,cam2=other` | `app.live.auth.publish_keys` |
//! | `SHARDCAST_APP_TV_PULL=rtmp://a:1935/tv,rtmp://b:1935/tv` | `app.tv.pull` |
//!
//! # Names
//!
//! Key names hold underscores themselves (`max_hops`, `gop_cache_max_ms`), so a name is not
//! split at every `_`: it is matched against the keys that exist. The schema is the shipped
//! `config/shardcast.toml`, which writes every key (a test in `config.rs` keeps it so), so a
//! key added there is settable from the environment with nothing more to do. After `APP_`
//! comes the application's name: an application the file names is matched without regard to
//! case, with `_` for any other character (`SHARDCAST_APP_LIVE_*` sets `[app.Live]`,
//! `SHARDCAST_APP_LIVE_HD_*` `[app."live-hd"]`), and one the file does not name is created
//! under the lower-case name, when only one reading of the variable is possible. Where two are
//! (`SHARDCAST_APP_X_AUTH_ALLOW_PLAY`: `app.x.auth.allow_play` or `app.x_auth.allow_play`),
//! the one whose application exists, in the file or in another variable, wins; otherwise it is
//! an error. As in the file, naming any application replaces the default `live`.
//!
//! An unknown `SHARDCAST_*` variable is an error naming it: a typo must not be ignored. The
//! exceptions are [`NOT_CONFIG_VARIABLES`] and the variables Kubernetes and Docker links
//! define for a service whose name starts with `shardcast` (`SHARDCAST_ORIGIN_SERVICE_HOST`,
//! `SHARDCAST_ORIGIN_PORT_1935_TCP_ADDR`, ...).
//!
//! # Values
//!
//! A value is read as TOML when it parses as the key's type (`8`, `true`, `["a", "b"]`,
//! `"quoted"`), and as a plain string otherwise. A list key also takes comma-separated items
//! (`rtmp://a/live,rtmp://b/live`, `0,1,2`; each item a TOML number or boolean or quoted
//! string, else a plain string; an empty value is an empty list), and a table key (the stream
//! keys) `name=value` pairs separated by commas, or a TOML inline table.
//!
//! The values are put into the parsed document before it is deserialized, so they are checked
//! exactly as the file's are, and an error names the variable. The values of keys that may hold
//! secrets are replaced by `***` in error messages, and nothing here logs a value.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

use super::ConfigError;

/// Every configuration variable starts with this.
pub const PREFIX: &str = "SHARDCAST_";

/// `SHARDCAST_*` variables that are not configuration (read by `benches/fanout.sh`), so a relay
/// started from a shell that set them does not refuse to start.
pub const NOT_CONFIG_VARIABLES: &[&str] = &[
    "SHARDCAST_BIN",
    "SHARDCAST_BEFORE_BIN",
    "SHARDCAST_BEFORE_LABEL",
];

/// The shipped file, every key written with its default: the names and types of the keys.
const SCHEMA: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/config/shardcast.toml"
));

/// Keys that are read but not written in the shipped file (deprecated names).
const UNWRITTEN_APP_KEYS: &[(&str, Kind)] = &[("recordings_dir", Kind::String)];

/// The top-level tables other than `app`.
const SECTIONS: &[&str] = &["server", "viewer", "log", "admin", "http"];

/// Keys whose values may carry a secret (tokens, stream keys, URLs with `?key=`).
const SENSITIVE_KEYS: &[&str] = &[
    "token",
    "secret",
    "publish_keys",
    "play_keys",
    "pull",
    "push",
    "on_connect",
    "on_publish",
    "on_play",
    "on_publish_done",
    "on_play_done",
    "on_record_done",
    "reconnect_tc_url",
];

/// The `SHARDCAST_*` variables of the process, for [`super::Config::load_with_env`]. A
/// variable whose name or value is not UTF-8 is an error naming it.
pub fn process_environment() -> Result<Vec<(String, String)>, ConfigError> {
    let mut variables = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str().map(str::to_owned) else {
            continue;
        };
        if !name.starts_with(PREFIX) {
            continue;
        }
        match value.into_string() {
            Ok(value) => variables.push((name, value)),
            Err(_) => {
                return Err(invalid(&name, None, "the value is not valid UTF-8".into()));
            }
        }
    }
    Ok(variables)
}

/// The configuration variables among `environment`, sorted by name.
pub(super) fn config_variables<K, V>(
    environment: impl IntoIterator<Item = (K, V)>,
) -> Vec<(String, String)>
where
    K: Into<String>,
    V: Into<String>,
{
    let mut variables: Vec<(String, String)> = environment
        .into_iter()
        .map(|(name, value)| (name.into(), value.into()))
        .filter(|(name, _)| name.starts_with(PREFIX) && !NOT_CONFIG_VARIABLES.contains(&&**name))
        .collect();
    variables.sort();
    variables
}

/// The type of a key, read off its default in the shipped file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    String,
    Integer,
    Float,
    Boolean,
    Array,
    Table,
}

impl Kind {
    fn of(value: &toml::Value) -> Kind {
        match value {
            toml::Value::String(_) | toml::Value::Datetime(_) => Kind::String,
            toml::Value::Integer(_) => Kind::Integer,
            toml::Value::Float(_) => Kind::Float,
            toml::Value::Boolean(_) => Kind::Boolean,
            toml::Value::Array(_) => Kind::Array,
            toml::Value::Table(_) => Kind::Table,
        }
    }

    fn accepts(self, value: &DeValue<'_>) -> bool {
        matches!(
            (self, value),
            (Kind::String, DeValue::String(_))
                | (Kind::Integer, DeValue::Integer(_))
                | (Kind::Float, DeValue::Float(_) | DeValue::Integer(_))
                | (Kind::Boolean, DeValue::Boolean(_))
                | (Kind::Array, DeValue::Array(_))
                | (Kind::Table, DeValue::Table(_))
        )
    }
}

/// The known keys: per section, per application, per application's `auth`.
struct Schema {
    sections: Vec<(&'static str, Vec<(String, Kind)>)>,
    app: Vec<(String, Kind)>,
    auth: Vec<(String, Kind)>,
}

impl Schema {
    fn shipped() -> Schema {
        let document: toml::Table = SCHEMA.parse().expect("config/shardcast.toml is TOML");
        let keys = |table: Option<&toml::Value>, skip: &str| -> Vec<(String, Kind)> {
            table
                .and_then(toml::Value::as_table)
                .map(|table| {
                    table
                        .iter()
                        .filter(|(name, _)| *name != skip)
                        .map(|(name, value)| (name.clone(), Kind::of(value)))
                        .collect()
                })
                .unwrap_or_default()
        };
        let live = document.get("app").and_then(|apps| apps.get("live"));
        let mut app = keys(live, "auth");
        app.extend(
            UNWRITTEN_APP_KEYS
                .iter()
                .map(|(name, kind)| ((*name).to_owned(), *kind)),
        );
        Schema {
            sections: SECTIONS
                .iter()
                .map(|section| (*section, keys(document.get(*section), "")))
                .collect(),
            app,
            auth: keys(live.and_then(|live| live.get("auth")), ""),
        }
    }
}

fn kind_in(keys: &[(String, Kind)], name: &str) -> Option<Kind> {
    keys.iter()
        .find(|(key, _)| key == name)
        .map(|(_, kind)| *kind)
}

/// One variable, mapped to its key.
struct Override {
    variable: String,
    value: String,
    /// Where this variable's spans lie: past the end of the file's text, after the variables
    /// before it. The key's span is the first offset; the value's spans are the value's
    /// offsets shifted by `region.start + 1`.
    region: Range<usize>,
}

/// The configuration variables of one load, mapped to keys, or the error to report.
pub(super) struct Overrides {
    entries: Vec<Override>,
}

/// A reading of a variable under `APP_`: the application's name and the key path after it.
struct AppReading {
    name: String,
    key: Vec<String>,
    kind: Kind,
}

impl Overrides {
    pub(super) fn none() -> Overrides {
        Overrides {
            entries: Vec::new(),
        }
    }

    /// Maps `variables` (as [`config_variables`] returns them) for a file of `text_len` bytes.
    /// The names are mapped to keys by [`Overrides::apply`], which knows the file's
    /// applications.
    pub(super) fn new(text_len: usize, variables: Vec<(String, String)>) -> Overrides {
        let mut next = text_len + 1;
        let entries = variables
            .into_iter()
            .map(|(variable, value)| {
                // Room for the key's offset and the value's (the value plus its quotes).
                let region = next..next + value.len() + 3;
                next = region.end;
                Override {
                    variable,
                    value,
                    region,
                }
            })
            .collect();
        Overrides { entries }
    }

    /// Whether `offset` lies in a variable's region, i.e. the key or value there came from
    /// the environment.
    pub(super) fn owns(&self, offset: usize) -> bool {
        self.owner(offset).is_some()
    }

    fn owner(&self, offset: usize) -> Option<&Override> {
        self.entries
            .iter()
            .find(|entry| entry.region.contains(&offset))
    }

    /// Puts every variable's value into `document`, replacing the file's value of that key.
    pub(super) fn apply<'a>(&'a self, document: &mut DeTable<'a>) -> Result<(), ConfigError> {
        let entries = &self.entries;
        if entries.is_empty() {
            return Ok(());
        }
        let mapped = map_names(entries, document)?;
        for (entry, (path, kind)) in entries.iter().zip(mapped) {
            let value = parse_value(&entry.value, kind, entry.region.start + 1)
                .map_err(|reason| invalid(&entry.variable, Some(&path), reason))?;
            insert(document, &path, value, entry)?;
        }
        Ok(())
    }

    /// Names the variable in `error` when `offset` (where the error is) lies in one's region,
    /// hiding the value of a sensitive key.
    pub(super) fn attribute(&self, error: ConfigError, offset: Option<usize>) -> ConfigError {
        let Some(entry) = offset.and_then(|offset| self.owner(offset)) else {
            return error;
        };
        match error {
            ConfigError::Invalid { key, reason, .. } => {
                let sensitive = key.as_deref().is_some_and(is_sensitive);
                let reason = if sensitive {
                    redact(&reason, &entry.value)
                } else {
                    reason
                };
                ConfigError::Invalid {
                    key,
                    reason,
                    line: None,
                    file: None,
                    variable: Some(entry.variable.clone()),
                }
            }
            read @ ConfigError::Read { .. } => read,
        }
    }
}

fn invalid(variable: &str, path: Option<&[String]>, reason: String) -> ConfigError {
    ConfigError::Invalid {
        key: path.map(dotted),
        reason,
        line: None,
        file: None,
        variable: Some(variable.to_owned()),
    }
}

fn dotted(path: &[String]) -> String {
    let mut key = super::KeyPath::default();
    key.0
        .extend(path.iter().map(|name| super::Segment::Key(name.clone())));
    key.to_string()
}

/// Whether the key at the dotted path `key` may hold a secret.
fn is_sensitive(key: &str) -> bool {
    // `app.live.auth.publish_keys.cam1` and `app.live.push[0]` are inside sensitive keys.
    key.split(['.', '['])
        .any(|segment| SENSITIVE_KEYS.contains(&segment.trim_matches('"')))
}

/// `reason` with everything quoted in it (`"..."` or `` `...` ``, where serde and the checks
/// put values) replaced by `***`, and the value, and each of its comma-separated parts, too
/// where written bare, if long enough not to be a common word.
fn redact(reason: &str, value: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut rest = reason;
    while let Some(open) = rest.find(['"', '`']) {
        let quote = &rest[open..=open];
        out.push_str(&rest[..=open]);
        rest = &rest[open + 1..];
        match rest.find(quote) {
            Some(close) => {
                out.push_str("***");
                out.push_str(quote);
                rest = &rest[close + 1..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    let mut pieces: Vec<&str> = value
        .split(',')
        .flat_map(|item| [item, item.split_once('=').map_or(item, |(_, v)| v)])
        .chain([value])
        .map(|piece| piece.trim_matches(|c: char| c.is_whitespace() || "{}[]\"'".contains(c)))
        .filter(|piece| piece.len() >= 6)
        .collect();
    // Longest first, so a part of a longer piece does not break it up before it is found.
    pieces.sort_by_key(|piece| std::cmp::Reverse(piece.len()));
    for piece in pieces {
        out = out.replace(piece, "***");
    }
    out
}

/// Maps each variable to its key path in `document` and the key's type.
fn map_names(
    entries: &[Override],
    document: &DeTable<'_>,
) -> Result<Vec<(Vec<String>, Kind)>, ConfigError> {
    let schema = Schema::shipped();
    let file_apps: Vec<String> = document
        .iter()
        .find(|(key, _)| key.get_ref() == "app")
        .and_then(|(_, apps)| apps.get_ref().as_table())
        .map(|apps| {
            apps.iter()
                .map(|(name, _)| name.get_ref().to_string())
                .collect()
        })
        .unwrap_or_default();
    // A variable's name has only letters, digits and `_`: `APP_LIVE_HD_` names
    // `[app."live-hd"]` too.
    let normalized = |name: &str| -> String {
        name.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect()
    };
    let file_app = |name: &str| -> Vec<&String> {
        file_apps
            .iter()
            .filter(|app| normalized(app) == name)
            .collect()
    };
    enum Mapped {
        Done(Vec<String>, Kind),
        Undecided(Vec<AppReading>),
    }
    let mut mapped = Vec::new();
    // Applications created by variables that have only one reading.
    let mut new_apps = BTreeSet::new();
    for entry in entries {
        let name = entry.variable[PREFIX.len()..].to_ascii_lowercase();
        if let Some((section, key)) = name.split_once('_')
            && let Some((section, keys)) = schema.sections.iter().find(|(s, _)| *s == section)
        {
            match kind_in(keys, key) {
                Some(kind) => {
                    mapped.push(Mapped::Done(
                        vec![(*section).to_owned(), key.to_owned()],
                        kind,
                    ));
                    continue;
                }
                None if is_service_link(&entry.variable, &entry.value) => {
                    mapped.push(Mapped::Undecided(Vec::new()));
                    continue;
                }
                None => return Err(unknown(entry, Some(section))),
            }
        }
        let readings = name
            .strip_prefix("app_")
            .map(|rest| app_readings(rest, &schema))
            .unwrap_or_default();
        if readings.is_empty() {
            if is_service_link(&entry.variable, &entry.value) {
                mapped.push(Mapped::Undecided(Vec::new()));
                continue;
            }
            return Err(unknown(entry, None));
        }
        let existing: Vec<(&AppReading, &String)> = readings
            .iter()
            .flat_map(|reading| {
                file_app(&reading.name)
                    .into_iter()
                    .map(move |app| (reading, app))
            })
            .collect();
        match existing.as_slice() {
            [(reading, app)] => {
                mapped.push(Mapped::Done(app_path(app, &reading.key), reading.kind))
            }
            [] if readings.len() == 1 => {
                let reading = &readings[0];
                new_apps.insert(reading.name.clone());
                mapped.push(Mapped::Done(
                    app_path(&reading.name, &reading.key),
                    reading.kind,
                ));
            }
            [] => mapped.push(Mapped::Undecided(readings)),
            _ => return Err(ambiguous(entry, &readings)),
        }
    }
    let mut result = Vec::new();
    for (entry, mapped) in entries.iter().zip(mapped) {
        match mapped {
            Mapped::Done(path, kind) => result.push((path, kind)),
            // A service link: a path no key has, skipped by `insert`.
            Mapped::Undecided(readings) if readings.is_empty() => {
                result.push((Vec::new(), Kind::String))
            }
            Mapped::Undecided(readings) => {
                let known: Vec<&AppReading> = readings
                    .iter()
                    .filter(|reading| new_apps.contains(&reading.name))
                    .collect();
                match known.as_slice() {
                    [reading] => result.push((app_path(&reading.name, &reading.key), reading.kind)),
                    _ => return Err(ambiguous(entry, &readings)),
                }
            }
        }
    }
    Ok(result)
}

fn app_path(app: &str, key: &[String]) -> Vec<String> {
    let mut path = vec!["app".to_owned(), app.to_owned()];
    path.extend(key.iter().cloned());
    path
}

/// Every way to split `rest` (what follows `app_`, in lower case) into an application name and
/// a known key of an application or of its `auth`.
fn app_readings(rest: &str, schema: &Schema) -> Vec<AppReading> {
    let mut readings = Vec::new();
    for (at, _) in rest.match_indices('_') {
        let (name, key) = (&rest[..at], &rest[at + 1..]);
        if name.is_empty() {
            continue;
        }
        if let Some(kind) = kind_in(&schema.app, key) {
            readings.push(AppReading {
                name: name.to_owned(),
                key: vec![key.to_owned()],
                kind,
            });
        }
        if let Some(auth_key) = key.strip_prefix("auth_")
            && let Some(kind) = kind_in(&schema.auth, auth_key)
        {
            readings.push(AppReading {
                name: name.to_owned(),
                key: vec!["auth".to_owned(), auth_key.to_owned()],
                kind,
            });
        }
    }
    readings
}

/// The variables Kubernetes (and Docker links) define for a service named `shardcast-*`:
/// `{NAME}_SERVICE_HOST`, `{NAME}_SERVICE_PORT`, `{NAME}_SERVICE_PORT_{PORT_NAME}`,
/// `{NAME}_PORT` (a `tcp://` URL), `{NAME}_PORT_{N}_{PROTO}`,
/// `{NAME}_PORT_{N}_{PROTO}_{PROTO|PORT|ADDR}`.
fn is_service_link(variable: &str, value: &str) -> bool {
    if variable.ends_with("_SERVICE_HOST")
        || variable.ends_with("_SERVICE_PORT")
        || variable.contains("_SERVICE_PORT_")
    {
        return true;
    }
    if variable.ends_with("_PORT") {
        return ["tcp://", "udp://", "sctp://"]
            .iter()
            .any(|scheme| value.starts_with(scheme));
    }
    let parts: Vec<&str> = variable.split('_').collect();
    parts.windows(3).enumerate().any(|(at, window)| {
        window[0] == "PORT"
            && !window[1].is_empty()
            && window[1].bytes().all(|b| b.is_ascii_digit())
            && matches!(window[2], "TCP" | "UDP" | "SCTP")
            && match &parts[at + 3..] {
                [] => true,
                [last] => matches!(*last, "PROTO" | "PORT" | "ADDR"),
                _ => false,
            }
    })
}

fn unknown(entry: &Override, section: Option<&str>) -> ConfigError {
    let reason = match section {
        Some(section) => format!(
            "not a configuration key: [{section}] has no such key (see config/shardcast.toml for the keys)"
        ),
        None => "not a configuration key: expected SHARDCAST_{SECTION}_{KEY} with a section of \
                 server, viewer, log, admin, http, or SHARDCAST_APP_{NAME}_{KEY} / \
                 SHARDCAST_APP_{NAME}_AUTH_{KEY}"
            .to_owned(),
    };
    invalid(&entry.variable, None, reason)
}

fn ambiguous(entry: &Override, readings: &[AppReading]) -> ConfigError {
    let readings: Vec<String> = readings
        .iter()
        .map(|reading| dotted(&app_path(&reading.name, &reading.key)))
        .collect();
    invalid(
        &entry.variable,
        None,
        format!(
            "could mean {}; name the application in the config file ([app.NAME]) to choose",
            readings.join(" or ")
        ),
    )
}

/// The value of a variable as a TOML value of `kind`, its spans shifted by `base`.
fn parse_value(raw: &str, kind: Kind, base: usize) -> Result<Spanned<DeValue<'_>>, String> {
    if let Ok(value) = DeValue::parse(raw)
        && kind.accepts(value.get_ref())
    {
        return Ok(shifted(value, base));
    }
    let whole = base..base + raw.len();
    match kind {
        Kind::Array => {
            let mut items = DeArray::new();
            for (range, item) in comma_items(raw) {
                let span = base + range.start..base + range.end;
                items.push(match DeValue::parse(item) {
                    Ok(value)
                        if matches!(
                            value.get_ref(),
                            DeValue::Integer(_)
                                | DeValue::Float(_)
                                | DeValue::Boolean(_)
                                | DeValue::String(_)
                        ) =>
                    {
                        shifted(value, span.start)
                    }
                    _ => Spanned::new(span, DeValue::String(Cow::Borrowed(item))),
                });
            }
            Ok(Spanned::new(whole, DeValue::Array(items)))
        }
        Kind::Table => {
            let mut table = DeTable::new();
            for (range, item) in comma_items(raw) {
                let Some((name, value)) = item.split_once('=') else {
                    return Err("expected name=value pairs separated by commas, or a TOML \
                                inline table ({ name = \"value\" })"
                        .to_owned());
                };
                let span = base + range.start..base + range.end;
                let (name, value) = (name.trim(), value.trim());
                table.insert(
                    Spanned::new(span.clone(), Cow::Borrowed(name)),
                    Spanned::new(span, DeValue::String(Cow::Borrowed(value))),
                );
            }
            Ok(Spanned::new(whole, DeValue::Table(table)))
        }
        _ => Ok(Spanned::new(whole, DeValue::String(Cow::Borrowed(raw)))),
    }
}

/// The non-empty comma-separated items of `raw`, trimmed, with their byte ranges.
fn comma_items(raw: &str) -> Vec<(Range<usize>, &str)> {
    let mut items = Vec::new();
    let mut start = 0;
    for piece in raw.split(',') {
        let trimmed = piece.trim();
        if !trimmed.is_empty() {
            let offset = start + (piece.len() - piece.trim_start().len());
            items.push((offset..offset + trimmed.len(), trimmed));
        }
        start += piece.len() + 1;
    }
    items
}

fn shifted(value: Spanned<DeValue<'_>>, by: usize) -> Spanned<DeValue<'_>> {
    let span = value.span();
    let span = span.start + by..span.end + by;
    let inner = match value.into_inner() {
        DeValue::Array(items) => {
            let mut out = DeArray::new();
            for item in items {
                out.push(shifted(item, by));
            }
            DeValue::Array(out)
        }
        DeValue::Table(table) => {
            let mut out = DeTable::new();
            for (key, item) in table {
                let key_span = key.span();
                out.insert(
                    Spanned::new(key_span.start + by..key_span.end + by, key.into_inner()),
                    shifted(item, by),
                );
            }
            DeValue::Table(out)
        }
        scalar => scalar,
    };
    Spanned::new(span, inner)
}

/// Sets `path` in `document` to `value`, creating the tables on the way; the keys created get
/// the variable's region as their span.
fn insert<'a>(
    document: &mut DeTable<'a>,
    path: &[String],
    value: Spanned<DeValue<'a>>,
    entry: &Override,
) -> Result<(), ConfigError> {
    let Some((key, tables)) = path.split_last() else {
        return Ok(()); // a service link, not configuration
    };
    let key_span = entry.region.start..entry.region.start + 1;
    let mut table = document;
    for (depth, name) in tables.iter().enumerate() {
        if table.get(name.as_str()).is_none() {
            table.insert(
                Spanned::new(key_span.clone(), Cow::Owned(name.clone())),
                Spanned::new(key_span.clone(), DeValue::Table(DeTable::new())),
            );
        }
        table = match table.get_mut(name.as_str()).map(Spanned::get_mut) {
            Some(DeValue::Table(inner)) => inner,
            _ => {
                return Err(invalid(
                    &entry.variable,
                    Some(path),
                    format!(
                        "the config file's {} is not a table",
                        dotted(&tables[..=depth])
                    ),
                ));
            }
        };
    }
    // Removed first: inserting over an equal key would keep the file's key and its span.
    table.remove(key.as_str());
    table.insert(Spanned::new(key_span, Cow::Owned(key.clone())), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{AppConfig, Config, ConfigError, RecordMode, Shards};
    use super::*;

    /// The config `text` with `environment` applied.
    fn with_env(text: &str, environment: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_toml_str_with_env(text, environment.iter().copied())
    }

    fn refused(text: &str, environment: &[(&str, &str)]) -> ConfigError {
        match with_env(text, environment) {
            Ok(_) => panic!("accepted {environment:?}"),
            Err(error) => error,
        }
    }

    #[test]
    fn config_env_sets_section_keys_of_every_type() {
        let config = with_env(
            "[server]\nlisten = \"0.0.0.0:1935\"\nmax_hops = 3\n",
            &[
                ("SHARDCAST_SERVER_LISTEN", "127.0.0.1:19350"),
                ("SHARDCAST_SERVER_MAX_HOPS", "5"),
                ("SHARDCAST_SERVER_NODE_ID", "edge-abc12"),
                ("SHARDCAST_SERVER_CPUS", "2,3"),
                ("SHARDCAST_SERVER_SHARDS", "2"),
                ("SHARDCAST_SERVER_TRUSTED_PROXIES", "[\"10.0.0.0/8\"]"),
                ("SHARDCAST_VIEWER_TCP_NODELAY", "true"),
                ("SHARDCAST_ADMIN_LISTEN", ""),
                ("SHARDCAST_ADMIN_TOKEN", "\"quoted-token\""),
                ("SHARDCAST_LOG_FORMAT", "json"),
                ("PATH", "/usr/bin"),
            ],
        )
        .unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:19350".parse().unwrap());
        assert_eq!(config.server.max_hops, 5);
        assert_eq!(config.server.node_id, "edge-abc12");
        assert_eq!(config.server.cpus, [2, 3]);
        assert_eq!(config.server.shards, Shards::Count(2));
        assert_eq!(config.server.trusted_proxies.len(), 1);
        assert!(config.viewer.tcp_nodelay);
        assert_eq!(config.admin.listen_addr(), None);
        assert_eq!(config.admin.token, "quoted-token");
        assert_eq!(config.log.format, super::super::LogFormat::Json);
        // Keys not overridden keep the file's values or the defaults.
        assert_eq!(config.server.chunk_size, 4096);
    }

    #[test]
    fn config_env_wins_over_the_file_and_leaves_the_rest_of_it() {
        let text = "[server]\nmax_hops = 3\nchunk_size = 8192\n[app.live]\ngop_cache = false\n";
        let config = with_env(text, &[("SHARDCAST_SERVER_MAX_HOPS", "9")]).unwrap();
        assert_eq!(config.server.max_hops, 9);
        assert_eq!(config.server.chunk_size, 8192);
        assert!(!config.app("live").unwrap().gop_cache);
        assert_eq!(
            Config::from_toml_str_with_env(text, Vec::<(String, String)>::new()).unwrap(),
            Config::from_toml_str(text).unwrap()
        );
    }

    #[test]
    fn config_env_sets_app_and_auth_keys() {
        let text = "[app.Live]\n[app.vod]\n[app.\"live-hd\"]\n";
        let config = with_env(
            text,
            &[
                ("SHARDCAST_APP_LIVE_GOP_CACHE_MAX_MS", "2000"),
                ("SHARDCAST_APP_LIVE_RECORD", "all"),
                ("SHARDCAST_APP_LIVE_RECORD_DIR", "/rec"),
                (
                    "SHARDCAST_APP_LIVE_AUTH_PUBLISH_KEYS",
                    "cam1=s3cret, cam2 = other",
                ),
                (
                    "SHARDCAST_APP_LIVE_AUTH_ALLOW_PLAY",
                    "10.0.0.0/8,192.0.2.0/24",
                ),
                ("SHARDCAST_APP_VOD_AUTH_PLAY_KEYS", "{ film = \"k\" }"),
                ("SHARDCAST_APP_VOD_ALLOW_PUBLISH", "false"),
                ("SHARDCAST_APP_LIVE_HD_GOP_CACHE", "false"),
            ],
        )
        .unwrap();
        assert!(!config.app("live-hd").unwrap().gop_cache, "- written as _");
        assert_eq!(config.apps.len(), 3);
        let live = config.app("Live").expect("matched without regard to case");
        assert!(config.app("live").is_none(), "no second app was created");
        assert_eq!(live.gop_cache_max_ms, 2000);
        assert_eq!(live.record, RecordMode::All);
        assert_eq!(live.record_dir, std::path::PathBuf::from("/rec"));
        assert_eq!(live.auth.publish_keys["cam1"], "s3cret");
        assert_eq!(live.auth.publish_keys["cam2"], "other");
        assert_eq!(live.auth.allow_play.len(), 2);
        let vod = config.app("vod").unwrap();
        assert_eq!(vod.auth.play_keys["film"], "k");
        assert!(!vod.allow_publish);
    }

    #[test]
    fn config_env_creates_an_app_named_only_there() {
        let config = with_env(
            "",
            &[
                ("SHARDCAST_APP_TV_ALLOW_PUBLISH", "false"),
                ("SHARDCAST_APP_TV_AUTH_ALLOW_PLAY", "10.0.0.0/8"),
                ("SHARDCAST_APP_MY_TV_GOP_CACHE", "false"),
            ],
        )
        .unwrap();
        let names: Vec<&String> = config.apps.keys().collect();
        // As in the file: naming applications replaces the default `live`.
        assert_eq!(names, ["my_tv", "tv"]);
        assert!(!config.app("tv").unwrap().allow_publish);
        // `TV_AUTH_ALLOW_PLAY` could be `tv_auth`'s allow_play: `tv` exists, so it is tv's.
        assert_eq!(config.app("tv").unwrap().auth.allow_play.len(), 1);
        assert!(!config.app("my_tv").unwrap().gop_cache);
        // With the application in the file, the default live is untouched by an empty env.
        let config = with_env("[app.live]\n", &[("SHARDCAST_APP_TV_RECORD", "off")]).unwrap();
        assert_eq!(config.app("tv"), Some(&AppConfig::default()));
        assert!(config.app("live").is_some());
    }

    #[test]
    fn config_env_refuses_an_ambiguous_name() {
        let error = refused("", &[("SHARDCAST_APP_X_AUTH_ALLOW_PLAY", "10.0.0.0/8")]);
        assert_eq!(error.variable(), Some("SHARDCAST_APP_X_AUTH_ALLOW_PLAY"));
        let message = error.to_string();
        assert!(message.contains("app.x.auth.allow_play"), "{message}");
        assert!(message.contains("app.x_auth.allow_play"), "{message}");
        // Naming the application in the file settles it.
        let config = with_env(
            "[app.x]\n",
            &[("SHARDCAST_APP_X_AUTH_ALLOW_PLAY", "10.0.0.0/8")],
        )
        .unwrap();
        assert_eq!(config.app("x").unwrap().auth.allow_play.len(), 1);
    }

    #[test]
    fn config_env_refuses_unknown_variables_by_name() {
        for variable in [
            "SHARDCAST_SERVER_LISTNE",
            "SHARDCAST_SERVR_LISTEN",
            "SHARDCAST_APP_LIVE_GOP_CACH",
            "SHARDCAST_APP_LIVE_AUTH_SECRT",
            "SHARDCAST_APP_LIVE",
            "SHARDCAST_APP__GOP_CACHE",
            "SHARDCAST_",
        ] {
            let error = refused("", &[(variable, "1")]);
            assert_eq!(error.variable(), Some(variable), "{error}");
            assert!(error.to_string().contains(variable), "{error}");
        }
    }

    #[test]
    fn config_env_ignores_service_links_and_non_config_variables() {
        let config = with_env(
            "",
            &[
                ("SHARDCAST_ORIGIN_SERVICE_HOST", "10.0.0.1"),
                ("SHARDCAST_ORIGIN_SERVICE_PORT", "1935"),
                ("SHARDCAST_ORIGIN_SERVICE_PORT_RTMP", "1935"),
                ("SHARDCAST_ORIGIN_PORT", "tcp://10.0.0.1:1935"),
                ("SHARDCAST_ORIGIN_PORT_1935_TCP", "tcp://10.0.0.1:1935"),
                ("SHARDCAST_ORIGIN_PORT_1935_TCP_ADDR", "10.0.0.1"),
                ("SHARDCAST_EDGE_PORT_8080_TCP_PROTO", "tcp"),
                ("SHARDCAST_BEFORE_BIN", "/tmp/x"),
            ],
        )
        .unwrap();
        assert_eq!(config, Config::default());
        assert!(!is_service_link("SHARDCAST_SERVER_LISTEN", "tcp://a:1"));
        assert!(!is_service_link("SHARDCAST_X_PORT_1935_TCP_NAME", "x"));
        // A `_PORT` variable that is not a service link is a typo, not ignored.
        let error = refused("", &[("SHARDCAST_SERVER_PORT", "1935")]);
        assert_eq!(error.variable(), Some("SHARDCAST_SERVER_PORT"));
    }

    #[test]
    fn config_env_errors_name_the_variable_not_a_line() {
        let text = "[server]\nmax_hops = 3\n";
        let error = refused(text, &[("SHARDCAST_SERVER_MAX_HOPS", "0")]);
        assert_eq!(error.variable(), Some("SHARDCAST_SERVER_MAX_HOPS"));
        assert_eq!(error.key(), Some("server.max_hops"));
        assert_eq!(error.line(), None);
        let message = error.to_string();
        assert!(
            message.starts_with("config error in SHARDCAST_SERVER_MAX_HOPS (server.max_hops): "),
            "{message}"
        );
        // A type error, found while deserializing.
        let error = refused(text, &[("SHARDCAST_SERVER_CHUNK_SIZE", "big")]);
        assert_eq!(error.variable(), Some("SHARDCAST_SERVER_CHUNK_SIZE"));
        assert_eq!(error.key(), Some("server.chunk_size"));
        // An error inside a list, by item.
        let error = refused(
            "",
            &[("SHARDCAST_SERVER_TRUSTED_PROXIES", "10.0.0.0/8,nope")],
        );
        assert_eq!(error.variable(), Some("SHARDCAST_SERVER_TRUSTED_PROXIES"));
        assert_eq!(error.key(), Some("server.trusted_proxies[1]"));
        // Word-valued keys.
        let error = refused("", &[("SHARDCAST_LOG_FORMAT", "xml")]);
        assert_eq!(error.variable(), Some("SHARDCAST_LOG_FORMAT"));
        // The file's own errors still carry their line and no variable.
        let error = refused(
            "[server]\nchunk_size = 1\n",
            &[("SHARDCAST_SERVER_MAX_HOPS", "4")],
        );
        assert_eq!(error.variable(), None);
        assert_eq!(error.line(), Some(2));
        // A load names the variable, not the file, for the variable's fault.
        let error = with_env("", &[("SHARDCAST_APP_TV_PULL_NOPE", "1")]).unwrap_err();
        assert!(error.to_string().contains("SHARDCAST_APP_TV_PULL_NOPE"));
    }

    #[test]
    fn config_env_error_messages_hide_secret_values() {
        let error = refused(
            "",
            &[(
                "SHARDCAST_APP_LIVE_AUTH_PUBLISH_KEYS",
                "{ cam1 = 123456789 }",
            )],
        );
        assert_eq!(
            error.variable(),
            Some("SHARDCAST_APP_LIVE_AUTH_PUBLISH_KEYS"),
            "{error}"
        );
        assert!(!error.to_string().contains("123456789"), "{error}");
        let error = refused("", &[("SHARDCAST_ADMIN_TOKEN", "has space-s3cr3t")]);
        assert_eq!(error.key(), Some("admin.token"));
        assert!(!error.to_string().contains("s3cr3t"), "{error}");
        assert_eq!(
            redact(
                "invalid type: string \"hunter2hunter2\", expected x",
                "a=hunter2hunter2"
            ),
            "invalid type: string \"***\", expected x"
        );
        // Debug of a loaded config does not show the env's stream keys either.
        let config = with_env(
            "",
            &[("SHARDCAST_APP_LIVE_AUTH_PUBLISH_KEYS", "cam=topsecretkey")],
        )
        .unwrap();
        assert!(!format!("{config:?}").contains("topsecretkey"));
    }

    #[test]
    fn config_env_list_and_table_values() {
        assert_eq!(comma_items(" a , ,b,"), vec![(1..2, "a"), (6..7, "b")]);
        let config = with_env("[server]\ncpus = [1]\n", &[("SHARDCAST_SERVER_CPUS", "")]).unwrap();
        assert!(
            config.server.cpus.is_empty(),
            "an empty value is an empty list"
        );
        let error = refused("", &[("SHARDCAST_APP_LIVE_AUTH_PLAY_KEYS", "justaname")]);
        assert_eq!(error.variable(), Some("SHARDCAST_APP_LIVE_AUTH_PLAY_KEYS"));
        assert!(error.to_string().contains("name=value"), "{error}");
    }

    #[test]
    fn config_env_every_shipped_key_is_settable() {
        // Each key set to its own default through the environment, written the way a person
        // would (plain string for strings, comma lists): the result is the default config.
        let document: toml::Table = SCHEMA.parse().unwrap();
        let mut environment = Vec::new();
        let scalar = |value: &toml::Value| match value {
            toml::Value::String(text) => text.clone(),
            toml::Value::Integer(number) => number.to_string(),
            toml::Value::Float(number) => number.to_string(),
            toml::Value::Boolean(yes) => yes.to_string(),
            other => panic!("no default is {other:?}"),
        };
        let mut add = |prefix: String, table: &toml::Table| {
            for (key, value) in table {
                let text = match value {
                    toml::Value::Table(inner) if inner.is_empty() => String::new(),
                    toml::Value::Table(_) => continue,
                    toml::Value::Array(items) => {
                        items.iter().map(scalar).collect::<Vec<_>>().join(",")
                    }
                    other => scalar(other),
                };
                environment.push((format!("{prefix}{}", key.to_ascii_uppercase()), text));
            }
        };
        for section in SECTIONS {
            add(
                format!("SHARDCAST_{}_", section.to_ascii_uppercase()),
                document[*section].as_table().unwrap(),
            );
        }
        let live = document["app"]["live"].as_table().unwrap();
        add("SHARDCAST_APP_LIVE_".to_owned(), live);
        add(
            "SHARDCAST_APP_LIVE_AUTH_".to_owned(),
            live["auth"].as_table().unwrap(),
        );
        assert!(environment.len() > 60, "{}", environment.len());
        let config = Config::from_toml_str_with_env("", environment).unwrap();
        assert_eq!(config, Config::default());
    }
}
