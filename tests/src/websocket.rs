//! The replay server's WebSocket side (RFC 6455 server role, `permessage-deflate` of RFC 7692
//! with or without context takeover): enough to answer an upgrade, read the client's text
//! messages and send recorded events as text messages. Frame headers are written and parsed
//! by `tungstenite`; (de)compression is `flate2` raw deflate. Real clients (Python
//! `websockets`, the Codex CLI) check it on the other end.

use std::io::Cursor;

use base64::Engine as _;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use sha1::{Digest as _, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

/// How the replay server answers WebSocket upgrades.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WsMode {
    /// Not at all: the upgrade request gets no recording (404), clients fall back to HTTP.
    Off,
    /// Accepted, without compression whatever the client offers.
    Plain,
    /// `permessage-deflate` with context takeover, when the client offers it.
    Deflate,
    /// `permessage-deflate; server_no_context_takeover; client_no_context_takeover`.
    DeflateNoContextTakeover,
}

impl std::str::FromStr for WsMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(WsMode::Off),
            "plain" => Ok(WsMode::Plain),
            "deflate" => Ok(WsMode::Deflate),
            "deflate-no-context-takeover" => Ok(WsMode::DeflateNoContextTakeover),
            other => Err(format!(
                "--websocket {other}: expected off, plain, deflate or deflate-no-context-takeover"
            )),
        }
    }
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.trim().as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// The `Sec-WebSocket-Extensions` answer to the client's offer, if compression is used.
pub fn negotiate(mode: WsMode, offer: Option<&str>) -> Option<String> {
    let offered = offer.is_some_and(|o| {
        o.split(',')
            .any(|e| e.split(';').next().unwrap_or("").trim() == "permessage-deflate")
    });
    match mode {
        WsMode::Deflate if offered => Some("permessage-deflate".into()),
        WsMode::DeflateNoContextTakeover if offered => Some(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover".into(),
        ),
        _ => None,
    }
}

/// A message from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Close,
}

/// The server end of an accepted WebSocket.
pub struct ServerSocket<S> {
    io: S,
    buf: Vec<u8>,
    /// Compression state when `permessage-deflate` was agreed: (compressor, decompressor,
    /// no context takeover).
    deflate: Option<(Compress, Decompress, bool)>,
}

const MAX_MESSAGE: usize = 16 * 1024 * 1024;

impl<S: AsyncRead + AsyncWrite + Unpin> ServerSocket<S> {
    pub fn new(io: S, extensions: Option<&str>) -> Self {
        let deflate = extensions.map(|e| {
            (
                Compress::new(Compression::default(), false),
                Decompress::new(false),
                e.contains("no_context_takeover"),
            )
        });
        ServerSocket {
            io,
            buf: Vec::new(),
            deflate,
        }
    }

    /// Reads until `n` bytes are buffered; `false` at end of stream.
    async fn fill(&mut self, n: usize) -> std::io::Result<bool> {
        while self.buf.len() < n {
            let mut chunk = [0u8; 8192];
            let got = self.io.read(&mut chunk).await?;
            if got == 0 {
                return Ok(false);
            }
            self.buf.extend_from_slice(&chunk[..got]);
        }
        Ok(true)
    }

    /// The next frame: header and unmasked payload; `None` at end of stream.
    async fn frame(&mut self) -> std::io::Result<Option<(FrameHeader, Vec<u8>)>> {
        loop {
            let mut cursor = Cursor::new(self.buf.as_slice());
            match FrameHeader::parse(&mut cursor).map_err(std::io::Error::other)? {
                Some((header, len)) => {
                    let start = cursor.position() as usize;
                    let len = usize::try_from(len)
                        .ok()
                        .filter(|&l| l <= MAX_MESSAGE)
                        .ok_or_else(|| std::io::Error::other("frame too large"))?;
                    if !self.fill(start + len).await? {
                        return Ok(None);
                    }
                    let mut payload: Vec<u8> = self.buf.drain(..start + len).skip(start).collect();
                    if let Some(mask) = header.mask {
                        for (i, b) in payload.iter_mut().enumerate() {
                            *b ^= mask[i % 4];
                        }
                    }
                    return Ok(Some((header, payload)));
                }
                None => {
                    let have = self.buf.len();
                    if !self.fill(have + 1).await? {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// The next message (pings answered on the way); `None` at end of stream.
    pub async fn recv(&mut self) -> std::io::Result<Option<Incoming>> {
        let mut message: Option<(bool, bool, Vec<u8>)> = None;
        loop {
            let Some((header, payload)) = self.frame().await? else {
                return Ok(None);
            };
            match header.opcode {
                OpCode::Control(Control::Ping) => {
                    self.send_frame(OpCode::Control(Control::Pong), false, &payload)
                        .await?;
                    continue;
                }
                OpCode::Control(Control::Close) => return Ok(Some(Incoming::Close)),
                OpCode::Control(_) => continue,
                OpCode::Data(Data::Continue) => {
                    if let Some((_, _, data)) = message.as_mut() {
                        data.extend_from_slice(&payload);
                    }
                }
                OpCode::Data(kind) => {
                    message = Some((kind == Data::Text, header.rsv1, payload));
                }
            }
            if header.is_final
                && let Some((text, compressed, data)) = message.take()
            {
                let data = if compressed {
                    self.inflate(&data)?
                } else {
                    data
                };
                return Ok(Some(if text {
                    Incoming::Text(data)
                } else {
                    Incoming::Binary(data)
                }));
            }
        }
    }

    fn inflate(&mut self, data: &[u8]) -> std::io::Result<Vec<u8>> {
        let Some((_, d, no_takeover)) = self.deflate.as_mut() else {
            return Err(std::io::Error::other("compressed frame without deflate"));
        };
        let mut input = data.to_vec();
        input.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let mut out = Vec::with_capacity(input.len() * 4 + 64);
        let mut rest = input.as_slice();
        loop {
            let before = d.total_in();
            let status = d
                .decompress_vec(rest, &mut out, FlushDecompress::Sync)
                .map_err(std::io::Error::other)?;
            rest = &rest[(d.total_in() - before) as usize..];
            if status == Status::StreamEnd || (rest.is_empty() && out.len() < out.capacity()) {
                break;
            }
            if out.len() > MAX_MESSAGE {
                return Err(std::io::Error::other("message too large"));
            }
            out.reserve(out.capacity().max(1024));
        }
        if *no_takeover {
            d.reset(false);
        }
        Ok(out)
    }

    async fn send_frame(
        &mut self,
        opcode: OpCode,
        rsv1: bool,
        payload: &[u8],
    ) -> std::io::Result<()> {
        let header = FrameHeader {
            is_final: true,
            rsv1,
            rsv2: false,
            rsv3: false,
            opcode,
            mask: None,
        };
        let mut out = Vec::with_capacity(payload.len() + 10);
        header
            .format(payload.len() as u64, &mut out)
            .map_err(std::io::Error::other)?;
        out.extend_from_slice(payload);
        // One write per message: each reaches the client as its own TLS record(s).
        self.io.write_all(&out).await?;
        self.io.flush().await
    }

    /// Sends one text message (compressed when agreed).
    pub async fn send_text(&mut self, text: &[u8]) -> std::io::Result<()> {
        let (payload, compressed) = match self.deflate.as_mut() {
            Some((c, _, no_takeover)) => {
                if *no_takeover {
                    c.reset();
                }
                let mut out = Vec::with_capacity(text.len() + 64);
                let mut rest = text;
                loop {
                    let before = c.total_in();
                    c.compress_vec(rest, &mut out, FlushCompress::Sync)
                        .map_err(std::io::Error::other)?;
                    rest = &rest[(c.total_in() - before) as usize..];
                    if rest.is_empty() && out.len() < out.capacity() {
                        break;
                    }
                    out.reserve(out.capacity().max(256));
                }
                if out.ends_with(&[0, 0, 0xff, 0xff]) {
                    out.truncate(out.len() - 4);
                }
                (out, true)
            }
            None => (text.to_vec(), false),
        };
        self.send_frame(OpCode::Data(Data::Text), compressed, &payload)
            .await
    }

    /// Sends a close frame (normal closure).
    pub async fn close(&mut self) -> std::io::Result<()> {
        self.send_frame(
            OpCode::Control(Control::Close),
            false,
            &1000u16.to_be_bytes(),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_of_rfc_6455() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn deflate_only_when_offered_and_asked() {
        let offer = Some("permessage-deflate; client_max_window_bits");
        assert_eq!(negotiate(WsMode::Plain, offer), None);
        assert_eq!(negotiate(WsMode::Deflate, None), None);
        assert_eq!(
            negotiate(WsMode::Deflate, offer).as_deref(),
            Some("permessage-deflate")
        );
        assert!(
            negotiate(WsMode::DeflateNoContextTakeover, offer)
                .is_some_and(|e| e.contains("server_no_context_takeover"))
        );
    }
}
