//! Logging switch: `WGTRAIN_LOG=debug` prints every dispatch as it is built;
//! `WGTRAIN_LOG=trace` also prints each shader's specialisation constants and source name.

use std::sync::OnceLock;

/// How much the runtime prints to stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Off,
    Info,
    Debug,
    Trace,
}

/// The level set by `WGTRAIN_LOG` (read once).
pub fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| match std::env::var("WGTRAIN_LOG").as_deref() {
        Ok("info") | Ok("1") => Level::Info,
        Ok("debug") | Ok("2") => Level::Debug,
        Ok("trace") | Ok("3") => Level::Trace,
        _ => Level::Off,
    })
}

/// Whether messages at `at` are printed.
pub fn enabled(at: Level) -> bool {
    level() >= at
}
