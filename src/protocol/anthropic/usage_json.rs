//! A JSON answer's `usage` object read straight from its text into the fields metering keeps,
//! without building a `serde_json::Value` of it (one allocation per key and number): the same
//! reading [`super::overwrite_usage`] makes of the parsed value, field for field. Whatever the
//! object holds besides is checked as strictly as parsing it would, so text that would not
//! parse changes nothing here either.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::usage::{Tokens, Usage};

/// What a `usage` object gives: each field as `Value::get(..)` and `as_u64` / `as_str` read
/// it, `None` when absent or of another type; a repeated key counts as its last occurrence.
#[derive(Debug, Default, PartialEq)]
pub(super) struct UsageFields {
    tokens: TokenFields,
    web_search_requests: Option<u64>,
    inference_geo: Option<String>,
    speed: Option<String>,
    /// `Some` when `iterations` is an array; its elements that are not objects are `None`.
    iterations: Option<Vec<Option<TokenFields>>>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct TokenFields {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    /// `cache_creation`'s split, when `cache_creation` is given.
    cache_creation: Option<CacheSplit>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct CacheSplit {
    ephemeral_5m_input_tokens: Option<u64>,
    ephemeral_1h_input_tokens: Option<u64>,
}

impl UsageFields {
    /// Reads `text`, a `usage` value; `None` when it is not JSON (nothing is then changed).
    pub(super) fn read(text: &[u8]) -> Option<Self> {
        let read: Shaped<Self> = serde_json::from_slice(text).ok()?;
        Some(read.0.unwrap_or_default())
    }

    /// Overwrites every field the object gave, as [`super::overwrite_usage`] does.
    pub(super) fn overwrite(self, fields: &mut Usage) {
        let mut tokens = fields.tokens();
        self.tokens.overwrite(&mut tokens);
        fields.set_tokens(tokens);
        if let Some(n) = self.web_search_requests {
            fields.web_search_requests = n;
        }
        for (field, value) in [
            (&mut fields.inference_geo, self.inference_geo),
            (&mut fields.speed, self.speed),
        ] {
            if let Some(value) = value.as_deref().and_then(Usage::tier_name) {
                *field = Some(value);
            }
        }
        if let Some(iterations) = self.iterations {
            fields.set_iterations(iterations.into_iter().flatten().map(|iteration| {
                let mut tokens = Tokens::default();
                iteration.overwrite(&mut tokens);
                tokens
            }));
        }
    }
}

impl TokenFields {
    fn overwrite(self, fields: &mut Tokens) {
        for (field, value) in [
            (&mut fields.input_tokens, self.input_tokens),
            (&mut fields.output_tokens, self.output_tokens),
            (
                &mut fields.cache_creation_input_tokens,
                self.cache_creation_input_tokens,
            ),
            (
                &mut fields.cache_read_input_tokens,
                self.cache_read_input_tokens,
            ),
        ] {
            if let Some(n) = value {
                *field = n;
            }
        }
        if let Some(split) = self.cache_creation {
            if let Some(n) = split.ephemeral_5m_input_tokens {
                fields.cache_creation_5m_input_tokens = Some(n);
            }
            if let Some(n) = split.ephemeral_1h_input_tokens {
                fields.cache_creation_1h_input_tokens = Some(n);
            }
        }
    }
}

/// An object's fields read by key: what the reader of one kind of object does with each.
trait ObjectFields: Default {
    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error>;
}

impl ObjectFields for UsageFields {
    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "server_tool_use" => {
                self.web_search_requests = map
                    .next_value::<Shaped<ServerToolUse>>()?
                    .0
                    .and_then(|tools| tools.0);
            }
            "inference_geo" => self.inference_geo = map.next_value::<Text>()?.0,
            "speed" => self.speed = map.next_value::<Text>()?.0,
            "iterations" => {
                self.iterations = map
                    .next_value::<Array<Shaped<TokenFields>>>()?
                    .0
                    .map(|items| items.into_iter().map(|item| item.0).collect());
            }
            _ => return self.tokens.field(key, map),
        }
        Ok(())
    }
}

impl ObjectFields for TokenFields {
    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        let count = match key {
            "input_tokens" => &mut self.input_tokens,
            "output_tokens" => &mut self.output_tokens,
            "cache_creation_input_tokens" => &mut self.cache_creation_input_tokens,
            "cache_read_input_tokens" => &mut self.cache_read_input_tokens,
            "cache_creation" => {
                // Present: its split as given, even when it is not an object (then empty).
                let split = map.next_value::<Shaped<CacheSplit>>()?;
                self.cache_creation = Some(split.0.unwrap_or_default());
                return Ok(());
            }
            _ => {
                map.next_value::<Skipped>()?;
                return Ok(());
            }
        };
        *count = map.next_value::<Count>()?.0;
        Ok(())
    }
}

impl ObjectFields for CacheSplit {
    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        let count = match key {
            "ephemeral_5m_input_tokens" => &mut self.ephemeral_5m_input_tokens,
            "ephemeral_1h_input_tokens" => &mut self.ephemeral_1h_input_tokens,
            _ => {
                map.next_value::<Skipped>()?;
                return Ok(());
            }
        };
        *count = map.next_value::<Count>()?.0;
        Ok(())
    }
}

/// `server_tool_use`: its `web_search_requests`.
#[derive(Default)]
struct ServerToolUse(Option<u64>);

impl ObjectFields for ServerToolUse {
    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        if key == "web_search_requests" {
            self.0 = map.next_value::<Count>()?.0;
        } else {
            map.next_value::<Skipped>()?;
        }
        Ok(())
    }
}

/// Any JSON value, checked as strictly as `serde_json::Value` would parse it, kept only as
/// what `visit` makes of it. Every reader here is one of these, so each accepts any value.
trait AnyValue: Sized {
    fn expecting() -> &'static str {
        "any JSON value"
    }
    fn unsigned(_: u64) -> Self;
    fn signed(n: i64) -> Self {
        match u64::try_from(n) {
            Ok(n) => Self::unsigned(n),
            Err(_) => Self::other(),
        }
    }
    fn text(_: &str) -> Self {
        Self::other()
    }
    fn other() -> Self;
    fn seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<Skipped>()?.is_some() {}
        Ok(Self::other())
    }
    fn map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        while map.next_key::<Skipped>()?.is_some() {
            map.next_value::<Skipped>()?;
        }
        Ok(Self::other())
    }
}

struct AnyVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: AnyValue> Visitor<'de> for AnyVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(T::expecting())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<T, E> {
        Ok(T::other())
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<T, E> {
        Ok(T::unsigned(n))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<T, E> {
        Ok(T::signed(n))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<T, E> {
        Ok(T::other())
    }
    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        Ok(T::text(text))
    }
    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        Ok(T::other())
    }
    fn visit_none<E: de::Error>(self) -> Result<T, E> {
        Ok(T::other())
    }
    fn visit_some<D: Deserializer<'de>>(self, inner: D) -> Result<T, D::Error> {
        inner.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
        T::seq(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::map(map)
    }
}

macro_rules! any_value_deserialize {
    ($($ty:ty),*) => {$(
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_any(AnyVisitor(std::marker::PhantomData))
            }
        }
    )*};
}

/// A value read for its syntax only.
struct Skipped;

impl AnyValue for Skipped {
    fn unsigned(_: u64) -> Self {
        Skipped
    }
    fn other() -> Self {
        Skipped
    }
}

/// A number as `Value::as_u64` reads it.
struct Count(Option<u64>);

impl AnyValue for Count {
    fn unsigned(n: u64) -> Self {
        Count(Some(n))
    }
    fn other() -> Self {
        Count(None)
    }
}

/// A string as `Value::as_str` reads it.
struct Text(Option<String>);

impl AnyValue for Text {
    fn unsigned(_: u64) -> Self {
        Text(None)
    }
    fn text(text: &str) -> Self {
        Text(Some(text.to_owned()))
    }
    fn other() -> Self {
        Text(None)
    }
}

/// An object's fields, `None` when the value is not an object.
struct Shaped<T>(Option<T>);

impl<T: ObjectFields> AnyValue for Shaped<T> {
    fn unsigned(_: u64) -> Self {
        Shaped(None)
    }
    fn other() -> Self {
        Shaped(None)
    }
    fn map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut fields = T::default();
        while let Some(key) = map.next_key::<Key>()? {
            fields.field(&key.0, &mut map)?;
        }
        Ok(Shaped(Some(fields)))
    }
}

/// An array's elements, `None` when the value is not an array.
struct Array<T>(Option<Vec<T>>);

impl<T: AnyValue> AnyValue for Array<T> {
    fn unsigned(_: u64) -> Self {
        Array(None)
    }
    fn other() -> Self {
        Array(None)
    }
    fn seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Wrapped<T>>()? {
            items.push(item.0);
        }
        Ok(Array(Some(items)))
    }
}

/// Lets a generic [`AnyValue`] be deserialized as an element.
struct Wrapped<T>(T);

impl<'de, T: AnyValue> Deserialize<'de> for Wrapped<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(AnyVisitor::<T>(std::marker::PhantomData))
            .map(Wrapped)
    }
}

impl<'de, T: ObjectFields> Deserialize<'de> for Shaped<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(AnyVisitor(std::marker::PhantomData))
    }
}

impl<'de, T: AnyValue> Deserialize<'de> for Array<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(AnyVisitor(std::marker::PhantomData))
    }
}

any_value_deserialize!(Skipped, Count, Text);

/// An object's key, escapes decoded (borrowed from the text when it has none).
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(key)))
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(key.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    /// A usage that every field of differs from the default, so that a field left alone shows.
    fn earlier() -> Usage {
        Usage {
            input_tokens: 1,
            output_tokens: 2,
            cache_creation_input_tokens: 3,
            cache_read_input_tokens: 4,
            cache_creation_5m_input_tokens: Some(5),
            cache_creation_1h_input_tokens: None,
            web_search_requests: 6,
            inference_geo: Some("eu".into()),
            speed: None,
            ..Usage::default()
        }
    }

    fn read_both_ways(text: &[u8]) -> (Usage, Usage) {
        let mut by_value = earlier();
        if let Ok(value) = serde_json::from_slice::<Value>(text) {
            super::super::overwrite_usage(&mut by_value, &value);
        }
        let mut by_fields = earlier();
        if let Some(fields) = UsageFields::read(text) {
            fields.overwrite(&mut by_fields);
        }
        (by_value, by_fields)
    }

    #[test]
    fn usage_objects_read_as_their_parsed_value_reads() {
        let texts: [&[u8]; 11] = [
            br#"{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":7},"output_tokens":10,"service_tier":"standard"}"#,
            br#"{"input_tokens":-1,"output_tokens":1.0,"cache_read_input_tokens":"9","speed":"fast","inference_geo":"us"}"#,
            br#"{"input_tokens":5,"input_tokens":6,"cache_creation":{"ephemeral_5m_input_tokens":1},"cache_creation":null}"#,
            br#"{"server_tool_use":{"web_search_requests":2},"iterations":[{"input_tokens":180000,"output_tokens":3500},7,{"input_tokens":23000,"output_tokens":1000}]}"#,
            br#"{"iterations":[],"speed":"a-tier-name-far-longer-than-thirty-two-bytes"}"#,
            br#"{"inp\u0075t_tokens":18446744073709551615,"output_tokens":18446744073709551616}"#,
            br#"{"input_tokens":12,"extra":"\ud800"}"#,
            br#"{"input_tokens":12} x"#,
            br#"[{"input_tokens":12}]"#,
            b"null",
            b"{\"input_tokens\":12,\"x\":\"\xff\"}",
        ];
        for text in texts {
            let (by_value, by_fields) = read_both_ways(text);
            assert_eq!(by_fields, by_value, "{}", String::from_utf8_lossy(text));
        }
    }

    fn key() -> impl Strategy<Value = &'static str> {
        proptest::sample::select(vec![
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "cache_creation",
            "ephemeral_5m_input_tokens",
            "ephemeral_1h_input_tokens",
            "server_tool_use",
            "web_search_requests",
            "inference_geo",
            "speed",
            "iterations",
            "service_tier",
            "output_\\u0074okens",
        ])
    }

    fn json_value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            (0u64..100).prop_map(|n| n.to_string()),
            proptest::sample::select(vec![
                "1.5",
                "-0",
                "2e2",
                "18446744073709551616",
                "null",
                "true",
                "\"\\u00e9\"",
                "\"\\ud800\"",
            ])
            .prop_map(str::to_string),
            "[a-z]{0,40}".prop_map(|text| format!("\"{text}\"")),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4)
                    .prop_map(|items| format!("[{}]", items.join(","))),
                proptest::collection::vec((key(), inner), 0..7).prop_map(|fields| {
                    let fields: Vec<String> = fields
                        .iter()
                        .map(|(key, value)| format!("\"{key}\":{value}"))
                        .collect();
                    format!("{{{}}}", fields.join(","))
                }),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_usage_text_reads_as_its_parsed_value_reads(
            text in json_value(),
            damage in proptest::option::of((any::<proptest::sample::Index>(), any::<u8>())),
        ) {
            let mut text = text.into_bytes();
            if let Some((at, byte)) = damage {
                text.insert(at.index(text.len() + 1), byte);
            }
            let (by_value, by_fields) = read_both_ways(&text);
            prop_assert_eq!(by_fields, by_value, "{}", String::from_utf8_lossy(&text));
        }
    }
}
