//! The relays a connection has passed through, carried in `connect` so a tree of relays
//! cannot feed itself.
//!
//! When shardcast pulls a stream from another server or pushes one to it, its `connect`
//! command object carries two properties besides the standard ones:
//!
//! - `shardcastVia`: the node ids (`[server] node_id`) of every relay the media has passed
//!   through so far, oldest first, joined with commas;
//! - `shardcastHops`: how many relays that is (1 at the first relay).
//!
//! A server that finds its own id in the list, or more hops than its `[server] max_hops`,
//! refuses the connection (`NetConnection.Connect.Rejected`, description
//! [`LOOP_DESCRIPTION`]...), so a loop of pulls (two edges that pull from each other) or
//! pushes ends at the first repeat instead of multiplying. Other servers (nginx-rtmp, SRS)
//! ignore unknown `connect` properties, so the fields cost nothing when the peer is not
//! shardcast; a connection without them is at hop 0 with nobody behind it.
//!
//! The peer is hostile: at most [`MAX_NODES`] ids of at most [`MAX_NODE_ID_LEN`] bytes are
//! read; the rest is ignored (a list that long is refused by any sane `max_hops` anyway,
//! since the hop count is taken as at least the number of ids read).

use super::amf0::Amf0Value;

/// Ids read from one `shardcastVia` at most.
pub const MAX_NODES: usize = 32;
/// Bytes of one node id at most; longer ids are cut (ids are compared as cut).
pub const MAX_NODE_ID_LEN: usize = 64;

/// The `connect` property with the node ids.
pub const VIA_PROPERTY: &str = "shardcastVia";
/// The `connect` property with the hop count.
pub const HOPS_PROPERTY: &str = "shardcastHops";

/// The start of the description of a refusal for a loop, which a puller recognizes.
pub const LOOP_DESCRIPTION: &str = "relay loop";

/// The relays behind one connection, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelayPath {
    nodes: Vec<String>,
    hops: u32,
}

/// Why a connection's path is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathRefusal {
    /// The path already passed through this server.
    Loop,
    /// The path is longer than `max_hops`.
    TooManyHops { hops: u32, max_hops: u32 },
}

impl std::fmt::Display for PathRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathRefusal::Loop => {
                write!(f, "{LOOP_DESCRIPTION}: this server is already on the path")
            }
            PathRefusal::TooManyHops { hops, max_hops } => write!(
                f,
                "{LOOP_DESCRIPTION}: {hops} hops, more than the {max_hops} allowed"
            ),
        }
    }
}

impl RelayPath {
    /// The path of a connection straight from an encoder or player: nobody behind it.
    pub fn origin() -> RelayPath {
        RelayPath::default()
    }

    /// Reads the path from a `connect` command object; absent or malformed fields mean an
    /// empty path.
    pub fn from_connect(obj: &Amf0Value) -> RelayPath {
        let nodes: Vec<String> = obj
            .get(VIA_PROPERTY)
            .and_then(Amf0Value::as_str)
            .map(|via| {
                via.split(',')
                    .map(str::trim)
                    .filter(|id| !id.is_empty())
                    .take(MAX_NODES)
                    .map(|id| truncate(id, MAX_NODE_ID_LEN).to_owned())
                    .collect()
            })
            .unwrap_or_default();
        let declared = obj
            .get(HOPS_PROPERTY)
            .and_then(Amf0Value::as_f64)
            .filter(|h| h.is_finite() && *h >= 0.0)
            .map(|h| h.min(f64::from(u32::MAX)) as u32)
            .unwrap_or(0);
        let hops = declared.max(nodes.len() as u32);
        RelayPath { nodes, hops }
    }

    /// This path continued through the relay `node_id`: what that relay sends upstream
    /// (in a pull) or downstream (in a push).
    pub fn through(&self, node_id: &str) -> RelayPath {
        let mut nodes = self.nodes.clone();
        if nodes.len() < MAX_NODES {
            nodes.push(truncate(node_id, MAX_NODE_ID_LEN).to_owned());
        }
        RelayPath {
            nodes,
            hops: self.hops.saturating_add(1),
        }
    }

    /// Whether a server with `node_id` and `max_hops` takes a connection with this path.
    pub fn check(&self, node_id: &str, max_hops: u32) -> Result<(), PathRefusal> {
        let me = truncate(node_id, MAX_NODE_ID_LEN);
        if self.nodes.iter().any(|n| n == me) {
            return Err(PathRefusal::Loop);
        }
        if self.hops > max_hops {
            return Err(PathRefusal::TooManyHops {
                hops: self.hops,
                max_hops,
            });
        }
        Ok(())
    }

    /// The `connect` properties that carry this path (none for an empty path).
    pub fn connect_properties(&self) -> Vec<(String, Amf0Value)> {
        if self.nodes.is_empty() && self.hops == 0 {
            return Vec::new();
        }
        vec![
            (
                VIA_PROPERTY.to_owned(),
                Amf0Value::String(self.nodes.join(",")),
            ),
            (
                HOPS_PROPERTY.to_owned(),
                Amf0Value::Number(f64::from(self.hops)),
            ),
        ]
    }

    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    pub fn hops(&self) -> u32 {
        self.hops
    }

    pub fn is_empty(&self) -> bool {
        self.hops == 0 && self.nodes.is_empty()
    }
}

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

    fn connect_with(fields: Vec<(String, Amf0Value)>) -> Amf0Value {
        let mut all = vec![("app".to_owned(), Amf0Value::String("live".into()))];
        all.extend(fields);
        Amf0Value::Object(all)
    }

    #[test]
    fn a_plain_client_has_an_empty_path() {
        let path = RelayPath::from_connect(&connect_with(vec![]));
        assert!(path.is_empty());
        assert!(path.connect_properties().is_empty());
        assert_eq!(path.check("edge-1", 8), Ok(()));
    }

    #[test]
    fn a_path_round_trips_through_connect() {
        let path = RelayPath::origin().through("edge-1").through("mid-1");
        let parsed = RelayPath::from_connect(&connect_with(path.connect_properties()));
        assert_eq!(parsed, path);
        assert_eq!(parsed.hops(), 2);
        assert_eq!(parsed.nodes(), ["edge-1", "mid-1"]);
    }

    #[test]
    fn a_server_on_the_path_refuses_it() {
        let path = RelayPath::origin().through("a").through("b");
        assert_eq!(path.check("a", 8), Err(PathRefusal::Loop));
        assert_eq!(path.check("c", 8), Ok(()));
        assert!(PathRefusal::Loop.to_string().starts_with(LOOP_DESCRIPTION));
    }

    #[test]
    fn too_many_hops_are_refused() {
        let mut path = RelayPath::origin();
        for i in 0..3 {
            path = path.through(&format!("n{i}"));
        }
        assert_eq!(
            path.check("x", 2),
            Err(PathRefusal::TooManyHops {
                hops: 3,
                max_hops: 2
            })
        );
        assert_eq!(path.check("x", 3), Ok(()));
    }

    #[test]
    fn hostile_fields_are_bounded() {
        let long_list = (0..1000)
            .map(|i| format!("n{i}"))
            .collect::<Vec<_>>()
            .join(",");
        let obj = connect_with(vec![
            (VIA_PROPERTY.into(), Amf0Value::String(long_list)),
            (HOPS_PROPERTY.into(), Amf0Value::Number(f64::NAN)),
        ]);
        let path = RelayPath::from_connect(&obj);
        assert_eq!(path.nodes().len(), MAX_NODES);
        assert_eq!(path.hops(), MAX_NODES as u32);

        let obj = connect_with(vec![
            (VIA_PROPERTY.into(), Amf0Value::String("é".repeat(100))),
            (HOPS_PROPERTY.into(), Amf0Value::Number(-5.0)),
        ]);
        let path = RelayPath::from_connect(&obj);
        assert!(path.nodes()[0].len() <= MAX_NODE_ID_LEN);
        assert_eq!(path.hops(), 1);

        let obj = connect_with(vec![(HOPS_PROPERTY.into(), Amf0Value::Number(1e300))]);
        assert_eq!(RelayPath::from_connect(&obj).hops(), u32::MAX);
        // A via that is not a string is ignored.
        let obj = connect_with(vec![(VIA_PROPERTY.into(), Amf0Value::Number(3.0))]);
        assert!(RelayPath::from_connect(&obj).is_empty());
    }
}
