//! AWS `application/vnd.amazon.eventstream` framing (Bedrock streams):
//! `[u32 total_len][u32 headers_len][u32 prelude_crc][headers][payload][u32 message_crc]`,
//! all big-endian, CRC-32 (IEEE) via `crc32fast`.

/// One decoded message: the string headers that matter and the payload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventStreamMessage {
    /// `:message-type` (`event`, `exception`, `error`).
    pub message_type: Option<String>,
    /// `:event-type` (e.g. `contentBlockDelta`, `chunk`).
    pub event_type: Option<String>,
    /// `:exception-type` for exceptions.
    pub exception_type: Option<String>,
    /// `:error-code` for errors.
    pub error_code: Option<String>,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventStreamError {
    #[error("prelude CRC mismatch")]
    PreludeCrc,
    #[error("message CRC mismatch")]
    MessageCrc,
    #[error("message length {0} out of range")]
    Length(u32),
    #[error("malformed header block")]
    Headers,
}

const PRELUDE_LEN: usize = 12;
const MIN_MESSAGE: u32 = 16;

/// Incremental decoder; a message larger than the cap or a CRC error stops decoding.
#[derive(Debug)]
pub struct EventStreamDecoder {
    buf: Vec<u8>,
    cap: usize,
    failed: Option<EventStreamError>,
}

impl EventStreamDecoder {
    pub fn new(cap: usize) -> Self {
        EventStreamDecoder {
            buf: Vec::new(),
            cap,
            failed: None,
        }
    }

    pub fn error(&self) -> Option<&EventStreamError> {
        self.failed.as_ref()
    }

    /// Bytes were lost: frame boundaries are unknown from here on.
    pub fn lost_bytes(&mut self) {
        self.buf.clear();
        self.failed = Some(EventStreamError::Length(0));
    }

    pub fn feed(&mut self, data: &[u8], on_message: &mut dyn FnMut(EventStreamMessage)) {
        if self.failed.is_some() {
            return;
        }
        self.buf.extend_from_slice(data);
        loop {
            match self.next_message() {
                Ok(Some((msg, used))) => {
                    self.buf.drain(..used);
                    on_message(msg);
                }
                Ok(None) => break,
                Err(e) => {
                    self.failed = Some(e);
                    self.buf.clear();
                    break;
                }
            }
        }
    }

    fn next_message(&self) -> Result<Option<(EventStreamMessage, usize)>, EventStreamError> {
        let Some(prelude) = self.buf.get(..PRELUDE_LEN) else {
            return Ok(None);
        };
        let total = be32(prelude, 0);
        let headers_len = be32(prelude, 4);
        if crc32fast::hash(prelude.get(..8).unwrap_or_default()) != be32(prelude, 8) {
            return Err(EventStreamError::PreludeCrc);
        }
        if total < MIN_MESSAGE
            || total as usize > self.cap
            || u64::from(headers_len) + MIN_MESSAGE as u64 > u64::from(total)
        {
            return Err(EventStreamError::Length(total));
        }
        let total = total as usize;
        let Some(message) = self.buf.get(..total) else {
            return Ok(None);
        };
        let body_end = total - 4;
        if crc32fast::hash(message.get(..body_end).unwrap_or_default()) != be32(message, body_end) {
            return Err(EventStreamError::MessageCrc);
        }
        let headers_end = PRELUDE_LEN + headers_len as usize;
        let mut msg = EventStreamMessage {
            payload: message
                .get(headers_end..body_end)
                .unwrap_or_default()
                .to_vec(),
            ..Default::default()
        };
        parse_headers(
            message.get(PRELUDE_LEN..headers_end).unwrap_or_default(),
            &mut msg,
        )?;
        Ok(Some((msg, total)))
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        word.copy_from_slice(s);
    }
    u32::from_be_bytes(word)
}

fn parse_headers(mut h: &[u8], msg: &mut EventStreamMessage) -> Result<(), EventStreamError> {
    fn take<'a>(h: &mut &'a [u8], n: usize) -> Result<&'a [u8], EventStreamError> {
        let (a, b) = h.split_at_checked(n).ok_or(EventStreamError::Headers)?;
        *h = b;
        Ok(a)
    }
    while !h.is_empty() {
        let name_len = *take(&mut h, 1)?.first().unwrap_or(&0) as usize;
        let name = String::from_utf8_lossy(take(&mut h, name_len)?).into_owned();
        let kind = *take(&mut h, 1)?.first().unwrap_or(&0);
        // Value sizes per type (smithy-rs `aws-smithy-eventstream` frame.rs).
        let value: Option<String> = match kind {
            0 | 1 => None,
            2 => take(&mut h, 1).map(|_| None)?,
            3 => take(&mut h, 2).map(|_| None)?,
            4 => take(&mut h, 4).map(|_| None)?,
            5 | 8 => take(&mut h, 8).map(|_| None)?,
            6 | 7 => {
                let len = take(&mut h, 2)?;
                let len =
                    u16::from_be_bytes([*len.first().unwrap_or(&0), *len.get(1).unwrap_or(&0)])
                        as usize;
                let v = take(&mut h, len)?;
                (kind == 7).then(|| String::from_utf8_lossy(v).into_owned())
            }
            9 => take(&mut h, 16).map(|_| None)?,
            _ => return Err(EventStreamError::Headers),
        };
        match name.as_str() {
            ":message-type" => msg.message_type = value,
            ":event-type" => msg.event_type = value,
            ":exception-type" => msg.exception_type = value,
            ":error-code" => msg.error_code = value,
            _ => {}
        }
    }
    Ok(())
}

/// Encodes one message with string headers (tests, benches, replay).
pub fn encode_message(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut hb = Vec::new();
    for (name, value) in headers {
        hb.push(name.len() as u8);
        hb.extend_from_slice(name.as_bytes());
        hb.push(7);
        hb.extend_from_slice(&(value.len() as u16).to_be_bytes());
        hb.extend_from_slice(value.as_bytes());
    }
    let total = (PRELUDE_LEN + hb.len() + payload.len() + 4) as u32;
    let mut out = Vec::with_capacity(total as usize);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&(hb.len() as u32).to_be_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(&hb);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_any_split() {
        let mut wire = encode_message(
            &[(":event-type", "messageStart"), (":message-type", "event")],
            b"{\"role\":\"assistant\"}",
        );
        wire.extend(encode_message(
            &[
                (":message-type", "exception"),
                (":exception-type", "throttlingException"),
            ],
            b"{\"message\":\"slow down\"}",
        ));
        for split in 1..wire.len() {
            let mut d = EventStreamDecoder::new(1 << 20);
            let mut out = Vec::new();
            for piece in wire.chunks(split) {
                d.feed(piece, &mut |m| out.push(m));
            }
            assert_eq!(out.len(), 2, "split {split}");
            assert_eq!(out[0].event_type.as_deref(), Some("messageStart"));
            assert_eq!(out[0].payload, b"{\"role\":\"assistant\"}");
            assert_eq!(
                out[1].exception_type.as_deref(),
                Some("throttlingException")
            );
        }
    }

    #[test]
    fn corrupt_crc_stops() {
        let mut wire = encode_message(&[(":event-type", "x")], b"{}");
        let last = wire.len() - 1;
        wire[last] ^= 0xff;
        let mut d = EventStreamDecoder::new(1 << 20);
        let mut n = 0;
        d.feed(&wire, &mut |_| n += 1);
        assert_eq!(n, 0);
        assert_eq!(d.error(), Some(&EventStreamError::MessageCrc));
    }
}
