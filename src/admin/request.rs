//! An admin HTTP request and its answer, as plain values: what the HTTP server
//! (`src/net/admin_http.rs`) reads off the wire and what it writes back.

use std::net::SocketAddr;

use bytes::Bytes;

/// One request to the admin listener, its body read in full (and capped) by the server.
#[derive(Clone, Debug)]
pub struct AdminRequest {
    /// Upper case, as on the wire: `GET`, `POST`, `DELETE`, ...
    pub method: String,
    /// The path, still percent-encoded, without the query.
    pub path: String,
    /// The query string without the `?`, still percent-encoded; empty when absent.
    pub query: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    pub body: Bytes,
    pub peer: SocketAddr,
}

/// The answer to an [`AdminRequest`].
#[derive(Clone, Debug, PartialEq)]
pub struct AdminResponse {
    pub status: u16,
    pub content_type: &'static str,
    /// Headers besides `Content-Type` and `Content-Length`.
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

impl AdminResponse {
    pub fn json(status: u16, body: impl Into<Bytes>) -> AdminResponse {
        AdminResponse {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// An error as SRS writes them: `{"code": <number>, "message": "..."}`, with `status`.
    /// The code is the HTTP status, so a script can test either.
    pub fn error(status: u16, message: &str) -> AdminResponse {
        let body = serde_json::json!({ "code": status, "message": message }).to_string();
        AdminResponse::json(status, body)
    }

    pub fn text(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> AdminResponse {
        AdminResponse {
            status,
            content_type,
            headers: Vec::new(),
            body: body.into(),
        }
    }
}
