//! The accept loop each shard runs on its own listening socket.
//!
//! glommio binds with SO_REUSEPORT, so every shard has its own socket on the ingest port
//! and the kernel spreads new connections over them: no shard hands connections to
//! another, and a connection lives its whole life on the core that accepted it.

use std::rc::Rc;

use futures_lite::future;
use glommio::net::TcpListener;

use super::connection::serve;
use crate::relay::shard::Shard;

/// Accepts until the shard starts shutting down.
pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            shard.shutting_down.wait().await;
            None
        })
        .await;
        let stream = match accepted {
            None => break,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                tracing::warn!(shard = shard.id, "accept failed: {e}");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let addr = match stream.peer_addr() {
            Ok(a) => a,
            Err(_) => continue,
        };
        let limit = shard.config.server.max_connections_per_shard;
        if shard.connections.borrow().len() >= limit {
            tracing::warn!(shard = shard.id, peer = %addr, limit, "connection refused: shard is at max_connections_per_shard");
            continue;
        }
        glommio::spawn_local(serve(shard.clone(), stream, addr)).detach();
    }
    tracing::debug!(shard = shard.id, "stopped accepting");
}
