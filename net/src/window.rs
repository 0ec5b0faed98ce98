//! The node's maintenance windows as the fetch loop and activation ask them: may this
//! release download now, may it be installed now, and when does that change. The node's
//! `[windows]` and a release's own windows must all be open; each release keeps the state of
//! its sets until their next edge ([`scheduler::window::WindowCache`] through [`WindowGate`]).
//! An emergency under the node's policy skips the download windows.

use crate::registry::{Release, ReleaseWindows};
use scheduler::window::{Window, WindowState};
use std::sync::Mutex;

/// The state of a set of windows that must all be open, kept until it can change
/// ([`scheduler::window::WindowCache`]).
#[derive(Debug, Default)]
pub(crate) struct WindowGate(Mutex<scheduler::window::WindowCache>);

impl WindowGate {
    /// The state at `now` of `sets`, which must all be open; the sets must be the same on
    /// every call.
    pub(crate) fn state(&self, sets: &[&[Window]], now: jiff::Timestamp) -> WindowState {
        crate::lock(&self.0).state(sets, now)
    }
}

/// The node's windows and emergency policy; see the module docs.
#[derive(Debug)]
pub struct Gates {
    windows: scheduler::policy::Windows,
}

impl Gates {
    /// Gates over the node's `[windows]`.
    pub fn new(windows: scheduler::policy::Windows) -> Self {
        Self { windows }
    }

    /// The node's windows, zone and emergency policy.
    pub fn windows(&self) -> &scheduler::policy::Windows {
        &self.windows
    }

    /// The node's time zone (windows that name none are read in it).
    pub fn zone(&self) -> &jiff::tz::TimeZone {
        &self.windows.zone
    }

    /// Whether `release` is an emergency under the node's policy (it skips the download
    /// windows).
    pub fn is_emergency(&self, release: &Release) -> bool {
        self.windows.policy.is_emergency(&release.urgency)
    }

    /// Whether `release` may download now: an emergency under the node's policy, or inside
    /// both the node's download windows and the release's own.
    pub fn download_allowed(&self, release: &Release) -> bool {
        self.may_download(&release.urgency, &release.windows, &release.download_gate)
    }

    /// [`Gates::download_allowed`] for a release not registered yet (it has no window cache
    /// of its own): its urgency and its own windows.
    pub(crate) fn may_download_new(
        &self,
        urgency: &scheduler::priority::Urgency,
        own: &Result<ReleaseWindows, String>,
    ) -> bool {
        self.may_download(urgency, own, &WindowGate::default())
    }

    fn may_download(
        &self,
        urgency: &scheduler::priority::Urgency,
        own: &Result<ReleaseWindows, String>,
        gate: &WindowGate,
    ) -> bool {
        self.windows.policy.is_emergency(urgency)
            || matches!(
                self.download_state_of(own, gate, jiff::Timestamp::now()),
                WindowState::Open { .. }
            )
    }

    /// The node's download windows and `release`'s own, together, at `now` (emergencies
    /// aside). A release whose windows could not be read never downloads outside one.
    pub fn download_state(&self, release: &Release, now: jiff::Timestamp) -> WindowState {
        self.download_state_of(&release.windows, &release.download_gate, now)
    }

    fn download_state_of(
        &self,
        own: &Result<ReleaseWindows, String>,
        gate: &WindowGate,
        now: jiff::Timestamp,
    ) -> WindowState {
        match own {
            Ok(own) => gate.state(&[&self.windows.download, &own.download], now),
            Err(_) => WindowState::Closed { opens: None },
        }
    }

    /// The node's install windows and `release`'s own, together, at `now`. A release whose
    /// windows could not be read is never installed.
    pub fn install_state(&self, release: &Release, now: jiff::Timestamp) -> WindowState {
        match &release.windows {
            Ok(own) => release
                .install_gate
                .state(&[&self.windows.install, &own.install], now),
            Err(_) => WindowState::Closed { opens: None },
        }
    }

    /// When `release` may next download, if it may not now (`None`: now, or never found).
    pub fn download_opens(&self, release: &Release) -> Option<jiff::Timestamp> {
        match self.download_state(release, jiff::Timestamp::now()) {
            WindowState::Closed { opens } => opens,
            WindowState::Open { .. } => None,
        }
    }
}
