//! `[files]`: the files clients upload for tasks to read, and sizes written the way people
//! write them (`max_bytes = "256 MiB"`, or a plain number of bytes).

use serde::{Deserialize, Serialize};

/// `[files]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesSettings {
    /// The largest file an upload may store, in bytes: a number, or text such as "256 MiB" or
    /// "10MB". An upload is refused as soon as it grows past it.
    #[serde(with = "byte_size")]
    pub max_bytes: u64,
}

impl Default for FilesSettings {
    fn default() -> Self {
        Self {
            max_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Parses a size: a number of bytes, optionally followed by a unit: `B`, decimal `kB`, `MB`,
/// `GB`, or binary `KiB`, `MiB`, `GiB` (case-insensitive; a space between is allowed).
pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| {
        format!("{text:?} is not a size (such as 1048576, \"512 KiB\" or \"256 MiB\")")
    })?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (use B, kB, MB, GB, KiB, MiB or GiB)"
            ));
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Serde for sizes: read as a number or as text (`parse_byte_size`), written as a number.
mod byte_size {
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(*value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        struct Size;
        impl Visitor<'_> for Size {
            type Value = u64;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("a size in bytes, or text such as \"256 MiB\"")
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<u64, E> {
                Ok(value)
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<u64, E> {
                u64::try_from(value).map_err(|_| E::custom(format!("{value} is negative")))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<u64, E> {
                super::parse_byte_size(text).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_numbers_or_with_units() {
        assert_eq!(parse_byte_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_byte_size("256 MiB"), Ok(256 << 20));
        assert_eq!(parse_byte_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_byte_size("2 gib"), Ok(2 << 30));
        assert!(parse_byte_size("lots").is_err());
        assert!(
            parse_byte_size("5 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_byte_size("99999999999999 GiB").is_err());
    }

    #[test]
    fn the_file_limit_reads_from_toml_as_text_or_a_number() {
        let config = crate::config::Config::from_toml("[files]\nmax_bytes = \"8 MiB\"").unwrap();
        assert_eq!(config.files.max_bytes, 8 << 20);
        let config = crate::config::Config::from_toml("[files]\nmax_bytes = 4096").unwrap();
        assert_eq!(config.files.max_bytes, 4096);
        assert_eq!(crate::config::Config::default().files.max_bytes, 256 << 20);
        assert!(crate::config::Config::from_toml("[files]\nmax_bytes = \"many\"").is_err());
    }
}
