//! A running capture: the tracer plus the policy of what to hook (default libssl, `--ssl-lib`
//! targets, libssl copies mapped by running processes) and periodic rescans.

use crate::cli::CaptureArgs;

use super::targets;
use super::tracer::{AttachOutcome, Tracer, TracerError};

pub struct CaptureSession {
    pub tracer: Tracer,
    pids: Vec<u32>,
}

impl CaptureSession {
    /// Loads the tracer and hooks every target reachable now. Explicit `--ssl-lib` targets
    /// must attach; discovered ones are best effort (logged).
    pub fn start(args: &CaptureArgs) -> Result<Self, TracerError> {
        let mut tracer = Tracer::load(&args.tracer_config())?;
        for path in &args.ssl_libs {
            tracer.attach_openssl(path)?;
        }
        match targets::default_libssl() {
            Some(path) => {
                if let Err(err) = tracer.attach_openssl(&path) {
                    log::warn!("default libssl {}: {err}", path.display());
                }
            }
            None => log::info!("no system libssl found; relying on running processes' maps"),
        }
        let mut session = Self {
            tracer,
            pids: args.pids.clone(),
        };
        session.rescan();
        Ok(session)
    }

    /// Hooks libssl copies mapped by running processes that are not hooked yet.
    pub fn rescan(&mut self) -> usize {
        let mut new = 0;
        for target in targets::scan_processes(&self.pids) {
            match self.tracer.attach_openssl(&target.path) {
                Ok(AttachOutcome::Attached(_)) => {
                    new += 1;
                    log::info!("hooked {} ({})", target.path.display(), target.origin);
                }
                Ok(AttachOutcome::AlreadyAttached) => {}
                // The process may have exited between the scan and the attach.
                Err(err) => log::debug!("{} ({}): {err}", target.path.display(), target.origin),
            }
        }
        new
    }
}
