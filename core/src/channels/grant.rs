//! A service's grant on one channel (`[channels.NAME]` of its manifest):
//! one section per channel kind, each defined, parsed, checked and
//! summarized by its kind ([`GrantSection`]), composed here. A kind's
//! refusals name the line of its own section that would grant what was
//! refused ([`super::Denial::ungranted`]).
//!
//! A channel's grant is read without knowing the channel's kind (manifests
//! are read before and apart from `sluice.toml`), so the sections share one
//! table: a key belongs to the one section that lists it, and a key no
//! section lists is refused.

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, Visitor};

/// One kind's section of a channel grant.
pub trait GrantSection: Default + Clone + PartialEq + std::fmt::Debug {
    /// The keys of `[channels.NAME]` this section reads.
    const KEYS: &'static [&'static str];

    /// Reads the value of `key`, one of [`GrantSection::KEYS`], straight
    /// from the manifest: an error in it points at its line.
    fn read<'de, D: Deserializer<'de>>(&mut self, key: &str, value: D) -> Result<(), D::Error>;

    /// What it grants, for people, pushed onto `parts`: `reads products`.
    fn summary(&self, parts: &mut Vec<String>);
}

/// Defines [`ChannelGrant`] with one field per registered kind's section
/// (the registration is in [`super::kinds`]).
macro_rules! sections {
    ($($field:ident: $section:ty),* $(,)?) => {
        /// What a service may do on one channel: each kind's section.
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct ChannelGrant {
            $(
                #[doc = concat!("The `", stringify!($field), "` kind's section.")]
                pub $field: $section,
            )*
        }

        impl ChannelGrant {
            /// Every key a section reads, in registration order.
            pub(crate) fn keys() -> impl Iterator<Item = &'static str> {
                [$(<$section as $crate::channels::grant::GrantSection>::KEYS),*].into_iter().flatten().copied()
            }

            /// Reads the value of `key` into the section that owns it;
            /// `None` when no section does.
            pub(crate) fn read<'de, A: serde::de::MapAccess<'de>>(
                &mut self,
                key: &str,
                map: &mut A,
            ) -> Option<Result<(), A::Error>> {
                $(
                    if <$section as $crate::channels::grant::GrantSection>::KEYS.contains(&key) {
                        return Some(map.next_value_seed($crate::channels::grant::Field { section: &mut self.$field, key }));
                    }
                )*
                None
            }

            /// What the grant allows, one part per thing granted, for people.
            pub fn summary(&self) -> Vec<String> {
                let mut parts = Vec::new();
                $($crate::channels::grant::GrantSection::summary(&self.$field, &mut parts);)*
                parts
            }
        }
    };
}
pub(crate) use sections;

pub use super::kinds::ChannelGrant;

/// The value of one key, read by the section that owns it.
pub(crate) struct Field<'a, S> {
    pub section: &'a mut S,
    pub key: &'a str,
}

impl<'de, S: GrantSection> DeserializeSeed<'de> for Field<'_, S> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, value: D) -> Result<(), D::Error> {
        self.section.read(self.key, value)
    }
}

impl<'de> Deserialize<'de> for ChannelGrant {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Keys;

        impl<'de> Visitor<'de> for Keys {
            type Value = ChannelGrant;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a table of grants")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ChannelGrant, A::Error> {
                let mut grant = ChannelGrant::default();
                while let Some(key) = map.next_key::<String>()? {
                    match grant.read(&key, &mut map) {
                        Some(read) => read?,
                        None => return Err(A::Error::unknown_field(&key, fields())),
                    }
                }
                Ok(grant)
            }
        }

        d.deserialize_map(Keys)
    }
}

/// Every key of every section, once for the process (for the error that
/// lists them).
fn fields() -> &'static [&'static str] {
    static FIELDS: std::sync::OnceLock<&'static [&'static str]> = std::sync::OnceLock::new();
    FIELDS.get_or_init(|| ChannelGrant::keys().collect::<Vec<_>>().leak())
}

/// Prefixes of names (a `kv` channel's keys, a `bus` channel's subjects):
/// a name is covered when it starts with one of them. `"*"` covers every
/// name. Names compare byte for byte.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Prefixes(Vec<String>);

impl Prefixes {
    /// Whether `name` starts with a listed prefix.
    pub fn allows(&self, name: &str) -> bool {
        self.0.iter().any(|p| name.starts_with(p.as_str()))
    }

    /// Whether nothing is listed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The prefixes, for people: `cart/, hits/`; `every key` for `"*"`.
    pub fn describe(&self) -> String {
        if self.0.iter().any(String::is_empty) {
            return "every key".into();
        }
        self.0.join(", ")
    }
}

impl<'de> Deserialize<'de> for Prefixes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // "*" is every name: the empty prefix.
        let Some(prefixes) = list_or_star(d, "key prefixes")? else { return Ok(Prefixes(vec![String::new()])) };
        if prefixes.iter().any(String::is_empty) {
            return Err(serde::de::Error::custom("a key prefix is empty; write \"*\" for every key"));
        }
        Ok(Prefixes(prefixes))
    }
}

/// A grant's list (`["a", "b"]`) or `"*"` for everything (`None`; also a
/// list holding `"*"`). A lone string other than `"*"` is an error that
/// shows the list to write.
pub fn list_or_star<'de, D: serde::Deserializer<'de>>(d: D, what: &str) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        Many(Vec<String>),
    }
    match Raw::deserialize(d)? {
        Raw::One(s) if s == "*" => Ok(None),
        Raw::One(s) => Err(serde::de::Error::custom(format!(
            "expected a list of {what} or \"*\", found the string {s:?}; write [{s:?}]"
        ))),
        Raw::Many(list) if list.iter().any(|n| n == "*") => Ok(None),
        Raw::Many(list) => Ok(Some(list)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key a section lists, it reads: a wrong value for any of them
    /// is refused, never ignored.
    #[test]
    fn every_listed_key_is_read() {
        for key in ChannelGrant::keys() {
            let wrong = format!("{key} = {{ a = 1 }}\n");
            assert!(toml::from_str::<ChannelGrant>(&wrong).is_err(), "{key} is listed but not read");
        }
    }

    /// Every key belongs to exactly one section.
    #[test]
    fn sections_own_disjoint_keys() {
        let keys: Vec<&str> = ChannelGrant::keys().collect();
        let mut unique = keys.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(keys.len(), unique.len(), "{keys:?}");
    }
}
