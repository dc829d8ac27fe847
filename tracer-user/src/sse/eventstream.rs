//! AWS `application/vnd.amazon.eventstream` framing (Bedrock streams):
//! `[u32 total_len][u32 headers_len][u32 prelude_crc][headers][payload][u32 message_crc]`,
//! all big-endian, CRC-32 (IEEE). Decoding goes through `aws-smithy-eventstream` (the AWS
//! SDK's own implementation); the encoder here is an independent one for tests and replay.

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
    #[error("message length {0} out of range")]
    Length(u32),
    #[error("invalid message: {0}")]
    Invalid(String),
    #[error("bytes were lost: frame boundaries unknown")]
    Lost,
}

const PRELUDE_LEN: usize = 12;
const MIN_MESSAGE: u32 = 16;

/// Incremental decoder. Frames are parsed and CRC-checked by `aws-smithy-eventstream`; this
/// wrapper bounds the buffer (a message larger than the cap stops decoding, as does a CRC
/// error) and extracts the headers Bedrock uses.
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
        self.failed = Some(EventStreamError::Lost);
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
        let Some(len_bytes) = self.buf.get(..4) else {
            return Ok(None);
        };
        let total = u32::from_be_bytes([
            *len_bytes.first().unwrap_or(&0),
            *len_bytes.get(1).unwrap_or(&0),
            *len_bytes.get(2).unwrap_or(&0),
            *len_bytes.get(3).unwrap_or(&0),
        ]);
        // Checked before waiting for the body so a bogus length cannot grow the buffer.
        if total < MIN_MESSAGE || total as usize > self.cap {
            return Err(EventStreamError::Length(total));
        }
        let Some(frame) = self.buf.get(..total as usize) else {
            return Ok(None);
        };
        let message = aws_smithy_eventstream::frame::read_message_from(frame)
            .map_err(|e| EventStreamError::Invalid(e.to_string()))?;
        let mut msg = EventStreamMessage {
            payload: message.payload().to_vec(),
            ..Default::default()
        };
        for h in message.headers() {
            let Ok(value) = h.value().as_string() else {
                continue;
            };
            let value = Some(value.as_str().to_string());
            match h.name().as_str() {
                ":message-type" => msg.message_type = value,
                ":event-type" => msg.event_type = value,
                ":exception-type" => msg.exception_type = value,
                ":error-code" => msg.error_code = value,
                _ => {}
            }
        }
        Ok(Some((msg, total as usize)))
    }
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
    fn oversized_length_is_refused_before_buffering() {
        let mut d = EventStreamDecoder::new(1024);
        d.feed(&[0xff, 0xff, 0xff, 0xf0, 0, 0], &mut |_| {});
        assert_eq!(d.error(), Some(&EventStreamError::Length(0xffff_fff0)));
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
        assert!(matches!(d.error(), Some(EventStreamError::Invalid(_))));
    }
}
