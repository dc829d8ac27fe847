//! The one list of where credentials travel in HTTP (header names, URL query parameters), used
//! wherever llmtap masks or drops them: raw output (`capture`), parsed heads (`http`), exported
//! command lines (`export`).

/// Header names whose values are credentials (lower case).
pub const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "cookie",
    "set-cookie",
    "x-amz-security-token",
    "x-auth-token",
];

/// URL query parameters that carry keys (Gemini accepts `?key=`).
pub const CREDENTIAL_QUERY_PARAMS: &[&str] = &[
    "key",
    "api_key",
    "api-key",
    "apikey",
    "access_token",
    "token",
    "sig",
];

/// Whether an HTTP header (any case) holds a credential.
pub fn is_credential_header(name: &str) -> bool {
    let name = name.trim();
    CREDENTIAL_HEADERS
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name))
}
