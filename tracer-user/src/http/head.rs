//! Message heads: accumulate bytes up to the blank line (bounded), then parse with `httparse`.

/// Headers whose values are credentials: never stored, so they can never reach a record.
pub use crate::credentials::is_credential_header;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeadError {
    #[error("head larger than the {0}-byte cap")]
    TooLarge(usize),
    #[error("not an HTTP/1.x message: {0}")]
    Invalid(String),
}

/// The non-credential headers of a message, in wire order, names lower-cased. All names and
/// values share one buffer: a head costs two allocations, not two per header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    text: String,
    /// Per header: where its name starts, where its value starts (the name's end), where its
    /// value ends, in `text`.
    spans: Vec<(usize, usize, usize)>,
}

impl Headers {
    /// Appends a header; `name` is stored lower-cased, `value` as given.
    pub fn push(&mut self, name: &str, value: &str) {
        let start = self.text.len();
        self.text.push_str(name);
        let value_start = self.text.len();
        self.text[start..value_start].make_ascii_lowercase();
        self.text.push_str(value);
        self.spans.push((start, value_start, self.text.len()));
    }

    /// Every header as (lower-cased name, value), in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.spans
            .iter()
            .map(|&(n, v, e)| (&self.text[n..v], &self.text[v..e]))
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// First value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Whether the comma-separated header `name` lists `token` (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    fn from_httparse(raw: &[httparse::Header<'_>]) -> Self {
        let mut headers = Headers {
            text: String::with_capacity(raw.iter().map(|h| h.name.len() + h.value.len()).sum()),
            spans: Vec::with_capacity(raw.len()),
        };
        for h in raw.iter().filter(|h| !is_credential_header(h.name)) {
            headers.push(h.name, String::from_utf8_lossy(h.value).trim());
        }
        headers
    }
}

impl<N: AsRef<str>, V: AsRef<str>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(pairs: I) -> Self {
        let mut headers = Headers::default();
        for (name, value) in pairs {
            headers.push(name.as_ref(), value.as_ref());
        }
        headers
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// Request target as sent (path and query).
    pub target: String,
    /// `1` for HTTP/1.x, `2` for HTTP/2.
    pub major_version: u8,
    /// Minor version: `1` for HTTP/1.1.
    pub minor_version: u8,
    pub headers: Headers,
}

impl RequestHead {
    /// Path without query string or fragment.
    pub fn path(&self) -> &str {
        let end = self.target.find(['?', '#']).unwrap_or(self.target.len());
        self.target.get(..end).unwrap_or("")
    }

    /// Query string without the `?`, if any.
    pub fn query(&self) -> Option<&str> {
        let q = self.target.split_once('?')?.1;
        Some(q.split('#').next().unwrap_or(""))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub major_version: u8,
    pub minor_version: u8,
    pub headers: Headers,
}

const MAX_HEADERS: usize = 128;

/// Collects the bytes of one head until its terminating blank line.
#[derive(Debug, Default)]
pub struct HeadAccumulator {
    buf: Vec<u8>,
}

impl HeadAccumulator {
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// Bytes collected so far (to sniff what kind of message is starting).
    pub fn peek(&self) -> &[u8] {
        &self.buf
    }

    /// Appends bytes from `data` up to and including the head's blank line. Returns how many
    /// bytes of `data` were used and whether the head is complete.
    pub fn push(&mut self, data: &[u8], cap: usize) -> Result<(usize, bool), HeadError> {
        // Line by line: only a line feed can end the head or a leading empty line.
        let mut used = 0;
        while used < data.len() {
            let rest = &data[used..];
            let Some(nl) = memchr::memchr(b'\n', rest) else {
                self.buf.extend_from_slice(rest);
                if self.buf.len() > cap {
                    return Err(HeadError::TooLarge(cap));
                }
                return Ok((data.len(), false));
            };
            // The bytes before the line feed must fit; the line feed may end the head.
            if self.buf.len() + nl > cap {
                return Err(HeadError::TooLarge(cap));
            }
            self.buf.extend_from_slice(&rest[..=nl]);
            used += nl + 1;
            if self.ends_with_blank_line() {
                return Ok((used, true));
            }
            if self.buf.len() > cap {
                return Err(HeadError::TooLarge(cap));
            }
            // Leading CRLFs between messages are allowed (RFC 9112 §2.2): drop them.
            if self.buf == b"\r\n" || self.buf == b"\n" {
                self.buf.clear();
            }
        }
        Ok((data.len(), false))
    }

    fn ends_with_blank_line(&self) -> bool {
        self.buf.ends_with(b"\r\n\r\n") || self.buf.ends_with(b"\n\n")
    }

    pub fn parse_request(&mut self) -> Result<RequestHead, HeadError> {
        let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut raw);
        let parsed = req.parse(&self.buf);
        let head = match parsed {
            Ok(httparse::Status::Complete(_)) => RequestHead {
                method: req.method.unwrap_or_default().to_string(),
                target: req.path.unwrap_or_default().to_string(),
                major_version: 1,
                minor_version: req.version.unwrap_or(1),
                headers: Headers::from_httparse(req.headers),
            },
            Ok(httparse::Status::Partial) => {
                return Err(HeadError::Invalid("partial request head".into()));
            }
            Err(e) => return Err(HeadError::Invalid(e.to_string())),
        };
        self.buf.clear();
        Ok(head)
    }

    pub fn parse_response(&mut self) -> Result<ResponseHead, HeadError> {
        let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut raw);
        let head = match resp.parse(&self.buf) {
            Ok(httparse::Status::Complete(_)) => ResponseHead {
                status: resp.code.unwrap_or(0),
                major_version: 1,
                minor_version: resp.version.unwrap_or(1),
                headers: Headers::from_httparse(resp.headers),
            },
            Ok(httparse::Status::Partial) => {
                return Err(HeadError::Invalid("partial response head".into()));
            }
            Err(e) => return Err(HeadError::Invalid(e.to_string())),
        };
        self.buf.clear();
        Ok(head)
    }
}

/// What the first bytes of a direction say about the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sniff {
    /// Too few bytes to tell.
    NeedMore,
    /// Starts like an HTTP/1.x request line.
    Request,
    /// Starts like an HTTP/1.x status line.
    Response,
    /// The HTTP/2 connection preface.
    Http2Preface,
    /// Anything else.
    Other,
}

const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"PATCH ",
    b"HEAD ",
    b"OPTIONS ",
    b"CONNECT ",
    b"TRACE ",
];

/// Classifies the start of a message.
pub fn sniff(bytes: &[u8]) -> Sniff {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0";
    const STATUS: &[u8] = b"HTTP/1.";
    if bytes.is_empty() {
        return Sniff::NeedMore;
    }
    let prefix_of = |pat: &[u8]| {
        let n = bytes.len().min(pat.len());
        bytes.get(..n) == pat.get(..n)
    };
    if prefix_of(PREFACE) {
        return if bytes.len() >= PREFACE.len() {
            Sniff::Http2Preface
        } else {
            Sniff::NeedMore
        };
    }
    if prefix_of(STATUS) {
        return if bytes.len() >= STATUS.len() {
            Sniff::Response
        } else {
            Sniff::NeedMore
        };
    }
    for m in METHODS {
        if prefix_of(m) {
            return if bytes.len() >= m.len() {
                Sniff::Request
            } else {
                Sniff::NeedMore
            };
        }
    }
    Sniff::Other
}

/// Position of the first line start in `data` (offset 0 if `at_line_start`, else after a
/// `\n`) where `want` is sniffed; used to resynchronise after lost bytes.
pub fn find_message_start(data: &[u8], at_line_start: bool, want: Sniff) -> Option<usize> {
    let candidates = at_line_start
        .then_some(0)
        .into_iter()
        .chain(memchr::memchr_iter(b'\n', data).map(|i| i + 1));
    for pos in candidates {
        let rest = data.get(pos..)?;
        match sniff(rest) {
            s if s == want => return Some(pos),
            // A candidate cut by the end of this chunk: resume from it.
            Sniff::NeedMore if !rest.is_empty() => return Some(pos),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The headers dropped from parsed heads are the ones masked in raw output, and the ones
    /// redacted from command lines: one list.
    #[test]
    fn every_credential_header_is_dropped() {
        for name in [
            "Authorization",
            "x-api-key",
            "X-Auth-Token",
            "x-goog-api-key",
            "cookie",
        ] {
            assert!(is_credential_header(name), "{name}");
        }
        for name in crate::credentials::CREDENTIAL_HEADERS {
            assert!(is_credential_header(name), "{name}");
        }
        assert!(!is_credential_header("content-type"));
    }

    #[test]
    fn request_head_in_pieces_drops_credentials() {
        let raw = b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: api.openai.com\r\nAuthorization: Bearer sk-secret\r\nX-Api-Key: k\r\nContent-Length: 2\r\n\r\n{}";
        let mut acc = HeadAccumulator::default();
        let mut used = 0;
        let mut done = false;
        for piece in raw.chunks(3) {
            if done {
                break;
            }
            let (n, d) = acc.push(piece, 4096).unwrap();
            used += n;
            done = d;
        }
        assert!(done);
        assert_eq!(&raw[used..], b"{}");
        let head = acc.parse_request().unwrap();
        assert_eq!(head.method, "POST");
        assert_eq!(head.path(), "/v1/chat/completions");
        assert_eq!(head.query(), Some("x=1"));
        assert_eq!(head.headers.get("host"), Some("api.openai.com"));
        assert_eq!(head.headers.get("authorization"), None);
        assert_eq!(head.headers.get("x-api-key"), None);
        assert_eq!(head.headers.get("content-length"), Some("2"));
    }

    /// The definition `push` implements line by line: one byte at a time.
    fn push_bytewise(
        buf: &mut Vec<u8>,
        data: &[u8],
        cap: usize,
    ) -> Result<(usize, bool), HeadError> {
        for (i, &b) in data.iter().enumerate() {
            buf.push(b);
            if b == b'\n' && (buf.ends_with(b"\r\n\r\n") || buf.ends_with(b"\n\n")) {
                return Ok((i + 1, true));
            }
            if buf.len() > cap {
                return Err(HeadError::TooLarge(cap));
            }
            if buf == b"\r\n" || buf == b"\n" {
                buf.clear();
            }
        }
        Ok((data.len(), false))
    }

    proptest::proptest! {
        #[test]
        fn push_matches_the_bytewise_definition(
            pieces in proptest::collection::vec(
                proptest::collection::vec(proptest::sample::select(b"\r\nab:".to_vec()), 0..24),
                1..8,
            ),
            cap in 0usize..64,
        ) {
            let mut acc = HeadAccumulator::default();
            let mut reference = Vec::new();
            for piece in &pieces {
                let got = acc.push(piece, cap);
                let want = push_bytewise(&mut reference, piece, cap);
                proptest::prop_assert_eq!(&got, &want);
                if !matches!(got, Ok((_, false))) {
                    break;
                }
                proptest::prop_assert_eq!(&acc.buf, &reference);
            }
        }
    }

    #[test]
    fn headers_keep_wire_order_and_lower_case_names() {
        let mut headers: Headers = [("Content-Type", "application/json"), ("X-Request-Id", "a")]
            .into_iter()
            .collect();
        headers.push("content-type", "text/plain");
        assert_eq!(headers.len(), 3);
        assert_eq!(
            headers.iter().collect::<Vec<_>>(),
            [
                ("content-type", "application/json"),
                ("x-request-id", "a"),
                ("content-type", "text/plain")
            ]
        );
        assert_eq!(headers.get("CONTENT-TYPE"), Some("application/json"));
        assert_eq!(headers.get("accept"), None);
        assert!(headers.has_token("content-type", "TEXT/PLAIN"));
        assert!(Headers::default().is_empty());
    }

    #[test]
    fn head_cap_is_enforced() {
        let mut acc = HeadAccumulator::default();
        let long = vec![b'a'; 100];
        assert_eq!(acc.push(&long, 50), Err(HeadError::TooLarge(50)));
    }

    #[test]
    fn sniffing() {
        assert_eq!(sniff(b"POST / HTTP/1.1"), Sniff::Request);
        assert_eq!(sniff(b"PO"), Sniff::NeedMore);
        assert_eq!(sniff(b"HTTP/1.1 200 OK"), Sniff::Response);
        assert_eq!(sniff(b"PRI * HTTP/2.0\r\n"), Sniff::Http2Preface);
        assert_eq!(sniff(b"\x16\x03\x01"), Sniff::Other);
        assert_eq!(
            find_message_start(b"junk\r\nHTTP/1.1 200", false, Sniff::Response),
            Some(6)
        );
        assert_eq!(
            find_message_start(b"junk junk", false, Sniff::Response),
            None
        );
    }
}
