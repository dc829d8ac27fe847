//! Which LLM API a request is: provider (from host and headers), API shape (from path).

use crate::http::RequestHead;

use super::record::Operation;

/// API shapes llmtap understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Api {
    ChatCompletions,
    Responses,
    Completions,
    Embeddings,
    AnthropicMessages,
    GeminiGenerateContent,
    BedrockConverse,
    BedrockInvokeModel,
    OllamaChat,
    OllamaGenerate,
    CohereChatV2,
    /// llama.cpp server's native `/completion`.
    LlamaCppCompletion,
    /// OpenAI Realtime (WebSocket only): one call per response.
    Realtime,
}

impl Api {
    /// `CallRecord::api` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::ChatCompletions => "chat_completions",
            Api::Responses => "responses",
            Api::Completions => "completions",
            Api::Embeddings => "embeddings",
            Api::AnthropicMessages => "anthropic_messages",
            Api::GeminiGenerateContent => "gemini_generate_content",
            Api::BedrockConverse => "bedrock_converse",
            Api::BedrockInvokeModel => "bedrock_invoke_model",
            Api::OllamaChat => "ollama_chat",
            Api::OllamaGenerate => "ollama_generate",
            Api::CohereChatV2 => "cohere_chat_v2",
            Api::LlamaCppCompletion => "llama_cpp_completion",
            Api::Realtime => "realtime",
        }
    }

    pub fn operation(self) -> Operation {
        match self {
            Api::Completions | Api::OllamaGenerate | Api::LlamaCppCompletion => {
                Operation::TextCompletion
            }
            Api::Embeddings => Operation::Embeddings,
            Api::GeminiGenerateContent => Operation::GenerateContent,
            _ => Operation::Chat,
        }
    }

    /// OpenAI-shaped bodies (`choices`, `usage.prompt_tokens`).
    pub fn is_openai_shaped(self) -> bool {
        matches!(
            self,
            Api::ChatCompletions | Api::Completions | Api::Embeddings
        )
    }
}

/// How a streamed response body is framed, when the endpoint decides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamHint {
    /// Decided by the request body (`"stream": true`) and the response content type.
    FromBody,
    /// Gemini `streamGenerateContent` (SSE with `alt=sse`, else a JSON array).
    GeminiStream {
        sse: bool,
    },
    /// Bedrock `converse-stream` / `invoke-with-response-stream`.
    BedrockStream,
    /// Events over a WebSocket: always streamed.
    WebSocket,
    NotStreamed,
}

/// A recognised LLM API request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiTarget {
    pub api: Api,
    pub provider: String,
    pub server_address: Option<String>,
    pub server_port: Option<u16>,
    /// Model named by the URL (Gemini, Bedrock).
    pub path_model: Option<String>,
    pub stream: StreamHint,
    /// The provider was named after the API shape alone (an OpenAI-compatible path on a host
    /// llmtap does not know): the response's headers and body may tell the server apart.
    pub provider_from_shape: bool,
}

/// Host and port of the `Host` header; the port only when the header names one (the default
/// depends on the transport: 443 over TLS, 80 over plain TCP).
pub fn split_host(host: &str) -> (String, Option<u16>) {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        // IPv6 literal.
        let (addr, tail) = rest.split_once(']').unwrap_or((rest, ""));
        let port = tail.strip_prefix(':').and_then(|p| p.parse().ok());
        return (addr.to_ascii_lowercase(), port);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty() => {
            (h.to_ascii_lowercase(), p.parse().ok())
        }
        _ => (host.to_ascii_lowercase(), None),
    }
}

/// Providers told apart by the response of an OpenAI-compatible server on an unknown host:
/// a LiteLLM proxy (`x-litellm-*` headers), llama.cpp's server (`Server: llama.cpp`).
pub fn provider_from_response_headers(headers: &crate::http::Headers) -> Option<&'static str> {
    if headers.iter().any(|(name, _)| {
        name.get(..10)
            .is_some_and(|p| p.eq_ignore_ascii_case("x-litellm-"))
    }) {
        return Some("litellm");
    }
    if headers
        .get("server")
        .is_some_and(|s| s.to_ascii_lowercase().starts_with("llama.cpp"))
    {
        return Some("llama_cpp");
    }
    None
}

/// Every `gen_ai.provider.name` llmtap names itself: the semantic conventions' well-known
/// values and the providers its host table or a server's responses name. An OpenAI-compatible
/// call to another server is `openai` (the API shape, as the conventions advise), with
/// `server.address` telling servers apart.
pub const KNOWN_PROVIDERS: &[&str] = &[
    // Semconv well-known values.
    "anthropic",
    "aws.bedrock",
    "azure.ai.inference",
    "azure.ai.openai",
    "cohere",
    "deepseek",
    "gcp.gemini",
    "gcp.gen_ai",
    "gcp.vertex_ai",
    "groq",
    "ibm.watsonx.ai",
    "mistral_ai",
    "openai",
    "perplexity",
    "x_ai",
    // Recognised by llmtap's host table, or by an OpenAI-compatible server's responses.
    "litellm",
    "llama_cpp",
    "moonshot_ai",
    "ollama",
    "openrouter",
    "together_ai",
    "vllm",
];

/// Whether `provider` is one of [`KNOWN_PROVIDERS`] (not a host name fallback).
pub fn is_known_provider(provider: &str) -> bool {
    KNOWN_PROVIDERS.contains(&provider)
}

fn host_provider(host: &str, port: u16) -> Option<&'static str> {
    let table: [(&str, &str); 14] = [
        ("api.openai.com", "openai"),
        ("api.anthropic.com", "anthropic"),
        ("api.groq.com", "groq"),
        ("api.mistral.ai", "mistral_ai"),
        ("api.deepseek.com", "deepseek"),
        ("api.x.ai", "x_ai"),
        ("api.perplexity.ai", "perplexity"),
        ("openrouter.ai", "openrouter"),
        ("api.together.xyz", "together_ai"),
        ("api.together.ai", "together_ai"),
        ("api.cohere.com", "cohere"),
        ("api.cohere.ai", "cohere"),
        ("generativelanguage.googleapis.com", "gcp.gemini"),
        ("api.moonshot.ai", "moonshot_ai"),
    ];
    if let Some((_, p)) = table.iter().find(|(h, _)| *h == host) {
        return Some(p);
    }
    if host.ends_with(".openai.azure.com")
        || host.ends_with(".services.ai.azure.com")
        || host.ends_with(".cognitiveservices.azure.com")
    {
        return Some("azure.ai.openai");
    }
    if host.ends_with("aiplatform.googleapis.com") {
        return Some("gcp.vertex_ai");
    }
    if host.starts_with("bedrock-runtime") && host.ends_with(".amazonaws.com") {
        return Some("aws.bedrock");
    }
    if port == 11434 {
        return Some("ollama");
    }
    None
}

/// Percent-decoding of a path segment (Bedrock model ids: `amazon.nova-lite-v1%3A0`).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%'
            && let (Some(h), Some(l)) = (bytes.get(i + 1), bytes.get(i + 2))
            && let (Some(h), Some(l)) = ((*h as char).to_digit(16), (*l as char).to_digit(16))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The request's `Host` header as (lower-case host, port when given).
pub(crate) fn host_of(head: &RequestHead) -> (Option<String>, Option<u16>) {
    head.headers
        .get("host")
        .map(split_host)
        .map_or((None, None), |(h, p)| (Some(h), p))
}

/// Recognises the LLM API of a WebSocket from its upgrade request (`GET` with `Upgrade:
/// websocket`): the Responses API (`/v1/responses`, the Codex CLI's default transport) or
/// Realtime (`/v1/realtime?model=…`; Azure names the deployment). `None` for other sockets.
pub fn identify_websocket(head: &RequestHead) -> Option<ApiTarget> {
    if !head.method.eq_ignore_ascii_case("GET") {
        return None;
    }
    let (host, port) = host_of(head);
    let host_str = host.as_deref().unwrap_or("");
    let path = head.path().trim_end_matches('/');
    let query = head.query().unwrap_or("");
    let query_value = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .map(percent_decode)
            .filter(|v| !v.is_empty())
    };
    let (api, path_model) =
        if path.ends_with("/v1/responses") || path.ends_with("/openai/responses") {
            (Api::Responses, None)
        } else if path.ends_with("/v1/realtime") || path.ends_with("/openai/realtime") {
            (
                Api::Realtime,
                query_value("model").or_else(|| query_value("deployment")),
            )
        } else {
            return None;
        };
    // As for HTTP calls: an unknown host is an OpenAI-compatible server, named by its answers.
    let known = host_provider(host_str, port.unwrap_or(443));
    let provider = known.unwrap_or("openai").to_string();
    Some(ApiTarget {
        api,
        provider,
        server_address: host,
        server_port: port,
        path_model,
        stream: StreamHint::WebSocket,
        provider_from_shape: known.is_none(),
    })
}

/// Recognises an LLM API call from its request head; `None` for any other HTTP request.
pub fn identify(head: &RequestHead) -> Option<ApiTarget> {
    if !head.method.eq_ignore_ascii_case("POST") {
        return None;
    }
    let (host, port) = host_of(head);
    let host_str = host.as_deref().unwrap_or("");
    let known = host_provider(host_str, port.unwrap_or(443));
    let path = head.path().trim_end_matches('/');
    let query = head.query().unwrap_or("");

    let mut target = ApiTarget {
        api: Api::ChatCompletions,
        provider: String::new(),
        server_address: host.clone(),
        server_port: port,
        path_model: None,
        stream: StreamHint::FromBody,
        provider_from_shape: false,
    };

    // Gemini / Vertex: `.../models/{model}:generateContent` or `:streamGenerateContent`.
    if let Some((before, method)) = path.rsplit_once(':')
        && let Some(model_pos) = before.rfind("/models/")
        && (method == "generateContent" || method == "streamGenerateContent")
    {
        target.api = Api::GeminiGenerateContent;
        target.path_model = before
            .get(model_pos + "/models/".len()..)
            .map(percent_decode);
        target.stream = if method == "streamGenerateContent" {
            StreamHint::GeminiStream {
                sse: query.split('&').any(|kv| kv == "alt=sse"),
            }
        } else {
            StreamHint::NotStreamed
        };
        target.provider = known.unwrap_or("gcp.gen_ai").to_string();
        return Some(target);
    }

    // Bedrock runtime: `/model/{modelId}/{converse|converse-stream|invoke|invoke-with-response-stream}`.
    if let Some(rest) = path.strip_prefix("/model/")
        && let Some((model, action)) = rest.rsplit_once('/')
    {
        let (api, stream) = match action {
            "converse" => (Api::BedrockConverse, StreamHint::NotStreamed),
            "converse-stream" => (Api::BedrockConverse, StreamHint::BedrockStream),
            "invoke" => (Api::BedrockInvokeModel, StreamHint::NotStreamed),
            "invoke-with-response-stream" => (Api::BedrockInvokeModel, StreamHint::BedrockStream),
            _ => return None,
        };
        if known != Some("aws.bedrock") && !host_str.contains("bedrock") {
            return None;
        }
        target.api = api;
        target.stream = stream;
        target.path_model = Some(percent_decode(model));
        target.provider = "aws.bedrock".to_string();
        return Some(target);
    }

    let api = if path.ends_with("/chat/completions") {
        Api::ChatCompletions
    } else if path.ends_with("/v1/responses") || path.ends_with("/openai/responses") {
        Api::Responses
    } else if path.ends_with("/v1/completions")
        || path.ends_with("/openai/completions")
        || (path.starts_with("/openai/deployments/") && path.ends_with("/completions"))
    {
        Api::Completions
    } else if path.ends_with("/embeddings") {
        Api::Embeddings
    } else if path.ends_with("/v1/messages")
        && (known == Some("anthropic") || head.headers.get("anthropic-version").is_some())
    {
        target.provider = known.unwrap_or("anthropic").to_string();
        target.api = Api::AnthropicMessages;
        return Some(target);
    } else if path == "/api/chat" || path == "/api/generate" {
        target.api = if path == "/api/chat" {
            Api::OllamaChat
        } else {
            Api::OllamaGenerate
        };
        target.provider = "ollama".to_string();
        return Some(target);
    } else if path == "/completion" {
        // llama.cpp's native endpoint (its OpenAI-compatible ones are `/v1/...`).
        target.api = Api::LlamaCppCompletion;
        target.provider = "llama_cpp".to_string();
        return Some(target);
    } else if path == "/v2/chat" {
        target.api = Api::CohereChatV2;
        target.provider = known.unwrap_or("cohere").to_string();
        return Some(target);
    } else {
        return None;
    };
    target.api = api;
    target.provider = known.unwrap_or("openai").to_string();
    target.provider_from_shape = known.is_none();
    Some(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_provider_of_the_host_table_is_known() {
        for host in [
            "api.openai.com",
            "api.anthropic.com",
            "api.groq.com",
            "api.mistral.ai",
            "api.deepseek.com",
            "api.x.ai",
            "api.perplexity.ai",
            "openrouter.ai",
            "api.together.xyz",
            "api.cohere.com",
            "generativelanguage.googleapis.com",
            "api.moonshot.ai",
            "x.openai.azure.com",
            "us-aiplatform.googleapis.com",
            "bedrock-runtime.us-east-1.amazonaws.com",
        ] {
            let p = host_provider(host, 443).unwrap_or("none");
            assert!(is_known_provider(p), "{host}: {p}");
        }
        assert!(is_known_provider(
            host_provider("h", 11434).unwrap_or("none")
        ));
        assert!(!is_known_provider("llm.internal.example.com"));
    }

    fn head(method: &str, target: &str, host: &str) -> RequestHead {
        RequestHead {
            method: method.into(),
            target: target.into(),
            major_version: 1,
            minor_version: 1,
            headers: [("host", host)].into_iter().collect(),
        }
    }

    #[test]
    fn providers_and_apis() {
        let cases = [
            (
                "/v1/chat/completions",
                "api.openai.com",
                "openai",
                Api::ChatCompletions,
            ),
            ("/v1/responses", "api.openai.com", "openai", Api::Responses),
            (
                "/v1/completions",
                "api.openai.com",
                "openai",
                Api::Completions,
            ),
            (
                "/v1/embeddings",
                "api.openai.com",
                "openai",
                Api::Embeddings,
            ),
            (
                "/openai/deployments/dep/chat/completions?api-version=2024-02-01",
                "res.openai.azure.com",
                "azure.ai.openai",
                Api::ChatCompletions,
            ),
            (
                "/openai/v1/responses",
                "res.openai.azure.com",
                "azure.ai.openai",
                Api::Responses,
            ),
            (
                "/openai/v1/chat/completions",
                "api.groq.com",
                "groq",
                Api::ChatCompletions,
            ),
            (
                "/v1/chat/completions",
                "llm.internal:8000",
                "openai",
                Api::ChatCompletions,
            ),
            (
                "/v1/chat/completions",
                "10.0.3.7:8000",
                "openai",
                Api::ChatCompletions,
            ),
            (
                "/v1/chat/completions",
                "localhost:11434",
                "ollama",
                Api::ChatCompletions,
            ),
            ("/api/chat", "127.0.0.1:11434", "ollama", Api::OllamaChat),
            (
                "/api/generate",
                "127.0.0.1:11434",
                "ollama",
                Api::OllamaGenerate,
            ),
            ("/v2/chat", "api.cohere.com", "cohere", Api::CohereChatV2),
            (
                "/completion",
                "10.0.0.9:8080",
                "llama_cpp",
                Api::LlamaCppCompletion,
            ),
            (
                "/api/v1/chat/completions",
                "openrouter.ai",
                "openrouter",
                Api::ChatCompletions,
            ),
        ];
        for (path, host, provider, api) in cases {
            let t = identify(&head("POST", path, host)).unwrap_or_else(|| panic!("{path}"));
            assert_eq!(
                (t.provider.as_str(), t.api),
                (provider, api),
                "{host}{path}"
            );
        }
    }

    #[test]
    fn path_models_and_streams() {
        let t = identify(&head(
            "POST",
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            "generativelanguage.googleapis.com",
        ))
        .unwrap();
        assert_eq!(t.path_model.as_deref(), Some("gemini-2.5-flash"));
        assert_eq!(t.stream, StreamHint::GeminiStream { sse: true });
        let t = identify(&head(
            "POST",
            "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-pro:generateContent",
            "us-central1-aiplatform.googleapis.com",
        ))
        .unwrap();
        assert_eq!(t.provider, "gcp.vertex_ai");
        let t = identify(&head(
            "POST",
            "/model/us.anthropic.claude-3-haiku%3A0/invoke-with-response-stream",
            "bedrock-runtime.us-east-1.amazonaws.com",
        ))
        .unwrap();
        assert_eq!(t.api, Api::BedrockInvokeModel);
        assert_eq!(
            t.path_model.as_deref(),
            Some("us.anthropic.claude-3-haiku:0")
        );
        assert_eq!(t.server_port, None, "no port in the Host header");
        let t = identify(&head("POST", "/api/chat", "ollama.ai-system:11434")).unwrap();
        assert_eq!(t.server_port, Some(11434));
        assert!(!t.provider_from_shape);
        let t = identify(&head("POST", "/v1/chat/completions", "vllm.models.svc")).unwrap();
        assert!(t.provider_from_shape);
    }

    #[test]
    fn openai_compatible_servers_from_their_responses() {
        use crate::http::Headers;
        let headers =
            |name: &str, value: &str| -> Headers { [(name, value)].into_iter().collect() };
        assert_eq!(
            provider_from_response_headers(&headers("x-litellm-call-id", "abc")),
            Some("litellm")
        );
        assert_eq!(
            provider_from_response_headers(&headers("Server", "llama.cpp")),
            Some("llama_cpp")
        );
        assert_eq!(
            provider_from_response_headers(&headers("server", "uvicorn")),
            None
        );
        for p in ["litellm", "llama_cpp", "vllm", "ollama"] {
            assert!(is_known_provider(p), "{p}");
        }
    }

    #[test]
    fn websocket_upgrades() {
        let t = identify_websocket(&head("GET", "/v1/responses", "api.openai.com")).unwrap();
        assert_eq!((t.api, t.provider.as_str()), (Api::Responses, "openai"));
        assert_eq!(t.stream, StreamHint::WebSocket);
        let t = identify_websocket(&head(
            "GET",
            "/v1/realtime?model=gpt-realtime%2D2025&x=1",
            "api.openai.com",
        ))
        .unwrap();
        assert_eq!(t.api, Api::Realtime);
        assert_eq!(t.path_model.as_deref(), Some("gpt-realtime-2025"));
        let t = identify_websocket(&head(
            "GET",
            "/openai/realtime?api-version=2025-04-01-preview&deployment=rt",
            "res.openai.azure.com",
        ))
        .unwrap();
        assert_eq!(
            (t.provider.as_str(), t.path_model.as_deref()),
            ("azure.ai.openai", Some("rt"))
        );
        assert!(identify_websocket(&head("POST", "/v1/responses", "api.openai.com")).is_none());
        assert!(identify_websocket(&head("GET", "/socket", "api.openai.com")).is_none());
    }

    #[test]
    fn non_llm_requests() {
        assert!(identify(&head("GET", "/v1/models", "api.openai.com")).is_none());
        assert!(identify(&head("POST", "/upload", "example.com")).is_none());
        assert!(identify(&head("GET", "/v1/chat/completions", "api.openai.com")).is_none());
        assert!(identify(&head("POST", "/v1/messages", "example.com")).is_none());
    }
}
