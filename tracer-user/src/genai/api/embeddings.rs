//! OpenAI Embeddings (`/v1/embeddings`) and compatible servers.

use std::fmt;

use base64::Engine as _;
use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::chat_completions::Usage;
use super::sampling::{StopKey, sampling_request};
use super::wire::{Field, List, Obj, Text, parse};
use super::{ApiShape, ErrorDetail, ReadError, body_error};
use crate::genai::record::RequestParams;
use crate::genai::response::ResponseAcc;

pub struct Embeddings;

sampling_request!(EmbeddingsRequest {});

/// The length of one embedding: a float array, or base64 little-endian f32s. The vector
/// itself is never kept.
#[derive(Default)]
struct Dimension(Option<u64>);

impl<'de> Deserialize<'de> for Dimension {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Dimension;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an embedding")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Dimension, A::Error> {
                let mut n = 0;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(Dimension(Some(n)))
            }
            fn visit_str<E>(self, b64: &str) -> Result<Dimension, E> {
                Ok(Dimension(
                    base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .ok()
                        .map(|b| b.len() as u64 / 4),
                ))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Dimension, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Dimension(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Dimension, E> {
                Ok(Dimension(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Dimension, E> {
                Ok(Dimension(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Dimension, E> {
                Ok(Dimension(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Dimension, E> {
                Ok(Dimension(None))
            }
            fn visit_unit<E>(self) -> Result<Dimension, E> {
                Ok(Dimension(None))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Item {
    embedding: Dimension,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct EmbeddingsResponse<'a> {
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow)]
    model: Text<'a>,
    #[serde(borrow)]
    error: Field<ErrorDetail<'a>>,
    #[serde(borrow)]
    message: Text<'a>,
    data: List<Obj<Item>>,
    usage: Obj<Usage>,
}

fn read(bytes: &[u8], acc: &mut ResponseAcc) -> Result<(), ReadError> {
    let Obj(Some(v)) = parse::<Obj<EmbeddingsResponse>>(bytes)? else {
        return Ok(());
    };
    acc.first_id(&v.id);
    acc.first_model(&v.model);
    if v.error.present {
        acc.error = Some(body_error(v.error.obj.as_ref(), &v.message));
    }
    if acc.embeddings_dimension.is_none()
        && let Some(first) = v.data.first()
    {
        acc.embeddings_dimension = first.get().and_then(|i| i.embedding.0);
    }
    if let Some(u) = v.usage.get() {
        u.apply(acc);
    }
    Ok(())
}

impl ApiShape for Embeddings {
    fn read_request(
        &self,
        body: &[u8],
        _with_content: bool,
        params: &mut RequestParams,
    ) -> Result<(), ReadError> {
        let r: EmbeddingsRequest = parse(body)?;
        r.sampling().apply(StopKey::Stop, params);
        Ok(())
    }

    fn read_body(&self, body: &[u8], acc: &mut ResponseAcc) -> Result<(), ReadError> {
        read(body, acc)
    }

    fn read_event(
        &self,
        _event_type: Option<&str>,
        payload: &[u8],
        _ts_ns: u64,
        acc: &mut ResponseAcc,
    ) -> Result<(), ReadError> {
        read(payload, acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dimension_of_floats_and_base64() {
        let dim = |j: &str| {
            let mut acc = ResponseAcc::new(false, 0, 0);
            Embeddings.read_body(j.as_bytes(), &mut acc).unwrap();
            (acc.embeddings_dimension, acc.usage.input_tokens)
        };
        assert_eq!(
            dim(r#"{"data":[{"embedding":[0.1,0.2,0.3]}],"usage":{"prompt_tokens":4}}"#),
            (Some(3), Some(4))
        );
        // Two little-endian f32s.
        assert_eq!(dim(r#"{"data":[{"embedding":"AAAAAAAAAAA="}]}"#).0, Some(2));
        assert_eq!(dim(r#"{"data":[{"embedding":7}]}"#).0, None);
    }
}
