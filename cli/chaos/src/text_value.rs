//! Values written as text in experiment files but parsed into a type (durations,
//! comparisons): one macro gives each the same serde and JSON Schema form, a string.

/// Implements `Serialize` (via `Display`), `Deserialize` (via `$ty::parse`, whose error
/// message becomes the located diagnostic) and `JsonSchema` (a described string).
macro_rules! text_value {
    ($ty:ty, $name:literal, $description:literal) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                let text = <String as serde::Deserialize>::deserialize(d)?;
                <$ty>::parse(&text).map_err(serde::de::Error::custom)
            }
        }

        impl schemars::JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({ "type": "string", "description": $description })
            }
        }
    };
}

pub(crate) use text_value;
