//! Plain-HTTP capture (`--plain-http`): which TCP connections the kernel copies.
//!
//! The kernel classifies each TCP connection on the first bytes it sends
//! (`tracer-ebpf/src/plain.rs`): a TLS record is never copied; an HTTP/1 request whose path
//! starts with one of [`LLM_PATH_PREFIXES`], or the h2 preface, is copied both ways; anything
//! else costs one map lookup per send or receive from then on.

use std::str::FromStr;

use tracer_common::plain::PATH_PREFIX_LEN;

/// Which plain (non-TLS) TCP connections are captured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PlainHttp {
    /// None: only TLS is captured.
    Off,
    /// Connections to any port.
    #[default]
    AllPorts,
    /// Connections to these peer ports only.
    Ports(Vec<u16>),
}

/// Most ports `--plain-http` may list (the kernel's port map size).
pub const MAX_PORTS: usize = 256;

impl FromStr for PlainHttp {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "on" => return Ok(PlainHttp::AllPorts),
            "off" => return Ok(PlainHttp::Off),
            _ => {}
        }
        let mut ports = Vec::new();
        for part in text.split(',') {
            let port: u16 = part.trim().parse().map_err(|_| {
                format!("--plain-http {text:?}: expected on, off or ports like 80,8000,11434")
            })?;
            if port == 0 {
                return Err(format!("--plain-http {text:?}: port 0"));
            }
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        if ports.len() > MAX_PORTS {
            return Err(format!(
                "--plain-http: at most {MAX_PORTS} ports, got {}",
                ports.len()
            ));
        }
        Ok(PlainHttp::Ports(ports))
    }
}

/// Request-path prefixes of the LLM APIs llmtap reads, served by model servers and gateways
/// (OpenAI-compatible `/v1/…`, Ollama `/api/…`, llama.cpp `/completion`, TGI `/generate`,
/// Azure-style `/openai/…`, Bedrock-style `/model/…`, gateways without the `/v1`), and MCP
/// servers' `/mcp` and `/sse`.
/// A plain connection whose first request matches none is not copied.
pub const LLM_PATH_PREFIXES: &[&str] = &[
    "/v1/",
    "/v1beta/",
    "/v1alpha/",
    "/v2/",
    "/api/",
    "/openai/",
    "/model/",
    "/models/",
    "/chat/",
    "/completion",
    "/embedding",
    "/generate",
    "/infill",
    "/messages",
    "/responses",
    "/engines/",
    // MCP's Streamable HTTP endpoint, by convention (tool calls of agents), and the legacy
    // HTTP+SSE transport's event stream (its POSTs go to `/messages/`).
    "/mcp",
    "/sse",
];

/// What the kernel's prefix lookup decides for a request path (for tests and logs).
pub fn is_llm_path(path: &str) -> bool {
    let path = &path.as_bytes()[..path.len().min(PATH_PREFIX_LEN)];
    LLM_PATH_PREFIXES
        .iter()
        .any(|p| path.starts_with(p.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_flag() {
        assert_eq!("on".parse(), Ok(PlainHttp::AllPorts));
        assert_eq!("off".parse(), Ok(PlainHttp::Off));
        assert_eq!(
            "11434, 8000,11434".parse(),
            Ok(PlainHttp::Ports(vec![11434, 8000]))
        );
        assert!("yes".parse::<PlainHttp>().is_err());
        assert!("0".parse::<PlainHttp>().is_err());
        assert!("70000".parse::<PlainHttp>().is_err());
    }

    #[test]
    fn llm_paths() {
        for p in [
            "/v1/chat/completions",
            "/api/chat",
            "/api/generate",
            "/completion",
            "/chat/completions",
            "/openai/deployments/x/chat/completions",
            "/v1beta/models/gemini:generateContent",
        ] {
            assert!(is_llm_path(p), "{p}");
        }
        for p in ["/", "/index.html", "/metrics", "/healthz", "/bytes/10"] {
            assert!(!is_llm_path(p), "{p}");
        }
        assert!(LLM_PATH_PREFIXES.iter().all(|p| p.len() <= PATH_PREFIX_LEN));
    }
}
