//! Newline-delimited JSON responses fed from a channel.

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

pub const NDJSON: &str = "application/x-ndjson";

/// Streams every value received as one JSON line.
pub fn ndjson<T: Serialize + Send + 'static>(rx: mpsc::Receiver<T>) -> Response {
    let stream = ReceiverStream::new(rx).map(|v| {
        let mut line = serde_json::to_vec(&v)
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}").into_bytes());
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(Bytes::from(line))
    });
    ([(header::CONTENT_TYPE, NDJSON)], Body::from_stream(stream)).into_response()
}
