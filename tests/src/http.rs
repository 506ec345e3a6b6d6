//! A tiny HTTP/1.1 client over std `TcpStream`: one request per connection, or many on
//! one keep-alive connection ([`KeepAlive`]).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// An HTTP response as the router sent it.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names lowercased, in order.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` on `addr` with `Host: host`, `Connection: close` and `extra` headers.
pub fn http_get(
    addr: &str,
    host: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> std::io::Result<Response> {
    request(addr, "GET", host, path, extra)
}

/// `POST path` with an empty body (a request the router never retries after it was
/// sent).
pub fn http_post(addr: &str, host: &str, path: &str) -> std::io::Result<Response> {
    request(addr, "POST", host, path, &[("Content-Length", "0")])
}

fn request(
    addr: &str,
    method: &str,
    host: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> std::io::Result<Response> {
    let sock: SocketAddr = addr
        .parse()
        .map_err(|e| std::io::Error::other(format!("bad address {addr}: {e}")))?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (n, v) in extra {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse(&raw)
}

/// One keep-alive connection, reopened when the server closes it after an answer that
/// said `Connection: close`.
pub struct KeepAlive {
    addr: SocketAddr,
    stream: Option<TcpStream>,
}

impl KeepAlive {
    pub fn new(addr: &str) -> std::io::Result<KeepAlive> {
        let addr = addr
            .parse()
            .map_err(|e| std::io::Error::other(format!("bad address {addr}: {e}")))?;
        Ok(KeepAlive { addr, stream: None })
    }

    /// `GET path` with `Host: host` on the open connection (a new one when there is
    /// none). A connection that fails mid-request is an error: it is not retried.
    pub fn get(&mut self, host: &str, path: &str) -> std::io::Result<Response> {
        let s = match &mut self.stream {
            Some(s) => s,
            None => {
                let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
                s.set_read_timeout(Some(Duration::from_secs(30)))?;
                s.set_nodelay(true)?;
                self.stream.insert(s)
            }
        };
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let answer = s.write_all(req.as_bytes()).and_then(|()| read_one(s));
        match &answer {
            Ok(r)
                if r.header("connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("close")) =>
            {
                self.stream = None;
            }
            Ok(_) => {}
            Err(_) => self.stream = None,
        }
        answer
    }
}

/// Reads exactly one response with a Content-Length or chunked body.
fn read_one(s: &mut TcpStream) -> std::io::Result<Response> {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(bad(format!(
                "connection closed after {} bytes of a response",
                raw.len()
            )));
        }
        raw.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    if let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        let mut body = vec![0u8; len];
        s.read_exact(&mut body)?;
        raw.extend(body);
    } else if head.contains("transfer-encoding: chunked") {
        while !raw.ends_with(b"\r\n0\r\n\r\n") && !raw.ends_with(b"\n\r\n0\r\n\r\n") {
            if s.read(&mut byte)? == 0 {
                return Err(bad("connection closed inside a chunked body"));
            }
            raw.push(byte[0]);
        }
    }
    parse(&raw)
}

fn bad(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

/// Parses a whole response read until EOF (Content-Length, chunked, or close-delimited).
fn parse(raw: &[u8]) -> std::io::Result<Response> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            bad(format!(
                "no header end in {:?}",
                String::from_utf8_lossy(raw)
            ))
        })?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let body = if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if rest.len() < len {
            return Err(bad(format!(
                "body cut short: {} of {len} bytes",
                rest.len()
            )));
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut rest: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("chunk size line not terminated"))?;
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| bad(format!("bad chunk size {size_text:?}")))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if rest.len() < size + 2 {
            return Err(bad("chunk cut short"));
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_length_and_chunked_bodies() {
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello").unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "hello"));
        assert_eq!(r.header("x-a"), Some("b"));
        let r = parse(
            b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_str()), (503, "abcde"));
    }
}
