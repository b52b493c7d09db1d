//! A config struct from a parsed JSON object, with errors that name the field: serde_json's own
//! `from_value` reports "invalid type: string \"wide\", expected usize" without saying where.

use serde::de::{DeserializeOwned, DeserializeSeed, Deserializer, Error as _, IntoDeserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

/// `T` from `object`; an error in a top-level field's value reads `field "name": …`.
pub fn from_object<T: DeserializeOwned>(object: &Map<String, Value>) -> Result<T, serde_json::Error> {
    T::deserialize(Fields(object))
}

struct Fields<'a>(&'a Map<String, Value>);

impl<'de> Deserializer<'de> for Fields<'_> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_map(Entries { entries: self.0.iter(), current: None })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

struct Entries<'a> {
    entries: serde_json::map::Iter<'a>,
    current: Option<(&'a String, &'a Value)>,
}

impl<'de> MapAccess<'de> for Entries<'_> {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Self::Error> {
        self.current = self.entries.next();
        match self.current {
            Some((key, _)) => seed.deserialize(key.as_str().into_deserializer()).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Self::Error> {
        let (key, value) = self.current.take().ok_or_else(|| serde_json::Error::custom("a value without a key"))?;
        seed.deserialize(value.clone()).map_err(|e| serde_json::Error::custom(format!("field {key:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Config {
        hidden_size: usize,
        #[serde(default)]
        name: Option<String>,
        ratio: f64,
    }

    fn object(v: Value) -> Map<String, Value> {
        v.as_object().expect("an object").clone()
    }

    #[test]
    fn errors_name_the_field_and_good_objects_read_as_serde_json_reads_them() {
        let good = object(serde_json::json!({"hidden_size": 8, "ratio": 0.5, "unknown": [1, 2]}));
        let want: Config = serde_json::from_value(Value::Object(good.clone())).expect("serde_json");
        assert_eq!(from_object::<Config>(&good).expect("fields"), want);
        let e = from_object::<Config>(&object(serde_json::json!({"hidden_size": "wide", "ratio": 1}))).expect_err("a string").to_string();
        assert!(e.starts_with("field \"hidden_size\": invalid type: string \"wide\", expected usize"), "{e}");
        let e = from_object::<Config>(&object(serde_json::json!({"ratio": 1, "name": 3, "hidden_size": 2}))).expect_err("a number").to_string();
        assert!(e.starts_with("field \"name\": invalid type"), "{e}");
        let e = from_object::<Config>(&object(serde_json::json!({"ratio": 1}))).expect_err("missing").to_string();
        assert!(e.contains("missing field `hidden_size`"), "{e}");
    }
}
