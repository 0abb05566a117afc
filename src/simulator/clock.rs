//! The simulator's controllable clock.
//!
//! GitLab decides expiry by the calendar: a token whose `expires_at` is D stops working at
//! 00:00 UTC on D (gitlab-api.md §6). Tests move this clock instead of waiting for days.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use std::time::Instant;

/// Wall time as the simulated GitLab sees it. Runs like a real clock from `base`, unless frozen.
#[derive(Debug, Clone)]
pub struct Clock {
    base: DateTime<Utc>,
    /// When `base` was taken; `None` while the clock is frozen.
    since: Option<Instant>,
}

impl Clock {
    /// A running clock that starts at `base`.
    pub fn running_from(base: DateTime<Utc>) -> Self {
        Clock { base, since: Some(Instant::now()) }
    }

    /// A clock that stays at `at` until it is moved.
    pub fn frozen_at(at: DateTime<Utc>) -> Self {
        Clock { base: at, since: None }
    }

    pub fn now(&self) -> DateTime<Utc> {
        match self.since {
            Some(since) => self.base + Duration::from_std(since.elapsed()).unwrap_or_else(|_| Duration::zero()),
            None => self.base,
        }
    }

    /// Today's date in UTC, the date GitLab compares `expires_at` with.
    pub fn today(&self) -> NaiveDate {
        self.now().date_naive()
    }

    /// Jump to `at`; a running clock keeps running from there.
    pub fn set(&mut self, at: DateTime<Utc>) {
        self.base = at;
        if self.since.is_some() {
            self.since = Some(Instant::now());
        }
    }

    pub fn advance(&mut self, by: Duration) {
        let now = self.now();
        self.set(now + by);
    }

    pub fn freeze(&mut self) {
        self.base = self.now();
        self.since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn frozen_clock_moves_only_when_told() {
        let t = Utc.with_ymd_and_hms(2026, 11, 28, 23, 59, 59).single();
        let Some(t) = t else { panic!("valid date") };
        let mut clock = Clock::frozen_at(t);
        assert_eq!(clock.now(), t);
        clock.advance(Duration::seconds(1));
        assert_eq!(clock.today(), NaiveDate::from_ymd_opt(2026, 11, 29).unwrap_or_default());
    }
}
