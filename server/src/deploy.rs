//! One deploy for a fleet: services kept in NATS JetStream (`[deploy]` in
//! `sluice.toml`) as well as in a directory.
//!
//! - The components and manifests are objects of an object store
//!   (`NAME/HEX.wasm`, `NAME/HEX.toml`, HEX their SHA-256), written once
//!   each; which version of a service runs is a key of a key-value bucket
//!   (`NAME` → `{"wasm": "sha256:…", "toml": "sha256:…" or null}`), whose
//!   history keeps the earlier versions for a rollback.
//! - `sluice deploy` puts a version and points the key at it
//!   ([`Store::put`]), removes a service ([`Store::remove`]) or points the
//!   key back at the version before ([`Store::rollback`]).
//! - A host with `[deploy]` makes its services directory a mirror of the
//!   bucket before it loads anything ([`Store::sync`]; a store that does
//!   not answer leaves the directory as it is, and the host starts), then
//!   follows the bucket ([`keep_following`], connecting again when the
//!   store goes away): each change is written into the directory
//!   (a temporary file renamed into place, its digest checked), where hot
//!   reload picks it up as it does any file: scopes in flight finish on the
//!   version they started with, and a component that does not load keeps
//!   the previous version serving.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, kv, object_store};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt as _;

use crate::config::DeploySettings;

/// The largest component or manifest a host takes from the store.
pub const MAX_OBJECT_BYTES: u64 = 256 * 1024 * 1024;
/// Versions of each service the bucket remembers (for rollbacks).
const HISTORY: i64 = 16;

/// One version of a service, as the bucket's key holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// `sha256:HEX` of the component.
    pub wasm: String,
    /// `sha256:HEX` of the manifest, or `None` for none.
    pub toml: Option<String>,
}

/// The deploy store of one `[deploy]` setting.
pub struct Store {
    versions: kv::Store,
    objects: object_store::ObjectStore,
}

/// `sha256:HEX` of `bytes`, as `/services` shows a component's.
fn digest(bytes: &[u8]) -> String {
    crate::runtime::content_digest(bytes)
}

fn object_name(service: &str, digest: &str, ext: &str) -> String {
    format!("{service}/{}.{ext}", digest.trim_start_matches("sha256:"))
}

/// Whether `name` can be a service's name (as its file's stem).
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok =
        !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok {
        bail!("{name:?} is not a service name: use lowercase letters, digits, '-' and '_'");
    }
    Ok(())
}

impl Store {
    /// Connects to the store `settings` names, making its buckets when
    /// they are missing.
    pub async fn open(settings: &DeploySettings) -> anyhow::Result<Store> {
        let client = tokio::time::timeout(Duration::from_secs(5), async_nats::connect(&settings.url))
            .await
            .map_err(|_| anyhow::anyhow!("no answer from NATS at {} within 5 s", settings.url))?
            .with_context(|| format!("cannot connect to NATS at {} ([deploy] url)", settings.url))?;
        let js = jetstream::new(client);
        let bucket = &settings.bucket;
        // The bucket's stream, made as a key-value bucket's is (the
        // client's own maker reads an answer of NATS 2.9 wrongly).
        js.get_or_create_stream(jetstream::stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: HISTORY,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: jetstream::stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .with_context(|| format!("cannot make the key-value bucket {bucket}"))?;
        let versions = js
            .get_key_value(bucket.clone())
            .await
            .with_context(|| format!("cannot open the key-value bucket {bucket}"))?;
        let objects_bucket = format!("{bucket}_objects");
        let objects = match js.get_object_store(&objects_bucket).await {
            Ok(store) => store,
            Err(_) => js
                .create_object_store(object_store::Config { bucket: objects_bucket.clone(), ..Default::default() })
                .await
                .with_context(|| format!("cannot make the object store {objects_bucket}"))?,
        };
        Ok(Store { versions, objects })
    }

    /// Puts `wasm` (and `manifest`) as the running version of `service`;
    /// returns it. The manifest is parsed first: one that no host could
    /// load is refused here.
    pub async fn put(&self, service: &str, wasm: &[u8], manifest: Option<&[u8]>) -> anyhow::Result<Version> {
        check_name(service)?;
        if !wasm.starts_with(b"\0asm") {
            bail!("{service}: the component is not a WebAssembly file (it does not start with \\0asm)");
        }
        if let Some(text) = manifest {
            let text = std::str::from_utf8(text).context("the manifest is not UTF-8")?;
            crate::manifest::Manifest::parse(text).map_err(|e| anyhow::anyhow!("{service}: manifest: {e}"))?;
        }
        let version = Version { wasm: digest(wasm), toml: manifest.map(digest) };
        self.put_object(&object_name(service, &version.wasm, "wasm"), wasm).await?;
        if let (Some(text), Some(toml)) = (manifest, &version.toml) {
            self.put_object(&object_name(service, toml, "toml"), text).await?;
        }
        self.point(service, &version).await?;
        Ok(version)
    }

    async fn put_object(&self, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
        if self.objects.info(name).await.is_ok() {
            return Ok(());
        }
        let mut reader = bytes;
        self.objects.put(name, &mut reader).await.with_context(|| format!("cannot store {name}"))?;
        Ok(())
    }

    async fn point(&self, service: &str, version: &Version) -> anyhow::Result<()> {
        let value = serde_json::to_vec(version)?;
        self.versions
            .put(service, value.into())
            .await
            .with_context(|| format!("cannot point {service} at its version"))?;
        Ok(())
    }

    /// Removes `service` from every host that follows the store.
    pub async fn remove(&self, service: &str) -> anyhow::Result<()> {
        check_name(service)?;
        if self.versions.get(service).await?.is_none() {
            bail!("{service} is not deployed");
        }
        self.versions.delete(service).await.with_context(|| format!("cannot remove {service}"))?;
        Ok(())
    }

    /// Points `service` back at an earlier version: the one whose
    /// component has digest `to`, or else the last one before the current
    /// one that differs from it; returns it. The bucket remembers the last
    /// 16 versions.
    pub async fn rollback(&self, service: &str, to: Option<&str>) -> anyhow::Result<Version> {
        check_name(service)?;
        let mut history = self.versions.history(service).await?;
        let mut versions: Vec<Option<Version>> = Vec::new();
        while let Some(entry) = history.next().await {
            let entry = entry?;
            versions.push(match entry.operation {
                kv::Operation::Put => serde_json::from_slice(&entry.value).ok(),
                _ => None,
            });
        }
        let current = versions.last().cloned().flatten();
        let Some(current) = current else { bail!("{service} is not deployed now; deploy it again instead") };
        let earlier = |v: &&Version| match to {
            Some(digest) => v.wasm == digest,
            None => **v != current,
        };
        let Some(previous) = versions.iter().rev().skip(1).flatten().find(earlier).cloned() else {
            match to {
                Some(digest) => bail!("{service} ran no version {digest} among the last {HISTORY} the store remembers"),
                None => bail!("{service} has no earlier version in the store's history"),
            }
        };
        self.point(service, &previous).await?;
        Ok(previous)
    }

    /// The services the store holds now, with their versions.
    pub async fn list(&self) -> anyhow::Result<Vec<(String, Version)>> {
        let mut keys = self.versions.keys().await?;
        let mut names = Vec::new();
        while let Some(key) = keys.next().await {
            names.push(key?);
        }
        names.sort();
        let mut out = Vec::new();
        for name in names {
            if let Some(value) = self.versions.get(&name).await? {
                out.push((name, serde_json::from_slice(&value)?));
            }
        }
        Ok(out)
    }

    /// Makes `dir` hold exactly the store's services: each one's files
    /// written (or left when they already match) and every other
    /// service's removed. Returns how many services it holds.
    pub async fn sync(&self, dir: &Path) -> anyhow::Result<usize> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let services = self.list().await?;
        for (name, version) in &services {
            self.write(dir, name, version).await?;
        }
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
            let ours = path.extension().is_some_and(|e| e == "wasm" || e == "toml");
            if ours && !services.iter().any(|(name, _)| *name == stem) {
                std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
            }
        }
        Ok(services.len())
    }

    /// Writes the store's services, then every change of them, into `dir`
    /// until the connection ends; a change that cannot be written is logged and
    /// the previous files stay.
    pub async fn follow(self, dir: PathBuf) {
        // Every key's latest change first (so nothing changed since the
        // host's start is missed), then each change as it comes.
        let mut watch = match self.versions.watch_with_history(">").await {
            Ok(watch) => watch,
            Err(e) => return tracing::error!("cannot follow the deploy store: {e}"),
        };
        while let Some(entry) = watch.next().await {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    tracing::warn!("the deploy store's watch failed: {e}");
                    continue;
                }
            };
            let service = entry.key.clone();
            let done = match entry.operation {
                kv::Operation::Put => match serde_json::from_slice::<Version>(&entry.value) {
                    Ok(version) => {
                        self.write(&dir, &service, &version).await.map(|()| format!("now runs {}", version.wasm))
                    }
                    Err(e) => Err(anyhow::anyhow!("its version is not readable: {e}")),
                },
                kv::Operation::Delete | kv::Operation::Purge => remove(&dir, &service).map(|()| "removed".to_string()),
            };
            match done {
                Ok(what) => tracing::info!(service, "deploy: {what}"),
                Err(e) => tracing::error!(service, "deploy: not applied, the previous version stays: {e:#}"),
            }
        }
    }

    /// Writes `version` of `service` into `dir`: the manifest first, then
    /// the component, each only when it differs, each checked against its
    /// digest and renamed into place.
    async fn write(&self, dir: &Path, service: &str, version: &Version) -> anyhow::Result<()> {
        check_name(service)?;
        let toml_path = dir.join(format!("{service}.toml"));
        match &version.toml {
            Some(toml) => self.fetch(service, toml, "toml", &toml_path).await?,
            None if toml_path.exists() => std::fs::remove_file(&toml_path)?,
            None => {}
        }
        self.fetch(service, &version.wasm, "wasm", &dir.join(format!("{service}.wasm"))).await
    }

    async fn fetch(&self, service: &str, digest_wanted: &str, ext: &str, path: &Path) -> anyhow::Result<()> {
        if std::fs::read(path).is_ok_and(|bytes| digest(&bytes) == digest_wanted) {
            return Ok(());
        }
        let name = object_name(service, digest_wanted, ext);
        let mut object = self.objects.get(&name).await.with_context(|| format!("cannot get {name}"))?;
        let size = object.info.size as u64;
        if size > MAX_OBJECT_BYTES {
            bail!("{name} is {size} bytes, past the {MAX_OBJECT_BYTES} a host takes");
        }
        let mut bytes = Vec::with_capacity(size as usize);
        (&mut object)
            .take(MAX_OBJECT_BYTES + 1)
            .read_to_end(&mut bytes)
            .await
            .with_context(|| format!("cannot read {name}"))?;
        if digest(&bytes) != digest_wanted {
            bail!("{name} does not hash to its digest");
        }
        let temporary = path.with_extension(format!("{ext}.deploying"));
        std::fs::write(&temporary, &bytes).with_context(|| format!("cannot write {}", temporary.display()))?;
        std::fs::rename(&temporary, path).with_context(|| format!("cannot move {} into place", path.display()))?;
        Ok(())
    }
}

/// How long a host waits before it connects to the store again.
const RECONNECT: Duration = Duration::from_secs(5);

/// Follows the store of `settings` into `dir` for as long as the host
/// serves: connecting again, and taking every service's latest version
/// again, whenever the store did not answer or the watch ended.
pub async fn keep_following(settings: DeploySettings, dir: PathBuf) {
    loop {
        match Store::open(&settings).await {
            Ok(store) => store.follow(dir.clone()).await,
            Err(e) => {
                tracing::warn!("the deploy store cannot be followed: {e:#}; trying again in {} s", RECONNECT.as_secs())
            }
        }
        tokio::time::sleep(RECONNECT).await;
    }
}

/// Removes `service`'s files from `dir`.
fn remove(dir: &Path, service: &str) -> anyhow::Result<()> {
    check_name(service)?;
    for ext in ["wasm", "toml"] {
        let path = dir.join(format!("{service}.{ext}"));
        if path.exists() {
            std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(())
}
