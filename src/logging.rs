//! The log: env_logger, configured by RUST_LOG, with a level the info console can change
//! while ctid runs (env_logger fixes its filter when built, so a new one replaces it).

use std::sync::{OnceLock, RwLock};

use log::{LevelFilter, Log, Metadata, Record};

struct Swappable {
    inner: RwLock<env_logger::Logger>,
    default: &'static str,
}

impl Log for Swappable {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.inner.read().is_ok_and(|l| l.enabled(metadata))
    }

    fn log(&self, record: &Record<'_>) {
        if let Ok(l) = self.inner.read() {
            l.log(record);
        }
    }

    fn flush(&self) {
        if let Ok(l) = self.inner.read() {
            l.flush();
        }
    }
}

static LOGGER: OnceLock<Swappable> = OnceLock::new();

fn from_env(default: &str) -> env_logger::Logger {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default)).build()
}

/// Starts logging with RUST_LOG, or `default` when it is not set.
pub fn init(default: &'static str) {
    let logger = LOGGER.get_or_init(|| Swappable {
        inner: RwLock::new(from_env(default)),
        default,
    });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(
            logger
                .inner
                .read()
                .map_or(LevelFilter::Info, |l| l.filter()),
        );
    }
}

/// Sets one level for every module (`error` ... `trace`, `off`), or goes back to RUST_LOG
/// with `default`; answers the filter now in force.
pub fn set_level(level: &str) -> Result<String, String> {
    let logger = LOGGER.get().ok_or("logging is not set up")?;
    let new = if level == "default" {
        from_env(logger.default)
    } else {
        let parsed: LevelFilter = level.parse().map_err(|_| {
            format!("{level:?} is not one of off, error, warn, info, debug, trace, default")
        })?;
        env_logger::Builder::new().filter_level(parsed).build()
    };
    let filter = new.filter();
    *logger.inner.write().map_err(|_| "the logger is broken")? = new;
    log::set_max_level(filter);
    Ok(if level == "default" {
        format!("from RUST_LOG (at most {filter})")
    } else {
        filter.to_string().to_lowercase()
    })
}
