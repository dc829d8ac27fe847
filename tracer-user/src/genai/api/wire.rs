//! Lenient, borrowing JSON leaves for the per-API readers.
//!
//! A field of an unexpected type reads as absent instead of failing the whole body: a provider
//! retyping one field must never cost the values around it. Strings borrow from the buffer
//! when they hold no escapes; fields a reader does not name are skipped without allocating.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Consumes a map or a sequence that is not of the expected type.
fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Every JSON type not handled by a visitor reads as `Default` (absent).
macro_rules! absent_otherwise {
    (scalars) => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
    };
    (strings) => {
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
    };
    (null) => {
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
    };
    (map) => {
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            drain_map(map).map(|_| Default::default())
        }
    };
    (seq) => {
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            drain_seq(seq).map(|_| Default::default())
        }
    };
}

/// A JSON string; anything else is absent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Text<'a>(pub Option<Cow<'a, str>>);

impl<'a> Text<'a> {
    /// The string when present and non-empty.
    pub fn get(&self) -> Option<&str> {
        self.0.as_deref().filter(|s| !s.is_empty())
    }

    /// An owned copy when present and non-empty.
    pub fn owned(&self) -> Option<String> {
        self.get().map(str::to_string)
    }

    /// The string, empty ones included (deltas).
    pub fn raw(&self) -> &str {
        self.0.as_deref().unwrap_or("")
    }

    pub fn is(&self, s: &str) -> bool {
        self.0.as_deref() == Some(s)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Borrowed(s))))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(s.to_string()))))
            }
            fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(s))))
            }
            absent_otherwise!(scalars);
            absent_otherwise!(null);
            absent_otherwise!(map);
            absent_otherwise!(seq);
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// A leaf read from a JSON number or boolean; every other type reads as absent.
trait ScalarLeaf: Default {
    fn from_i64(_: i64) -> Self {
        Self::default()
    }
    fn from_u64(_: u64) -> Self {
        Self::default()
    }
    fn from_f64(_: f64) -> Self {
        Self::default()
    }
    fn from_bool(_: bool) -> Self {
        Self::default()
    }
}

/// The one visitor of every [`ScalarLeaf`].
struct ScalarVisitor<T>(PhantomData<T>);

impl<'de, T: ScalarLeaf> Visitor<'de> for ScalarVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_i64<E>(self, n: i64) -> Result<T, E> {
        Ok(T::from_i64(n))
    }
    fn visit_u64<E>(self, n: u64) -> Result<T, E> {
        Ok(T::from_u64(n))
    }
    fn visit_f64<E>(self, n: f64) -> Result<T, E> {
        Ok(T::from_f64(n))
    }
    fn visit_bool<E>(self, b: bool) -> Result<T, E> {
        Ok(T::from_bool(b))
    }
    absent_otherwise!(strings);
    absent_otherwise!(null);
    absent_otherwise!(map);
    absent_otherwise!(seq);
}

macro_rules! scalar_leaf {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(ScalarVisitor::<$t>(PhantomData))
            }
        }
    )*};
}

/// A JSON number as `f64` (any numeric form); anything else is absent.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Num(pub Option<f64>);

impl ScalarLeaf for Num {
    fn from_i64(n: i64) -> Self {
        Num(Some(n as f64))
    }
    fn from_u64(n: u64) -> Self {
        Num(Some(n as f64))
    }
    fn from_f64(n: f64) -> Self {
        Num(Some(n))
    }
}

/// A count: a non-negative integer, or an integral float (some servers send `12.0`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Count(pub Option<u64>);

impl ScalarLeaf for Count {
    fn from_i64(n: i64) -> Self {
        Count(u64::try_from(n).ok())
    }
    fn from_u64(n: u64) -> Self {
        Count(Some(n))
    }
    fn from_f64(f: f64) -> Self {
        Count((f.fract() == 0.0 && (0.0..1e18).contains(&f)).then_some(f as u64))
    }
}

/// A signed integer (floats are absent, as a seed is never fractional).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Int(pub Option<i64>);

impl ScalarLeaf for Int {
    fn from_i64(n: i64) -> Self {
        Int(Some(n))
    }
    fn from_u64(n: u64) -> Self {
        Int(i64::try_from(n).ok())
    }
}

/// A JSON boolean; anything else is absent.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Flag(pub Option<bool>);

impl ScalarLeaf for Flag {
    fn from_bool(b: bool) -> Self {
        Flag(Some(b))
    }
}

scalar_leaf!(Num, Count, Int, Flag);

/// A string or an array of strings (`stop: "x"` or `stop: ["x", "y"]`); other items skipped.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Strings(pub Vec<String>);

impl<'de> Deserialize<'de> for Strings {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Strings;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, s: &str) -> Result<Strings, E> {
                Ok(Strings(vec![s.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strings, A::Error> {
                let mut out = Vec::new();
                while let Some(Text(t)) = seq.next_element::<Text<'de>>()? {
                    if let Some(t) = t {
                        out.push(t.into_owned());
                    }
                }
                Ok(Strings(out))
            }
            absent_otherwise!(scalars);
            absent_otherwise!(null);
            absent_otherwise!(map);
        }
        d.deserialize_any(V)
    }
}

/// A JSON object read as `T` (whose fields are themselves lenient); anything else is absent.
#[derive(Clone, Debug, PartialEq)]
pub struct Obj<T>(pub Option<T>);

impl<T> Default for Obj<T> {
    fn default() -> Self {
        Obj(None)
    }
}

impl<T> Obj<T> {
    pub fn get(&self) -> Option<&T> {
        self.0.as_ref()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(|t| Obj(Some(t)))
            }
            absent_otherwise!(scalars);
            absent_otherwise!(strings);
            absent_otherwise!(null);
            absent_otherwise!(seq);
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// A JSON array of `T`; anything else is empty.
#[derive(Clone, Debug, PartialEq)]
pub struct List<T>(pub Vec<T>);

impl<T> Default for List<T> {
    fn default() -> Self {
        List(Vec::new())
    }
}

impl<T> std::ops::Deref for List<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = List<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<List<T>, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element::<T>()? {
                    out.push(item);
                }
                Ok(List(out))
            }
            absent_otherwise!(scalars);
            absent_otherwise!(strings);
            absent_otherwise!(null);
            absent_otherwise!(map);
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// Whether a key was present, whatever its value (`null` included), read without keeping it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Present(pub bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Present;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Present, E> {
                Ok(Present(true))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Present, E> {
                Ok(Present(true))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Present, E> {
                Ok(Present(true))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Present, E> {
                Ok(Present(true))
            }
            fn visit_str<E>(self, _: &str) -> Result<Present, E> {
                Ok(Present(true))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Present, A::Error> {
                drain_map(map).map(|_| Present(true))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Present, A::Error> {
                drain_seq(seq).map(|_| Present(true))
            }
            fn visit_unit<E>(self) -> Result<Present, E> {
                Ok(Present(true))
            }
            fn visit_none<E>(self) -> Result<Present, E> {
                Ok(Present(true))
            }
        }
        d.deserialize_any(V)
    }
}

/// A string or a number, as a string (`"rate_limit"` or `400` → `"400"`); else absent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scalar(pub Option<String>);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, s: &str) -> Result<Scalar, E> {
                Ok(Scalar((!s.is_empty()).then(|| s.to_string())))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Scalar, E> {
                Ok(Scalar(Some(n.to_string())))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Scalar, E> {
                Ok(Scalar(Some(n.to_string())))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Scalar, E> {
                Ok(Scalar(
                    serde_json::Number::from_f64(n).map(|n| n.to_string()),
                ))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Scalar, E> {
                Ok(Scalar(None))
            }
            absent_otherwise!(null);
            absent_otherwise!(map);
            absent_otherwise!(seq);
        }
        d.deserialize_any(V)
    }
}

/// A field that may be an object read as `T` or a value of another type: `present` says a
/// non-null value was there at all (an `error` that is a bare string still marks a failure).
#[derive(Clone, Debug, PartialEq)]
pub struct Field<T> {
    pub present: bool,
    pub obj: Option<T>,
    /// The value itself when it was a string or a number.
    pub scalar: Option<String>,
}

impl<T> Default for Field<T> {
    fn default() -> Self {
        Field {
            present: false,
            obj: None,
            scalar: None,
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Field<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Field<T>, A::Error> {
                let obj = T::deserialize(MapAccessDeserializer::new(map))?;
                Ok(Field {
                    present: true,
                    obj: Some(obj),
                    scalar: None,
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Field<T>, A::Error> {
                drain_seq(seq)?;
                Ok(Field {
                    present: true,
                    ..Default::default()
                })
            }
            fn visit_str<E>(self, s: &str) -> Result<Field<T>, E> {
                Ok(Field {
                    present: true,
                    obj: None,
                    scalar: (!s.is_empty()).then(|| s.to_string()),
                })
            }
            fn visit_i64<E>(self, n: i64) -> Result<Field<T>, E> {
                Ok(Field {
                    present: true,
                    obj: None,
                    scalar: Some(n.to_string()),
                })
            }
            fn visit_u64<E>(self, n: u64) -> Result<Field<T>, E> {
                Ok(Field {
                    present: true,
                    obj: None,
                    scalar: Some(n.to_string()),
                })
            }
            fn visit_f64<E>(self, n: f64) -> Result<Field<T>, E> {
                Ok(Field {
                    present: true,
                    obj: None,
                    scalar: serde_json::Number::from_f64(n).map(|n| n.to_string()),
                })
            }
            fn visit_bool<E>(self, _: bool) -> Result<Field<T>, E> {
                Ok(Field {
                    present: true,
                    ..Default::default()
                })
            }
            absent_otherwise!(null);
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// A JSON value kept as its text (tool arguments and results, message hashes).
pub type Raw<'a> = Option<&'a serde_json::value::RawValue>;

/// The text of a raw value when it is a non-empty object (`{}` means no arguments).
pub fn object_text(raw: Raw<'_>) -> Option<&str> {
    let text = raw?.get().trim();
    let inner = text.strip_prefix('{')?.strip_suffix('}')?;
    (!inner.trim().is_empty()).then_some(text)
}

/// A string value as itself, anything else as its JSON text.
pub fn value_text(raw: Raw<'_>) -> Option<String> {
    let text = raw?.get();
    if text.starts_with('"') {
        serde_json::from_str::<String>(text).ok()
    } else if text == "null" {
        None
    } else {
        Some(text.to_string())
    }
}

/// Parses `T` from a body, or `None` when it is not valid JSON of a known shape.
pub fn parse<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, serde_json::Error> {
    // One UTF-8 check of the whole body is cheaper than serde_json's check of every key and
    // string it borrows; a body with invalid UTF-8 in a string nobody reads is still accepted
    // by the byte reader.
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(bytes),
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Deserialize, Default, Debug)]
    #[serde(default)]
    struct Probe<'a> {
        #[serde(borrow)]
        s: Text<'a>,
        n: Num,
        c: Count,
        i: Int,
        b: Flag,
        list: List<Obj<Inner>>,
        stop: Strings,
        p: Present,
    }

    #[derive(Deserialize, Default, Debug, PartialEq)]
    #[serde(default)]
    struct Inner {
        c: Count,
    }

    #[test]
    fn wrong_types_read_as_absent() {
        let p: Probe = parse(
            br#"{"s": {"x": [1]}, "n": "1", "c": -1, "i": 1.5, "b": 1, "list": {"c": 1}, "stop": 7, "z": [1, {"a": "b"}]}"#,
        )
        .unwrap();
        assert_eq!(p.s, Text(None));
        assert_eq!(
            (p.n, p.c, p.i, p.b),
            (Num(None), Count(None), Int(None), Flag(None))
        );
        assert!(p.list.is_empty() && p.stop.0.is_empty() && !p.p.0);
    }

    #[test]
    fn values_read() {
        let p: Probe = parse(
            br#"{"s": "a\"b", "n": 2, "c": 12.0, "i": -3, "b": true, "list": [{"c": 1}, 5, {"c": "x"}], "stop": ["a", 1, "b"], "p": {}}"#,
        )
        .unwrap();
        assert_eq!(p.s.get(), Some("a\"b"));
        assert_eq!(
            (p.n.0, p.c.0, p.i.0, p.b.0),
            (Some(2.0), Some(12), Some(-3), Some(true))
        );
        assert_eq!(
            p.list.0,
            vec![
                Obj(Some(Inner { c: Count(Some(1)) })),
                Obj(None),
                Obj(Some(Inner { c: Count(None) }))
            ]
        );
        assert_eq!(p.stop.0, vec!["a", "b"]);
        assert!(p.p.0);
        let borrowed: Probe = parse(br#"{"s": "plain"}"#).unwrap();
        assert!(matches!(borrowed.s.0, Some(Cow::Borrowed("plain"))));
    }

    #[test]
    fn raw_helpers() {
        #[derive(Deserialize)]
        struct R<'a> {
            #[serde(borrow)]
            a: Raw<'a>,
        }
        let text = |j: &str| {
            let r: R = serde_json::from_str(j).unwrap();
            (object_text(r.a).map(str::to_string), value_text(r.a))
        };
        assert_eq!(text(r#"{"a": { }}"#).0, None);
        assert_eq!(text(r#"{"a": {"x": 1}}"#).0.as_deref(), Some(r#"{"x": 1}"#));
        assert_eq!(text(r#"{"a": "q\n"}"#).1.as_deref(), Some("q\n"));
        assert_eq!(text(r#"{"a": null}"#).1, None);
    }
}
