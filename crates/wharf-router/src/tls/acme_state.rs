//! What the ACME manager knows about each name, and when it orders next: pure, with
//! times in Unix milliseconds from the caller's `Clock`, so the backoff is tested
//! without sleeping.
//!
//! A name is due when it has no certificate or its renewal time passed (two thirds into
//! the lifetime), but never before the retry time of its last failure: 10 s after the
//! first, doubling up to 1 h, and at least 1 h after the CA said "rate limited" (Let's
//! Encrypt allows 5 failed validations per name and hour). A certificate resets it.
//!
//! Failures are kept as a sentence for `wharf status`: what failed, the CA's words, and
//! what to check.

use wharf_types::api::AcmeStatus;
use wharf_types::release::UnixMillis;

/// First retry after a failed order; doubles up to [`RETRY_MAX_MS`].
pub(crate) const RETRY_MIN_MS: u64 = 10_000;
pub(crate) const RETRY_MAX_MS: u64 = 3_600_000;

/// When a certificate valid from `not_before` to `not_after` (Unix seconds) is renewed:
/// two thirds into its lifetime.
pub(crate) fn renew_at(not_before: i64, not_after: i64) -> i64 {
    not_before + (not_after - not_before).max(0) * 2 / 3
}

/// Delay before the next order after `failures` failures in a row (at least 1).
pub(crate) fn retry_delay_ms(failures: u32) -> u64 {
    let exp = failures.saturating_sub(1).min(20);
    (RETRY_MIN_MS << exp).min(RETRY_MAX_MS)
}

/// One name's certificate and order history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NameState {
    /// Validity (not_before, not_after; Unix seconds) of the certificate in service.
    pub(crate) issued: Option<(i64, i64)>,
    pub(crate) ordering: bool,
    /// Failed orders since the last certificate.
    pub(crate) failures: u32,
    /// (when, explanation) of the last of them.
    pub(crate) last_error: Option<(UnixMillis, String)>,
    /// No order before this.
    pub(crate) retry_at: Option<UnixMillis>,
}

impl NameState {
    /// When the next order is due: now (0) without a certificate, else its renewal
    /// time; never before the retry time of a failure.
    pub(crate) fn next_at(&self) -> UnixMillis {
        let renew = self.issued.map_or(0, |(from, to)| {
            u64::try_from(renew_at(from, to)).map_or(0, |s| s.saturating_mul(1000))
        });
        renew.max(self.retry_at.unwrap_or(0))
    }

    /// Takes a certificate (issued now or loaded from disk): failures are forgotten.
    pub(crate) fn issued(&mut self, not_before: i64, not_after: i64) {
        *self = NameState {
            issued: Some((not_before, not_after)),
            ..NameState::default()
        };
    }

    /// Records a failed order at `now`; returns when to try again.
    pub(crate) fn failed(&mut self, now: UnixMillis, failure: &Failure, name: &str) -> UnixMillis {
        self.ordering = false;
        self.failures = self.failures.saturating_add(1);
        let mut delay = retry_delay_ms(self.failures);
        if matches!(failure, Failure::RateLimited(_)) {
            delay = delay.max(RETRY_MAX_MS);
        }
        let at = now.saturating_add(delay);
        self.retry_at = Some(at);
        self.last_error = Some((now, failure.explain(name)));
        at
    }

    /// The name is no longer routed: its failures stop counting (the certificate, if
    /// any, stays in service and on disk).
    pub(crate) fn forget_failures(&mut self) {
        self.failures = 0;
        self.last_error = None;
        self.retry_at = None;
        self.ordering = false;
    }

    /// As `wharf status` shows it.
    pub(crate) fn status(&self) -> AcmeStatus {
        AcmeStatus {
            ordering: self.ordering,
            next_attempt_at: (!self.ordering).then(|| self.next_at()),
            failures: self.failures,
            last_error: self.last_error.as_ref().map(|(_, e)| e.clone()),
            last_error_at: self.last_error.as_ref().map(|&(at, _)| at),
        }
    }
}

/// Why an order failed, by what the user has to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The CA could not validate the HTTP-01 challenge (its words).
    Validation(String),
    /// The ACME server could not be reached, or its HTTPS failed.
    Unreachable { directory: String, error: String },
    /// The CA refuses more orders for now.
    RateLimited(String),
    /// The CA refused the order or the account (its words).
    Refused(String),
    /// The CA did not finish validating or issuing in time.
    Timeout,
    /// Anything else (writing the certificate, a malformed answer).
    Other(String),
}

/// The ACME problem type of a rate limit (RFC 8555, section 6.7).
const RATE_LIMITED: &str = "urn:ietf:params:acme:error:rateLimited";
/// Problem types of a failed validation (RFC 8555, section 6.7; `caa` and `dns` are
/// the CA's checks of the name).
const VALIDATION: [&str; 6] = [
    "connection",
    "dns",
    "incorrectResponse",
    "unauthorized",
    "tls",
    "caa",
];

impl Failure {
    /// Sorts an error of waiting for the order to become ready: the CA's words then are
    /// about the validation unless it says "rate limited".
    pub(crate) fn from_validation(error: instant_acme::Error, directory: &str) -> Failure {
        match Failure::from_acme(error, directory) {
            Failure::Refused(detail) => Failure::Validation(detail),
            other => other,
        }
    }

    /// Sorts an error of the ACME protocol client.
    pub(crate) fn from_acme(error: instant_acme::Error, directory: &str) -> Failure {
        match error {
            instant_acme::Error::Api(problem) => {
                let detail = problem_text(&problem);
                let kind = problem.r#type.as_deref().unwrap_or_default();
                let validation = kind
                    .strip_prefix("urn:ietf:params:acme:error:")
                    .is_some_and(|k| VALIDATION.contains(&k));
                if kind == RATE_LIMITED {
                    Failure::RateLimited(detail)
                } else if validation {
                    Failure::Validation(detail)
                } else {
                    Failure::Refused(detail)
                }
            }
            instant_acme::Error::Timeout(_) => Failure::Timeout,
            instant_acme::Error::Other(e) => Failure::Unreachable {
                directory: directory.to_owned(),
                error: e.to_string(),
            },
            instant_acme::Error::Http(e) => Failure::Unreachable {
                directory: directory.to_owned(),
                error: e.to_string(),
            },
            other => Failure::Other(other.to_string()),
        }
    }

    /// One sentence for the user: what failed for `name`, and what to do.
    pub(crate) fn explain(&self, name: &str) -> String {
        match self {
            Failure::Validation(detail) => format!(
                "ACME HTTP-01 validation for {name} failed: {detail}; check that DNS for {name} points to this machine and that port 80 reaches wharf's router (--listen)"
            ),
            Failure::Unreachable { directory, error } => format!(
                "cannot reach the ACME server {directory} for {name}: {error}; check --acme-directory and that this machine can make HTTPS connections to it"
            ),
            Failure::RateLimited(detail) => format!(
                "the ACME server rate-limits certificates for {name}: {detail}; wharf retries in an hour at the earliest"
            ),
            Failure::Refused(detail) => {
                format!("the ACME server refused the order for {name}: {detail}")
            }
            Failure::Timeout => format!(
                "the ACME server did not validate {name} or issue its certificate in time; check that DNS for {name} points to this machine and that port 80 reaches wharf's router (--listen)"
            ),
            Failure::Other(error) => format!("ACME certificate for {name} not issued: {error}"),
        }
    }
}

/// A problem document as one line: its detail (else its type), then its subproblems'.
pub(crate) fn problem_text(problem: &instant_acme::Problem) -> String {
    let mut text = problem
        .detail
        .clone()
        .or_else(|| problem.r#type.clone())
        .unwrap_or_else(|| "no detail given".to_owned());
    for sub in &problem.subproblems {
        if let Some(detail) = &sub.detail {
            text.push_str("; ");
            text.push_str(detail);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_two_thirds_into_the_lifetime() {
        // 90 days from t=0: renewed at day 60.
        assert_eq!(renew_at(0, 90 * 86_400), 60 * 86_400);
        assert_eq!(renew_at(1_000, 1_300), 1_200);
        // A certificate already past its end (or inverted) is due at its start.
        assert_eq!(renew_at(500, 400), 500);
    }

    #[test]
    fn a_name_without_certificate_is_due_at_once() {
        assert_eq!(NameState::default().next_at(), 0);
        let mut state = NameState::default();
        state.issued(1_000, 1_300);
        assert_eq!(state.next_at(), 1_200_000);
    }

    #[test]
    fn failures_back_off_from_ten_seconds_doubling_to_an_hour() {
        let mut state = NameState::default();
        let failure = Failure::Validation("connection refused".into());
        let mut now = 5_000_000;
        let mut delays = Vec::new();
        for _ in 0..12 {
            // Not due before the retry time: no hot loop.
            let at = state.failed(now, &failure, "shop.example.com");
            assert_eq!(state.next_at(), at);
            delays.push(at - now);
            now = at;
        }
        assert_eq!(&delays[..4], &[10_000, 20_000, 40_000, 80_000]);
        assert_eq!(delays[8], 2_560_000);
        assert!(delays[9..].iter().all(|d| *d == RETRY_MAX_MS));
        assert_eq!(state.failures, 12);
        let status = state.status();
        assert_eq!(status.failures, 12);
        assert_eq!(status.next_attempt_at, Some(now));
        assert_eq!(status.last_error_at, Some(now - RETRY_MAX_MS));
        assert!(status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("HTTP-01 validation for shop.example.com failed")));
    }

    #[test]
    fn a_rate_limit_waits_an_hour_at_least() {
        let mut state = NameState::default();
        let at = state.failed(0, &Failure::RateLimited("too many".into()), "a.example");
        assert_eq!(at, RETRY_MAX_MS);
        assert!(state
            .status()
            .last_error
            .unwrap_or_default()
            .contains("rate-limits"));
    }

    #[test]
    fn a_failed_renewal_keeps_the_certificate_and_retries_after_the_renewal_time() {
        let mut state = NameState::default();
        state.issued(0, 3_000);
        // Renewal due at 2_000 s; the order fails at 2_001 s.
        let at = state.failed(2_001_000, &Failure::Timeout, "a.example");
        assert_eq!(at, 2_011_000);
        assert_eq!(state.next_at(), 2_011_000);
        assert_eq!(state.issued, Some((0, 3_000)));
        // The next certificate forgets the failures.
        state.issued(2_020, 5_020);
        assert_eq!(state.failures, 0);
        assert_eq!(state.status().last_error, None);
        assert_eq!(state.next_at(), 4_020_000);
    }

    #[test]
    fn an_unrouted_name_forgets_its_failures() {
        let mut state = NameState::default();
        state.failed(0, &Failure::Timeout, "a.example");
        state.forget_failures();
        assert_eq!(state, NameState::default());
    }

    #[test]
    fn ordering_has_no_next_attempt() {
        let state = NameState {
            ordering: true,
            ..NameState::default()
        };
        assert_eq!(state.status().next_attempt_at, None);
        assert!(state.status().ordering);
    }

    #[test]
    fn errors_are_sorted_by_what_to_check() {
        let problem = |kind: &str, detail: &str| {
            instant_acme::Error::Api(
                serde_json::from_value(serde_json::json!({"type": kind, "detail": detail}))
                    .expect("problem"),
            )
        };
        let dir = "https://acme.example/dir";
        assert_eq!(
            Failure::from_acme(problem(RATE_LIMITED, "too many certificates"), dir),
            Failure::RateLimited("too many certificates".into())
        );
        assert_eq!(
            Failure::from_acme(
                problem("urn:ietf:params:acme:error:rejectedIdentifier", "no"),
                dir
            ),
            Failure::Refused("no".into())
        );
        assert_eq!(
            Failure::from_acme(
                problem("urn:ietf:params:acme:error:connection", "refused"),
                dir
            ),
            Failure::Validation("refused".into())
        );
        let unreachable = Failure::from_acme(
            instant_acme::Error::Other("cannot connect to acme.example: refused".into()),
            dir,
        );
        let text = unreachable.explain("a.example");
        assert!(
            text.starts_with("cannot reach the ACME server https://acme.example/dir for a.example: cannot connect"),
            "{text}"
        );
        assert!(text.contains("check --acme-directory"), "{text}");
        let text =
            Failure::Validation("127.0.0.1: Connection refused".into()).explain("shop.example.com");
        assert_eq!(
            text,
            "ACME HTTP-01 validation for shop.example.com failed: 127.0.0.1: Connection refused; check that DNS for shop.example.com points to this machine and that port 80 reaches wharf's router (--listen)"
        );
    }
}
