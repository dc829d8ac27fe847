//! Credential masking for anything llmtap shows or records of raw traffic.
//!
//! Credentials never leave the process: header values of `Authorization`, `x-api-key`,
//! `api-key`, cookies and friends, and API keys passed as URL query parameters, are replaced
//! by `*` before bytes are printed. Masking keeps the length so stream offsets stay valid, and
//! it is streaming: a header split across two TLS writes is still masked.

pub use crate::credentials::{CREDENTIAL_HEADERS, CREDENTIAL_QUERY_PARAMS, is_credential_header};

const NAME_MAX: usize = 32;

/// Streaming masker for one direction of one connection.
#[derive(Debug, Default, Clone)]
pub struct CredentialMasker {
    /// Header name collected since the start of the line (up to `NAME_MAX` bytes).
    name: Vec<u8>,
    /// The line's first `:` was seen (the rest is a header value).
    past_colon: bool,
    /// Inside a credential header value: mask until the end of the line.
    masking_header: bool,
    /// Query parameter name collected since the last `?` or `&`.
    param: Vec<u8>,
    in_query: bool,
    masking_param: bool,
}

impl CredentialMasker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Masks credentials in `data` in place; state carries over to the next call.
    pub fn mask(&mut self, data: &mut [u8]) {
        for byte in data.iter_mut() {
            let b = *byte;
            if b == b'\n' || b == b'\r' {
                *self = Self::default();
                continue;
            }
            if self.masking_header {
                *byte = b'*';
                continue;
            }
            if self.masking_param {
                if matches!(b, b'&' | b' ' | b'#') {
                    self.masking_param = false;
                    self.param.clear();
                } else {
                    *byte = b'*';
                    continue;
                }
            }
            if !self.past_colon {
                if b == b':' {
                    self.past_colon = true;
                    if std::str::from_utf8(&self.name).is_ok_and(is_credential_header) {
                        self.masking_header = true;
                    }
                } else if self.name.len() < NAME_MAX {
                    self.name.push(b);
                } else {
                    // Too long to be a header name we care about.
                    self.past_colon = true;
                }
            }
            match b {
                b'?' | b'&' => {
                    self.in_query = true;
                    self.param.clear();
                }
                b'=' if self.in_query => {
                    let name = String::from_utf8_lossy(&self.param);
                    if CREDENTIAL_QUERY_PARAMS
                        .iter()
                        .any(|p| p.eq_ignore_ascii_case(&name))
                    {
                        self.masking_param = true;
                    }
                    self.param.clear();
                }
                b' ' => {
                    self.in_query = false;
                    self.param.clear();
                }
                _ if self.in_query && self.param.len() < NAME_MAX => self.param.push(b),
                _ => {}
            }
        }
    }
}

/// Masks one self-contained piece of text (e.g. a log line or a header block).
pub fn mask_credentials(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    CredentialMasker::new().mask(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(s: &str) -> String {
        String::from_utf8(mask_credentials(s.as_bytes())).unwrap()
    }

    #[test]
    fn masks_credential_headers_keeping_length() {
        let req = "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nAuthorization: Bearer sk-secret\r\nx-api-key: abc\r\nAPI-Key: k\r\nCookie: a=b\r\nContent-Type: application/json\r\n\r\n{\"authorization\": 1}";
        let out = masked(req);
        assert_eq!(out.len(), req.len());
        assert!(!out.contains("sk-secret"));
        assert!(!out.contains("abc\r"));
        assert!(!out.contains("a=b"));
        assert!(out.contains("Authorization:*****************\r\n"));
        assert!(out.contains("Host: api.openai.com"));
        assert!(out.contains("Content-Type: application/json"));
        assert!(
            out.contains("{\"authorization\": 1}"),
            "JSON body untouched: {out}"
        );
    }

    #[test]
    fn masks_across_chunk_boundaries() {
        let req = b"GET / HTTP/1.1\r\nAuthori";
        let rest = b"zation: Bearer sk-split-secret\r\nAccept: */*\r\n\r\n";
        let mut masker = CredentialMasker::new();
        let mut a = req.to_vec();
        let mut b = rest.to_vec();
        masker.mask(&mut a);
        masker.mask(&mut b);
        let out = String::from_utf8([a, b].concat()).unwrap();
        assert!(!out.contains("sk-split-secret"), "{out}");
        assert!(out.contains("Accept: */*"));
    }

    #[test]
    fn masks_query_keys() {
        let line = "POST /v1beta/models/gemini:generateContent?alt=sse&key=AIzaSecret HTTP/1.1\r\n";
        let out = masked(line);
        assert!(!out.contains("AIzaSecret"), "{out}");
        assert!(out.contains("alt=sse&key=********** HTTP/1.1"));
    }

    #[test]
    fn header_names_match_any_case() {
        assert!(is_credential_header("X-Goog-Api-Key"));
        assert!(is_credential_header(" authorization "));
        assert!(!is_credential_header("x-request-id"));
    }
}
