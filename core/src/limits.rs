//! Resource limits: what one service may use in one scope. The host has
//! defaults and caps; a service's manifest may set its own, up to the caps.
//! A breach fails the scope with a [`Breach`] naming the service and limit.

use std::time::Duration;

use serde::Deserialize;

/// The limits one service runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long one call into the service may run, wall clock, including the
    /// services it calls (`deadline-ms`).
    pub deadline: Duration,
    /// Instructions (wasmtime fuel) one call into the service may use
    /// (`fuel`); `None` when the host does not meter fuel.
    pub fuel: Option<u64>,
    /// The most linear memory one instance may have (`memory-mb`).
    pub memory_bytes: usize,
    /// How many commands the service may queue in one scope (`commands`).
    pub commands: usize,
    /// The largest one command may be: SQL, names and values (`command-bytes`).
    pub command_bytes: usize,
    /// The largest a function's result, or a read's rows, may be (`result-bytes`).
    pub result_bytes: usize,
    /// The last save round in which the service may still queue commands
    /// (`save-rounds`); round 1 applies what the calls queued.
    pub save_rounds: usize,
}

impl Limits {
    /// The host's defaults, used for a service whose manifest sets nothing.
    pub const DEFAULTS: Limits = Limits {
        deadline: Duration::from_secs(10),
        fuel: None,
        memory_bytes: 64 << 20,
        commands: 10_000,
        command_bytes: 1 << 20,
        result_bytes: 4 << 20,
        save_rounds: 8,
    };

    /// The most a manifest may ask for.
    pub const CAPS: Limits = Limits {
        deadline: Duration::from_secs(60),
        fuel: Some(u64::MAX / 4),
        memory_bytes: 256 << 20,
        commands: 100_000,
        command_bytes: 16 << 20,
        result_bytes: 64 << 20,
        save_rounds: 32,
    };
}

impl Limits {
    /// No limit at all: what the host's own caps are checked against.
    pub const UNBOUNDED: Limits = Limits {
        deadline: Duration::from_secs(u32::MAX as u64),
        fuel: Some(u64::MAX),
        memory_bytes: 4 << 30,
        commands: usize::MAX,
        command_bytes: usize::MAX,
        result_bytes: usize::MAX,
        save_rounds: usize::MAX,
    };
}

/// Limits as written in a manifest's or `sluice.toml`'s `[limits]`: each
/// one optional.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LimitSettings {
    /// See [`Limits::deadline`], in milliseconds.
    pub deadline_ms: Option<u64>,
    /// See [`Limits::fuel`].
    pub fuel: Option<u64>,
    /// See [`Limits::memory_bytes`], in MiB.
    pub memory_mb: Option<u64>,
    /// See [`Limits::commands`].
    pub commands: Option<u64>,
    /// See [`Limits::command_bytes`].
    pub command_bytes: Option<u64>,
    /// See [`Limits::result_bytes`].
    pub result_bytes: Option<u64>,
    /// See [`Limits::save_rounds`].
    pub save_rounds: Option<u64>,
}

impl LimitSettings {
    /// `base` with every limit these settings name replaced. Each must be at
    /// least 1 and at most the one in `caps`; the error names the setting.
    pub fn apply(&self, base: Limits, caps: &Limits) -> Result<Limits, String> {
        let mut out = base;
        let within = |name: &str, value: u64, cap: u64, unit: &str| -> Result<u64, String> {
            if value == 0 {
                return Err(format!("limits.{name} must be at least 1"));
            }
            if value > cap {
                return Err(format!("limits.{name} = {value} is above the host cap of {cap}{unit}"));
            }
            Ok(value)
        };
        if let Some(ms) = self.deadline_ms {
            out.deadline = Duration::from_millis(within("deadline-ms", ms, millis(caps.deadline), "")?);
        }
        if let Some(fuel) = self.fuel {
            let Some(cap) = caps.fuel else {
                return Err("limits.fuel is set, but this host does not meter fuel (start it with --fuel)".into());
            };
            out.fuel = Some(within("fuel", fuel, cap, "")?);
        }
        if let Some(mb) = self.memory_mb {
            out.memory_bytes = to_usize(within("memory-mb", mb, (caps.memory_bytes >> 20) as u64, " MiB")?) << 20;
        }
        if let Some(n) = self.commands {
            out.commands = to_usize(within("commands", n, caps.commands as u64, "")?);
        }
        if let Some(n) = self.command_bytes {
            out.command_bytes = to_usize(within("command-bytes", n, caps.command_bytes as u64, "")?);
        }
        if let Some(n) = self.result_bytes {
            out.result_bytes = to_usize(within("result-bytes", n, caps.result_bytes as u64, "")?);
        }
        if let Some(n) = self.save_rounds {
            out.save_rounds = to_usize(within("save-rounds", n, caps.save_rounds as u64, "")?);
        }
        Ok(out)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// A service went past one of its limits. The scope fails with this as the
/// cause; nothing it queued is applied.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{service} broke its limit {limit}: {detail}")]
pub struct Breach {
    /// The service that went past the limit.
    pub service: String,
    /// The limit, as the manifest spells it (`deadline-ms`, `memory-mb`, …).
    pub limit: &'static str,
    /// What happened, with the numbers.
    pub detail: String,
}

impl Breach {
    /// A breach of `limit` by `service`.
    pub fn new(service: &str, limit: &'static str, detail: String) -> Breach {
        Breach { service: service.to_string(), limit, detail }
    }
}

/// `1.5 MiB`, `512 KiB`, `40 B`: a size for people.
pub fn size(bytes: usize) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if b >= KIB * KIB {
        format!("{:.1} MiB", b / (KIB * KIB))
    } else if b >= KIB {
        format!("{:.1} KiB", b / KIB)
    } else {
        format!("{bytes} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_replace_defaults_within_the_caps() {
        let settings = LimitSettings { deadline_ms: Some(250), memory_mb: Some(128), ..LimitSettings::default() };
        let limits = settings.apply(Limits::DEFAULTS, &Limits::CAPS);
        assert_eq!(
            limits,
            Ok(Limits { deadline: Duration::from_millis(250), memory_bytes: 128 << 20, ..Limits::DEFAULTS })
        );
        let too_much = LimitSettings { memory_mb: Some(1024), ..LimitSettings::default() };
        assert_eq!(
            too_much.apply(Limits::DEFAULTS, &Limits::CAPS),
            Err("limits.memory-mb = 1024 is above the host cap of 256 MiB".into())
        );
        let zero = LimitSettings { commands: Some(0), ..LimitSettings::default() };
        assert_eq!(zero.apply(Limits::DEFAULTS, &Limits::CAPS), Err("limits.commands must be at least 1".into()));
    }

    #[test]
    fn fuel_needs_a_host_that_meters_it() {
        let settings = LimitSettings { fuel: Some(1000), ..LimitSettings::default() };
        let unmetered = Limits { fuel: None, ..Limits::CAPS };
        assert!(settings.apply(Limits::DEFAULTS, &unmetered).is_err_and(|e| e.contains("--fuel")));
        assert_eq!(settings.apply(Limits::DEFAULTS, &Limits::CAPS).map(|l| l.fuel), Ok(Some(1000)));
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(size(40), "40 B");
        assert_eq!(size(2048), "2.0 KiB");
        assert_eq!(size(100 << 20), "100.0 MiB");
    }
}
