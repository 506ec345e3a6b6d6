//! Protocol upgrades (WebSocket and any other `Upgrade`): the handshake is proxied like
//! a request (the client's `Connection: upgrade` and `Upgrade` go on to the replica,
//! see `upstream::request`); once the replica answers 101, the client's connection and
//! the replica's are spliced byte for byte, each direction until its sender closes.
//! A `101` to a request that did not ask for an upgrade is refused (502).
//!
//! Invariant: the replica stays counted in flight for as long as the tunnel is open, so
//! draining waits for it (up to the drain timeout).

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};

use crate::answer::Tunnel;
use crate::downstream::{Reader, Writer};

/// Splices the client's connection (what it sent after its request is in `reader`'s
/// buffer) and the replica's in the background.
pub(crate) fn splice(reader: Box<Reader>, writer: Writer, tunnel: Tunnel) {
    tokio::spawn(async move {
        let Tunnel {
            replica,
            early,
            guard,
        } = tunnel;
        let _held = guard;
        let (client_in, buffered) = reader.into_parts();
        let client_out = writer.into_inner();
        let (replica_in, replica_out) = replica.into_split();
        let up = pump(&buffered, client_in, replica_out);
        let down = pump(&early, replica_in, client_out);
        let (up, down) = tokio::join!(up, down);
        if let Err(error) = up.and(down) {
            tracing::debug!(%error, "upgraded connection ended with an error");
        }
    });
}

/// Writes `first`, then copies `from` to `to` until `from` ends; then ends `to`.
async fn pump(
    first: &[u8],
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
) -> std::io::Result<()> {
    to.write_all(first).await?;
    tokio::io::copy(&mut from, &mut to).await?;
    to.shutdown().await
}
