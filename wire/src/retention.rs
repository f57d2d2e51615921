//! [`RetentionValue`]: a retention limit as a request carries it.

use serde::de::{self, IgnoredAny, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A retention limit in a request (`retention_ms`, `retention_bytes`): a positive integer (a
/// JSON number or a numeric string), or `null` for the broker's default. Anything else is
/// kept as it was written, so that the broker refuses it with `invalid_retention` and says
/// what it got (instead of failing the whole body as malformed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RetentionValue {
    /// `null`: the broker's default.
    Default,
    /// A non-negative integer (0 is refused by the broker).
    Set(u64),
    /// Not a non-negative integer: what was sent, for the error message.
    Invalid(String),
}

impl RetentionValue {
    /// `None` as the broker's default.
    pub fn from_option(value: Option<u64>) -> Self {
        value.map_or(RetentionValue::Default, RetentionValue::Set)
    }
}

impl Serialize for RetentionValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RetentionValue::Default => s.serialize_none(),
            RetentionValue::Set(n) => s.serialize_u64(*n),
            RetentionValue::Invalid(text) => s.serialize_str(text),
        }
    }
}

impl<'de> Deserialize<'de> for RetentionValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RetentionVisitor)
    }
}

/// For `Option<RetentionValue>` fields where absent and `null` differ: a present field,
/// `null` included, is `Some`.
pub fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RetentionValue>, D::Error> {
    RetentionValue::deserialize(d).map(Some)
}

struct RetentionVisitor;

impl<'de> Visitor<'de> for RetentionVisitor {
    type Value = RetentionValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a positive integer or null")
    }

    fn visit_unit<E: de::Error>(self) -> Result<RetentionValue, E> {
        Ok(RetentionValue::Default)
    }

    fn visit_none<E: de::Error>(self) -> Result<RetentionValue, E> {
        Ok(RetentionValue::Default)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<RetentionValue, D::Error> {
        d.deserialize_any(RetentionVisitor)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RetentionValue, E> {
        Ok(RetentionValue::Set(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RetentionValue, E> {
        Ok(u64::try_from(v).map_or_else(
            |_| RetentionValue::Invalid(v.to_string()),
            RetentionValue::Set,
        ))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RetentionValue, E> {
        if v.fract() == 0.0 && v >= 0.0 && v < u64::MAX as f64 {
            Ok(RetentionValue::Set(v as u64))
        } else {
            Ok(RetentionValue::Invalid(v.to_string()))
        }
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<RetentionValue, E> {
        Ok(RetentionValue::Invalid(v.to_string()))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RetentionValue, E> {
        Ok(v.trim().parse::<u64>().map_or_else(
            |_| RetentionValue::Invalid(format!("{v:?}")),
            RetentionValue::Set,
        ))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<RetentionValue, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(RetentionValue::Invalid("an array".into()))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<RetentionValue, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(RetentionValue::Invalid("an object".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> RetentionValue {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn numbers_strings_and_null_are_read_and_anything_else_is_kept_to_be_refused() {
        assert_eq!(parse("5"), RetentionValue::Set(5));
        assert_eq!(parse("\"5\""), RetentionValue::Set(5));
        assert_eq!(parse("5.0"), RetentionValue::Set(5));
        assert_eq!(parse("0"), RetentionValue::Set(0));
        assert_eq!(parse("null"), RetentionValue::Default);
        assert_eq!(parse("-1"), RetentionValue::Invalid("-1".into()));
        assert_eq!(parse("1.5"), RetentionValue::Invalid("1.5".into()));
        assert_eq!(parse("\"7d\""), RetentionValue::Invalid("\"7d\"".into()));
        assert_eq!(parse("true"), RetentionValue::Invalid("true".into()));
        assert_eq!(parse("[1]"), RetentionValue::Invalid("an array".into()));
        assert_eq!(
            parse("{\"a\": 1}"),
            RetentionValue::Invalid("an object".into())
        );
        assert_eq!(serde_json::to_string(&RetentionValue::Set(3)).unwrap(), "3");
        assert_eq!(
            serde_json::to_string(&RetentionValue::Default).unwrap(),
            "null"
        );
    }
}
