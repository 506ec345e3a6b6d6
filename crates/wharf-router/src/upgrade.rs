//! Protocol upgrades (WebSocket and any other `Upgrade`): the handshake is proxied like
//! a request; once the replica answers 101, the client's and the replica's connections
//! are spliced byte for byte until either side closes.
//!
//! Invariant: the replica stays counted in flight for as long as the tunnel is open, so
//! draining waits for it (up to the drain timeout).

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use crate::inflight::InflightGuard;

/// The `Upgrade` value of a request that asks for one (`Connection: upgrade`).
pub(crate) fn requested(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if asks {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// Puts back the two hop-by-hop headers an upgrade needs on the next hop.
pub(crate) fn restore(headers: &mut HeaderMap, upgrade: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, upgrade);
}

/// Splices the client's upgraded connection and the replica's (which is never pooled
/// again) in the background; `early` is what the replica sent right after its `101`
/// head, the client's first bytes of the tunnel.
pub(crate) fn splice(
    client: OnUpgrade,
    mut replica: TcpStream,
    early: Bytes,
    guard: InflightGuard,
) {
    tokio::spawn(async move {
        let _held = guard;
        let client = match client.await {
            Ok(client) => client,
            Err(error) => {
                tracing::debug!(%error, "upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        if let Err(error) = client.write_all(&early).await {
            tracing::debug!(%error, "upgraded connection ended with an error");
            return;
        }
        if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut replica).await {
            tracing::debug!(%error, "upgraded connection ended with an error");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_upgrade_requests() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(
            requested(&h).is_none(),
            "Upgrade without Connection: upgrade is not a request for one"
        );
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert_eq!(requested(&h).unwrap(), "websocket");
        let mut out = HeaderMap::new();
        restore(&mut out, HeaderValue::from_static("websocket"));
        assert_eq!(out[header::CONNECTION], "upgrade");
        assert_eq!(out[header::UPGRADE], "websocket");
    }
}
