//! The `secrets` channel kind: named values an operator gives the host,
//! such as a key a service signs tokens with, which a service reads with
//! `from.get` when its manifest names them. They come from the same
//! references as the HTTP kinds' credentials ([`super::secret`]):
//! `${env:NAME}` or `${file:PATH}`, resolved once when the channel opens,
//! never written out in `sluice.toml` and never in a manifest.
//!
//! ```toml
//! # sluice.toml
//! [channels.keys]
//! kind = "secrets"
//! values = { jwt = "${env:CONDUIT_JWT_KEY}" }
//!
//! # services/users.toml
//! [channels.keys]
//! secrets = ["jwt"]
//! ```
//!
//! Unlike a credential, a secret is given to the service, which may do
//! with it what its code does (sign, hash, send): grant it only to the
//! service that needs it. A secret's value cannot change while the host
//! runs, so its read is not kept for the save to check, and a recorded
//! scope does not keep it (a replay, which has no secrets, refuses it).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::grant::GrantSection;
use super::secret::Secret;
use super::{Caller, Channel, ChannelError, Denial, KeyReads, Opening, Reading, Transaction, wrong_kind};
use crate::channels::ops::{Kind, Operation};

/// The `secrets` kind.
pub const KIND: Kind = Kind::named("secrets");

/// A `[channels.NAME]` table of kind `secrets`.
#[derive(Debug, Clone, serde::Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SecretsConfig {
    /// Each secret's name and its template (`${env:…}` or `${file:…}`).
    pub values: BTreeMap<String, String>,
}

impl super::KindConfig for SecretsConfig {
    fn open(&self, at: &mut Opening<'_>) -> Result<Arc<dyn Channel>, ChannelError> {
        let mut values = BTreeMap::new();
        for (name, template) in &self.values {
            if name.is_empty() || name.len() > MAX_NAME {
                return Err(ChannelError::Invalid(format!("a secret's name is empty or over {MAX_NAME} bytes")));
            }
            let value = super::secret::resolve_secret(template)
                .map_err(|why| ChannelError::Invalid(format!("channel {}: secret {name} {why}", at.name())))?;
            values.insert(name.clone(), value);
        }
        Ok(Arc::new(SecretsChannel { values }))
    }
}

/// The longest name of a secret.
const MAX_NAME: usize = 128;

/// An open `secrets` channel: its values, resolved.
pub struct SecretsChannel {
    values: BTreeMap<String, Secret>,
}

impl Channel for SecretsChannel {
    fn kind(&self) -> Kind {
        KIND
    }

    fn keys(&self) -> Option<&dyn KeyReads> {
        Some(self)
    }

    /// A `secrets` channel takes no command of any kind: the one refusal
    /// of a command on a channel of another kind.
    fn check_command(&self, op: &Operation, _: &Caller) -> Result<(), ChannelError> {
        Err(wrong_kind(KIND, op.kind(), &op.describe()))
    }

    /// Never reached: it takes no command and keeps no read.
    fn begin(&self) -> Result<Box<dyn Transaction>, ChannelError> {
        Err(ChannelError::Invalid("a secrets channel has no transactions".into()))
    }
}

impl KeyReads for SecretsChannel {
    /// The secret `key`, when the caller's grant names it.
    fn get(&self, key: &str, caller: &Caller, max_bytes: usize) -> Result<Reading, ChannelError> {
        granted(key, caller)?;
        let Some(secret) = self.values.get(key) else {
            return Err(ChannelError::Invalid(format!("this secrets channel has no secret {key:?}")));
        };
        let rows = super::kv::value_rows(Some(secret.expose().as_bytes().to_vec()));
        super::kv::reading(rows, max_bytes)
    }

    fn list(&self, _: &str, _: u32, _: &Caller, _: usize) -> Result<Reading, ChannelError> {
        Err(ChannelError::Invalid("a secrets channel lists nothing; get each secret by its name".into()))
    }

    fn constant(&self) -> bool {
        true
    }
}

/// Whether `caller` may read the secret `key`: its grant names it.
fn granted(key: &str, caller: &Caller) -> Result<(), ChannelError> {
    if caller.host || caller.grant.as_ref().is_some_and(|g| g.secrets.names.iter().any(|n| n == key)) {
        return Ok(());
    }
    Err(ChannelError::Denied(Denial::ungranted(format!("read secret {key}"), format!("secrets = [\"{key}\"]"))))
}

/// A service's grant on a `secrets` channel: the names it may read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SecretsGrant {
    /// The secrets, by exact name.
    pub names: Vec<String>,
}

impl GrantSection for SecretsGrant {
    const KEYS: &'static [&'static str] = &["secrets"];

    fn read<'de, D: serde::Deserializer<'de>>(&mut self, _: &str, value: D) -> Result<(), D::Error> {
        use serde::Deserialize as _;
        let names = Vec::<String>::deserialize(value)?;
        if names.iter().any(|n| n.is_empty() || n == "*") {
            return Err(serde::de::Error::custom("name each secret; an empty name or \"*\" grants nothing"));
        }
        self.names = names;
        Ok(())
    }

    fn summary(&self, parts: &mut Vec<String>) {
        if !self.names.is_empty() {
            parts.push(format!("reads secrets {}", self.names.join(", ")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::grant::ChannelGrant;
    use std::time::{Duration, Instant};

    fn channel() -> SecretsChannel {
        let home = std::env::var("HOME").expect("HOME is set");
        SecretsChannel { values: BTreeMap::from([("jwt".to_string(), super::super::secret::test_secret(&home))]) }
    }

    fn caller(names: &[&str]) -> Caller {
        let mut grant = ChannelGrant::default();
        grant.secrets.names = names.iter().map(|n| n.to_string()).collect();
        Caller::service("users", Some(Arc::new(grant)), Instant::now() + Duration::from_secs(1))
    }

    #[test]
    fn a_secret_is_read_only_by_name_and_within_the_bytes() {
        let c = channel();
        let home = std::env::var("HOME").expect("HOME is set");
        let read = c.get("jwt", &caller(&["jwt"]), 1 << 20).expect("granted");
        assert_eq!(super::super::kv::table::first_value(&read.rows), Some(home.into_bytes()));
        let denied = c.get("jwt", &caller(&["other"]), 1 << 20).expect_err("not granted");
        assert!(denied.to_string().contains("read secret jwt"), "{denied}");
        assert!(matches!(c.get("jwt", &caller(&["jwt"]), 2), Err(ChannelError::TooLarge { .. })));
        assert!(c.get("nope", &caller(&["nope"]), 1 << 20).is_err());
        assert!(c.list("", 10, &caller(&["jwt"]), 1 << 20).is_err());
        let op = Operation::Kv(crate::channels::kv::ops::KvOp::Remove { key: "jwt".into() });
        assert!(c.check_command(&op, &caller(&["jwt"])).is_err());
    }

    #[test]
    fn a_grant_names_each_secret() {
        let read = |names: &[&str]| {
            let value = toml::Value::Array(names.iter().map(|n| toml::Value::String(n.to_string())).collect());
            let mut grant = SecretsGrant::default();
            grant.read("secrets", value).map(|()| grant).map_err(|e| e.to_string())
        };
        assert_eq!(read(&["jwt"]).map(|g| g.names), Ok(vec!["jwt".to_string()]));
        assert!(read(&["*"]).is_err_and(|e| e.contains("name each secret")));
        assert!(read(&[""]).is_err());
    }
}
