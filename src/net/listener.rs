//! The accept loop each shard runs on its own listening socket.
//!
//! glommio binds with SO_REUSEPORT, so every shard has its own socket on the ingest port
//! and the kernel spreads new connections over them: no shard hands connections to
//! another, and a connection lives its whole life on the core that accepted it.

use std::rc::Rc;
use std::time::Instant;

use futures_lite::future;
use glommio::net::TcpListener;

use super::client_task::serve;
use super::shard_driver::ShardDriver;

/// Accepts until the shard starts shutting down.
pub async fn accept_loop(driver: Rc<ShardDriver>, listener: TcpListener) {
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            driver.shutting_down.wait().await;
            None
        })
        .await;
        let stream = match accepted {
            None => break,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                tracing::warn!(shard = driver.id, "accept failed: {e}");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(addr) = stream.peer_addr() else {
            continue;
        };
        // Refused (shard full, or shutting down): dropping the stream closes it.
        let Some(id) = driver.relay.borrow_mut().accept(addr, Instant::now()) else {
            continue;
        };
        driver.sockets.borrow_mut().insert(id, stream);
        glommio::spawn_local(serve(driver.clone(), id)).detach();
        driver.process();
    }
    tracing::debug!(shard = driver.id, "stopped accepting");
}
