//! [`Num`]: a non-negative integer that arrives as a JSON number or as a numeric string.

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// An id, offset or count. Query strings carry every value as text and many JSON clients send
/// ids as strings, so both `7` and `"7"` are read as 7; anything else is refused with a message
/// that names the value.
///
/// Hand-written rather than serde_with's `PickFirst<(_, DisplayFromStr)>`, which was tried
/// (serde_with 3.25): it refuses inputs accepted here (`7.0`, `" 7 "`) and answers every
/// refusal with a generic "could not deserialize any variant" instead of naming the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Num(pub u64);

impl Serialize for Num {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NumVisitor)
    }
}

struct NumVisitor;

impl Visitor<'_> for NumVisitor {
    type Value = Num;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a non-negative integer (a JSON number or a numeric string)")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
        Ok(Num(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num, E> {
        u64::try_from(v)
            .map(Num)
            .map_err(|_| E::custom(format!("{v} is negative; expected a non-negative integer")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Num, E> {
        if v.fract() == 0.0 && v >= 0.0 && v < u64::MAX as f64 {
            Ok(Num(v as u64))
        } else {
            Err(E::custom(format!("{v} is not a non-negative integer")))
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Num, E> {
        v.trim()
            .parse::<u64>()
            .map(Num)
            .map_err(|_| E::custom(format!("{v:?} is not a non-negative integer")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_numeric_strings_are_accepted() {
        assert_eq!(serde_json::from_str::<Num>("7").unwrap(), Num(7));
        assert_eq!(serde_json::from_str::<Num>("\"7\"").unwrap(), Num(7));
        assert_eq!(serde_json::from_str::<Num>("7.0").unwrap(), Num(7));
        assert!(serde_json::from_str::<Num>("-1").is_err());
        assert!(serde_json::from_str::<Num>("\"seven\"").is_err());
        assert!(serde_json::from_str::<Num>("1.5").is_err());
        assert!(serde_json::from_str::<Num>("null").is_err());
    }
}
