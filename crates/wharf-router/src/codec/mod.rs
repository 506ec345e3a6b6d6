//! HTTP/1.1 on the wire, shared by the downstream server (`downstream`) and the upstream
//! client (`upstream`): header fields located in a head's bytes and classified once
//! (`fields`), message framing values (`framing`) and the chunked coding (`chunked`).

pub(crate) mod chunked;
pub(crate) mod fields;
pub(crate) mod framing;
