//! A deliberately small HTTP/1.1 request reader and response writer.

use std::io::{self, BufRead, Read, Write};

/// Largest request head (request line plus headers) we accept.
const MAX_HEAD: u64 = 64 * 1024;
/// Largest request body we accept.
const MAX_BODY: usize = 64 * 1024 * 1024;

#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    /// `true` for HTTP/1.1 (keep-alive by default), `false` for HTTP/1.0.
    pub http11: bool,
    /// Headers in arrival order, names as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// HTTP/1.1 keeps the connection unless `Connection: close`; HTTP/1.0 closes it
    /// unless `Connection: keep-alive`.
    pub fn keep_alive(&self) -> bool {
        let has = |token: &str| {
            self.header("connection")
                .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        };
        if self.http11 {
            !has("close")
        } else {
            has("keep-alive")
        }
    }

    /// The decoded value of query parameter `name`, if present.
    pub fn query_param(&self, name: &str) -> Option<String> {
        parse_query(&self.query)
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

/// Why a request could not be read; each maps to the status we answer before closing.
#[derive(Debug)]
pub enum HttpError {
    /// The connection failed or closed mid-request: nothing to answer.
    Io,
    Bad(&'static str),
    HeadTooLarge,
    BodyTooLarge,
}

impl HttpError {
    pub fn status(&self) -> u16 {
        match self {
            HttpError::Io | HttpError::Bad(_) => 400,
            HttpError::HeadTooLarge => 431,
            HttpError::BodyTooLarge => 413,
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            HttpError::Io => "connection error",
            HttpError::Bad(why) => why,
            HttpError::HeadTooLarge => "request head too large",
            HttpError::BodyTooLarge => "request body too large",
        }
    }
}

impl From<io::Error> for HttpError {
    fn from(_: io::Error) -> Self {
        HttpError::Io
    }
}

/// Reads one line (without its CRLF) as part of a head that may use `budget` more bytes.
fn read_line<R: BufRead>(r: &mut R, budget: &mut u64) -> Result<Option<String>, HttpError> {
    let mut buf = Vec::new();
    let n = r.by_ref().take(*budget).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    *budget -= n as u64;
    if buf.last() != Some(&b'\n') {
        return Err(if *budget == 0 {
            HttpError::HeadTooLarge
        } else {
            HttpError::Bad("truncated request")
        });
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| HttpError::Bad("non-UTF-8 request head"))
}

/// Reads the next request; `Ok(None)` when the peer closed the connection cleanly
/// between requests.
pub fn read_request<R: BufRead>(r: &mut R) -> Result<Option<Request>, HttpError> {
    let mut budget = MAX_HEAD;
    // Tolerate stray empty lines before a request line (RFC 9112 section 2.2).
    let line = loop {
        match read_line(r, &mut budget)? {
            None => return Ok(None),
            Some(l) if l.is_empty() => continue,
            Some(l) => break l,
        }
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::Bad("malformed request line"));
    };
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err(HttpError::Bad("unsupported HTTP version")),
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));

    let mut headers = Vec::new();
    loop {
        let Some(line) = read_line(r, &mut budget)? else {
            return Err(HttpError::Bad("truncated request head"));
        };
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(HttpError::Bad("malformed header"));
        };
        if name.is_empty() || name.ends_with([' ', '\t']) {
            return Err(HttpError::Bad("malformed header name"));
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }

    let mut req = Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        http11,
        headers,
        body: Vec::new(),
    };
    let chunked = req
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        req.body = read_chunked(r)?;
    } else if let Some(len) = req.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| HttpError::Bad("invalid Content-Length"))?;
        if len > MAX_BODY {
            return Err(HttpError::BodyTooLarge);
        }
        req.body = vec![0; len];
        r.read_exact(&mut req.body)?;
    }
    Ok(Some(req))
}

/// Decodes a `Transfer-Encoding: chunked` body (trailers are read and dropped).
fn read_chunked<R: BufRead>(r: &mut R) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    let mut budget = MAX_HEAD;
    loop {
        let line = read_line(r, &mut budget)?.ok_or(HttpError::Bad("truncated chunk"))?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size =
            usize::from_str_radix(size, 16).map_err(|_| HttpError::Bad("invalid chunk size"))?;
        if size == 0 {
            while !read_line(r, &mut budget)?
                .ok_or(HttpError::Bad("truncated trailers"))?
                .is_empty()
            {}
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err(HttpError::BodyTooLarge);
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return Err(HttpError::Bad("missing CRLF after chunk"));
        }
    }
}

/// Splits a query string into decoded `(key, value)` pairs (`+` means space).
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

/// Decodes `%XX` escapes (invalid escapes are kept as they are); with `plus_as_space`,
/// `+` becomes a space as in form-encoded query strings. Invalid UTF-8 is replaced.
pub fn percent_decode(s: &str, plus_as_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_as_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Escapes `s` as the contents of a JSON string.
pub fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
        }
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// Writes `resp` with a Content-Length (always) and, unless `keep_alive`,
/// `Connection: close`. HEAD requests get the headers only.
pub fn write_response<W: Write>(
    w: &mut W,
    resp: &Response,
    keep_alive: bool,
    head_only: bool,
) -> io::Result<()> {
    // 204 and 304 never carry a body.
    let body: &[u8] = if matches!(resp.status, 204 | 304) {
        &[]
    } else {
        &resp.body
    };
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        body.len()
    )
    .into_bytes();
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(body);
    }
    w.write_all(&out)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn parse(raw: &str) -> Result<Option<Request>, HttpError> {
        read_request(&mut Cursor::new(raw.as_bytes().to_vec()))
    }

    #[test]
    fn parses_request_line_headers_and_query() {
        let req = parse(
            "GET /log?msg=a%20b&x=1 HTTP/1.1\r\nHost: h\r\nX-Forwarded-For:  1.2.3.4 \r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/log");
        assert_eq!(req.query, "msg=a%20b&x=1");
        assert!(req.http11 && req.keep_alive());
        assert_eq!(req.header("x-forwarded-for"), Some("1.2.3.4"));
        assert_eq!(req.headers[0], ("Host".to_string(), "h".to_string()));
        assert_eq!(req.query_param("msg").as_deref(), Some("a b"));
        assert_eq!(req.query_param("missing"), None);
    }

    #[test]
    fn keep_alive_rules() {
        let ka = |raw: &str| parse(raw).unwrap().unwrap().keep_alive();
        assert!(!ka("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!ka("GET / HTTP/1.1\r\nconnection: Upgrade, Close\r\n\r\n"));
        assert!(!ka("GET / HTTP/1.0\r\n\r\n"));
        assert!(ka("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    }

    #[test]
    fn reads_content_length_body_and_pipelined_requests() {
        let raw = "POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n";
        let mut cur = Cursor::new(raw.as_bytes().to_vec());
        let first = read_request(&mut cur).unwrap().unwrap();
        assert_eq!(first.body, b"hello");
        let second = read_request(&mut cur).unwrap().unwrap();
        assert_eq!((second.method.as_str(), second.path.as_str()), ("GET", "/"));
        assert!(read_request(&mut cur).unwrap().is_none());
    }

    #[test]
    fn reads_chunked_body() {
        let raw = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: v\r\n\r\n";
        assert_eq!(parse(raw).unwrap().unwrap().body, b"abcde");
    }

    #[test]
    fn rejects_malformed_requests() {
        assert_eq!(parse("GARBAGE\r\n\r\n").unwrap_err().status(), 400);
        assert_eq!(parse("GET / HTTP/2\r\n\r\n").unwrap_err().status(), 400);
        assert_eq!(
            parse("GET / HTTP/1.1\r\nNoColon\r\n\r\n")
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            parse("GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n")
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            parse("GET / HTTP/1.1\r\nHost: h\r\n").unwrap_err().status(),
            400
        );
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(70_000));
        assert_eq!(parse(&huge).unwrap_err().status(), 431);
        assert!(parse("").unwrap().is_none());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c", true), "a b c");
        assert_eq!(percent_decode("a+b", false), "a+b");
        assert_eq!(percent_decode("%E2%9C%93", true), "\u{2713}");
        assert_eq!(percent_decode("100%", true), "100%");
        assert_eq!(percent_decode("%zz%4", true), "%zz%4");
        assert_eq!(percent_decode("%41%4a", true), "AJ");
        assert_eq!(
            parse_query("a=1&&b=x%3Dy&c"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x=y".into()),
                ("c".into(), "".into())
            ]
        );
    }

    #[test]
    fn json_escaping() {
        assert_eq!(json_escape("a\"b\\c\nd\u{1}"), "a\\\"b\\\\c\\nd\\u0001");
    }

    #[test]
    fn writes_content_length_and_connection_close() {
        let mut out = Vec::new();
        write_response(&mut out, &Response::text(503, "no\n"), false, false).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 3\r\nConnection: close\r\n\r\nno\n"
        );
        let mut out = Vec::new();
        write_response(&mut out, &Response::text(204, "ignored"), true, false).unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .ends_with("Content-Length: 0\r\n\r\n"));
    }
}
