//! The per-request context pingora hands to every phase of [`super::proxy`].

use std::time::Instant;

use crate::util::new_id;

/// What the paywall keeps about one request, from `new_ctx` to the answer.
pub(crate) struct Ctx {
    /// `req_…`: sent back in `X-Request-Id`, passed to the upstream, and on every log line,
    /// journal event and stored record of this request.
    pub(crate) request_id: String,
    /// When the request arrived: the paid call's `total` phase and its `ms` log field.
    pub(crate) started: Instant,
    /// The paid answer's `modelCallId`, once it is known: on the request's access-log line.
    pub(crate) model_call_id: std::sync::OnceLock<String>,
    /// The model tier a priced request bought (a route with `pricing.tiers`): passed to the
    /// upstream in `X-Strategy-Tier`.
    pub(crate) tier: std::sync::OnceLock<String>,
}

impl Ctx {
    pub(crate) fn new() -> Self {
        Ctx {
            request_id: new_id("req"),
            started: Instant::now(),
            model_call_id: std::sync::OnceLock::new(),
            tier: std::sync::OnceLock::new(),
        }
    }
}
