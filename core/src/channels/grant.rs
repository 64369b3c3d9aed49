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
use serde::de::DeserializeOwned;

/// One kind's section of a channel grant.
pub trait GrantSection: Default + Clone + PartialEq + std::fmt::Debug + DeserializeOwned {
    /// The keys of `[channels.NAME]` this section reads.
    const KEYS: &'static [&'static str];

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

            pub(crate) fn from_table(table: &toml::Table) -> Result<ChannelGrant, String> {
                Ok(ChannelGrant { $($field: $crate::channels::grant::section::<$section>(table)?,)* })
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

/// Parses section `S` from the keys of `table` it owns.
pub(crate) fn section<S: GrantSection>(table: &toml::Table) -> Result<S, String> {
    let own: toml::Table =
        table.iter().filter(|(k, _)| S::KEYS.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
    if own.is_empty() {
        return Ok(S::default());
    }
    toml::Value::Table(own).try_into().map_err(|e| e.to_string().trim_end().replace('\n', " "))
}

impl<'de> Deserialize<'de> for ChannelGrant {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let table = toml::Table::deserialize(d)?;
        if let Some(unknown) = table.keys().find(|k| !ChannelGrant::keys().any(|known| known == k.as_str())) {
            let known: Vec<String> = ChannelGrant::keys().map(|k| format!("`{k}`")).collect();
            return Err(serde::de::Error::custom(format!(
                "unknown field `{unknown}`, expected one of {}",
                known.join(", ")
            )));
        }
        ChannelGrant::from_table(&table).map_err(serde::de::Error::custom)
    }
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
