//! The admin listener's logic: what an operator asks over HTTP, and what the relay answers.
//!
//! Nothing here touches a socket. `src/net/admin_http.rs` serves HTTP (hyper on glommio)
//! and hands each request to this module as an [`AdminRequest`]; the answer goes back as an
//! [`AdminResponse`]. What the answer needs from the shards travels by message, never a
//! lock.
//!
//! - `request.rs`: the request and response as plain values, and JSON error answers.

pub mod request;
