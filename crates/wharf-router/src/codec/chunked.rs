//! The chunked transfer coding (RFC 9112 §7.1): the decoder of response bodies, fed
//! whatever the connection delivered (a chunk's size line, data and CRLF may be split
//! across reads anywhere), and the chunk framing of request bodies.
//!
//! Strict on purpose: a size line must be hex digits (no sign, no `0x`, at most 16),
//! optionally followed by extensions (ignored), and end in CRLF; chunk data must be
//! followed by CRLF; the size line and the trailer section are bounded. Anything else
//! is an error and the connection is not used again.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;

use crate::upstream::ProtocolError;

/// Longest chunk size line (with extensions) accepted.
const MAX_LINE: usize = 4096;
/// Largest trailer section accepted.
const MAX_TRAILERS: usize = 16 * 1024;
/// Trailer fields accepted.
const MAX_TRAILER_FIELDS: usize = 32;

/// What the decoder took out of the buffer.
#[derive(Debug, PartialEq)]
pub(crate) enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a size line.
    Size,
    /// Data of the current chunk still to come.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields or the final CRLF.
    Trailers,
    Done,
}

/// The decoder of one chunked body.
#[derive(Debug)]
pub(crate) struct Decoder {
    state: State,
}

fn malformed(what: &'static str) -> ProtocolError {
    ProtocolError::Chunk(what)
}

impl Decoder {
    pub(crate) fn new() -> Self {
        Decoder { state: State::Size }
    }

    /// The body ended (the last chunk and the trailer section were read).
    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Takes the next piece of the body out of `buf`: `Ok(None)` when `buf` holds
    /// too little for it (read more, then call again).
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, ProtocolError> {
        loop {
            match self.state {
                State::Size => {
                    let Some(line) = line(buf, MAX_LINE)? else {
                        return Ok(None);
                    };
                    let size = chunk_size(&buf[..line])?;
                    buf.advance(line + 2);
                    self.state = match size {
                        0 => State::Trailers,
                        n => State::Data(n),
                    };
                }
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = usize::try_from(left).map_or(buf.len(), |left| left.min(buf.len()));
                    let data = buf.split_to(n).freeze();
                    self.state = match left - n as u64 {
                        0 => State::DataEnd,
                        left => State::Data(left),
                    };
                    return Ok(Some(Decoded::Data(data)));
                }
                State::DataEnd => {
                    if buf.len() < 2 {
                        return match buf.first() {
                            Some(b'\r') | None => Ok(None),
                            Some(_) => Err(malformed("chunk data not followed by CRLF")),
                        };
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(malformed("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = State::Size;
                }
                State::Trailers => return self.trailers(buf),
                State::Done => return Ok(Some(Decoded::End)),
            }
        }
    }

    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, ProtocolError> {
        if buf.starts_with(b"\r\n") {
            buf.advance(2);
            self.state = State::Done;
            return Ok(Some(Decoded::End));
        }
        let window = &buf[..buf.len().min(MAX_TRAILERS)];
        let Some(end) = window.windows(4).position(|w| w == b"\r\n\r\n") else {
            if buf.len() >= MAX_TRAILERS {
                return Err(malformed("trailer section too large"));
            }
            if buf.first().is_some_and(|b| b.is_ascii_control()) && !buf.starts_with(b"\r") {
                // Neither the final CRLF nor a field (which cannot start so).
                return Err(malformed("bad trailer section"));
            }
            if buf.len() >= 2 && buf.starts_with(b"\r") {
                return Err(malformed("bad trailer section"));
            }
            return Ok(None);
        };
        let mut slots = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
        let mut trailers = HeaderMap::new();
        match httparse::parse_headers(&buf[..end + 4], &mut slots) {
            Ok(httparse::Status::Complete((_, fields))) => {
                for field in fields.iter() {
                    let name = HeaderName::from_bytes(field.name.as_bytes());
                    let value = HeaderValue::from_bytes(field.value);
                    let (Ok(name), Ok(value)) = (name, value) else {
                        return Err(malformed("bad trailer field"));
                    };
                    trailers.append(name, value);
                }
            }
            _ => return Err(malformed("bad trailer section")),
        }
        buf.advance(end + 4);
        self.state = State::Done;
        Ok(Some(Decoded::Trailers(trailers)))
    }
}

/// The length of the line at the start of `buf` without its CRLF; `None` while it is
/// incomplete. A bare LF, or no line end within `max`, is an error.
fn line(buf: &[u8], max: usize) -> Result<Option<usize>, ProtocolError> {
    let window = &buf[..buf.len().min(max + 2)];
    match window.iter().position(|b| *b == b'\n') {
        Some(0) => Err(malformed("bare LF in a chunk size line")),
        Some(lf) if window[lf - 1] == b'\r' => Ok(Some(lf - 1)),
        Some(_) => Err(malformed("bare LF in a chunk size line")),
        None if window.len() >= max + 2 => Err(malformed("chunk size line too long")),
        None => Ok(None),
    }
}

/// The size of a chunk size line (`HEX [BWS ";" extensions]`, no CRLF).
fn chunk_size(line: &[u8]) -> Result<u64, ProtocolError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(malformed("chunk size is not a hex number"));
    }
    if digits > 16 {
        return Err(malformed("chunk size too large"));
    }
    let mut size = 0u64;
    for b in &line[..digits] {
        // Cannot fail: checked above.
        let digit = char::from(*b).to_digit(16).unwrap_or(0);
        size = size << 4 | u64::from(digit);
    }
    let rest = &line[digits..];
    let after_space = rest.trim_ascii_start();
    let ok = rest.is_empty()
        || (after_space.first() == Some(&b';')
            && rest
                .iter()
                .all(|b| *b == b'\t' || (0x20..0x7f).contains(b) || *b >= 0x80));
    if !ok {
        return Err(malformed("invalid characters after the chunk size"));
    }
    Ok(size)
}

/// The size line of a request body chunk of `len` bytes, into `out`.
pub(crate) fn size_line(len: usize, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1);
    for shift in (0..digits).rev() {
        out.push(HEX[(len >> (shift * 4)) & 0xf]);
    }
    out.extend_from_slice(b"\r\n");
}

/// The last chunk and the end of the (empty) trailer section of a request body.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    /// The data, the trailers, whether it ended, and what was left in the buffer.
    type Fed = (Vec<u8>, Option<HeaderMap>, bool, Vec<u8>);

    /// Decodes `input` fed in pieces of `step` bytes.
    fn feed(input: &[u8], step: usize) -> Result<Fed, ProtocolError> {
        let mut decoder = Decoder::new();
        let mut buf = BytesMut::new();
        let (mut data, mut trailers, mut ended) = (Vec::new(), None, false);
        for piece in input.chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            while let Some(decoded) = decoder.decode(&mut buf)? {
                match decoded {
                    Decoded::Data(d) => {
                        assert!(!d.is_empty(), "no empty frames");
                        data.extend_from_slice(&d);
                    }
                    Decoded::Trailers(t) => trailers = Some(t),
                    Decoded::End => {
                        ended = true;
                        break;
                    }
                }
            }
            if ended {
                break;
            }
        }
        Ok((data, trailers, ended, buf.to_vec()))
    }

    #[test]
    fn decodes_at_every_split() {
        let body = b"5\r\nhello\r\n1;name=value\r\n \r\nA\r\n0123456789\r\n0\r\n\r\nNEXT";
        for step in 1..body.len() {
            let (data, trailers, ended, rest) = feed(body, step).expect("valid");
            assert_eq!(data, b"hello 0123456789", "step {step}");
            assert!(ended && trailers.is_none(), "step {step}");
            assert!(b"NEXT".starts_with(&rest), "the next bytes stay: {rest:?}");
        }
        assert!(Decoder::new()
            .decode(&mut BytesMut::new())
            .expect("ok")
            .is_none());
    }

    #[test]
    fn trailers_at_every_split() {
        let body = b"3\r\nabc\r\n0\r\nX-Checksum: 42\r\nX-B: two\r\n\r\n";
        for step in 1..=body.len() {
            let (data, trailers, ended, rest) = feed(body, step).expect("valid");
            let trailers = trailers.expect("trailers");
            assert_eq!((data.as_slice(), ended, rest.len()), (&b"abc"[..], true, 0));
            assert_eq!(trailers["x-checksum"], "42");
            assert_eq!(trailers["x-b"], "two");
        }
    }

    #[test]
    fn sizes_are_hex_case_insensitive_and_may_have_extensions() {
        let body = b"a\r\n0123456789\r\nA ;ext\r\n0123456789\r\n0\t;x=\"y\"\r\n\r\n";
        let (data, _, ended, _) = feed(body, body.len()).expect("valid");
        assert_eq!(data.len(), 20);
        assert!(ended);
        let (data, _, ended, _) = feed(b"000\r\n\r\n", 7).expect("leading zeros");
        assert!(data.is_empty() && ended);
    }

    #[test]
    fn large_chunks_come_in_pieces() {
        let mut body = b"10000\r\n".to_vec();
        body.extend(std::iter::repeat_n(b'x', 0x10000));
        body.extend_from_slice(b"\r\n0\r\n\r\n");
        let (data, _, ended, _) = feed(&body, 1000).expect("valid");
        assert_eq!(data.len(), 0x10000);
        assert!(ended);
    }

    #[test]
    fn malformed_bodies_are_errors() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"+5\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5 5\r\nhello\r\n0\r\n\r\n",
            b"5\x00\r\nhello\r\n0\r\n\r\n",
            b"5;a\rb\r\nhello\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"0\r\nbad trailer\r\n\r\n",
            b"0\r\n\x01\r\n",
            b"0\r\n\rX",
            b"0\r\n folded: no\r\n\r\n",
        ] {
            for step in [1, 3, bad.len()] {
                assert!(
                    feed(bad, step).is_err(),
                    "{:?} by {step}",
                    String::from_utf8_lossy(bad)
                );
            }
        }
    }

    #[test]
    fn size_lines_and_trailers_are_bounded() {
        let mut long = b"5;".to_vec();
        long.resize(MAX_LINE + 10, b'a');
        assert!(feed(&long, 100).is_err(), "endless size line");
        let mut trailers = b"0\r\n".to_vec();
        while trailers.len() < MAX_TRAILERS + 100 {
            trailers.extend_from_slice(b"X-T: aaaaaaaaaaaaaaaa\r\n");
        }
        assert!(feed(&trailers, 512).is_err(), "endless trailers");
    }

    #[test]
    fn largest_size_fits_sixteen_digits() {
        let mut decoder = Decoder::new();
        let mut buf = BytesMut::from(&b"ffffffffffffffff\r\nab"[..]);
        let data = decoder.decode(&mut buf).expect("valid").expect("data");
        assert_eq!(data, Decoded::Data(Bytes::from_static(b"ab")));
        assert!(!decoder.is_done());
    }

    #[test]
    fn size_lines_for_request_chunks() {
        for (len, line) in [
            (0, "0\r\n"),
            (1, "1\r\n"),
            (15, "f\r\n"),
            (16, "10\r\n"),
            (0x1234, "1234\r\n"),
        ] {
            let mut out = Vec::new();
            size_line(len, &mut out);
            assert_eq!(out, line.as_bytes(), "{len}");
        }
    }
}
